//! `job_view`, `job_counts` and `job_failures_by_hour`: every field of each job plus
//! `duration_seconds`, `is_terminal` and the cursor key `created_position`; per
//! (project, type, status) the number of jobs with the sum and count of their
//! durations; and failed jobs per project and hour of failure.
//!
//! Applied like `technology_view`: load the touched rows, fold the events with the
//! domain's `Job::apply`, write rows, deletions and count deltas.

use std::collections::BTreeMap;

use commandcenter_domain::job::{Job, JobRecord};
use commandcenter_event_store::Position;
use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::documents::Served;
use crate::read_model::{fold, write_rows, FoldEvent, Folded, Upserts};
use crate::{Change, ProjectionError, ReadModel};

/// The job read model.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobView;

impl JobView {
    /// Its name.
    pub const NAME: &'static str = "job_view";
}

const UPSERT: &str = "\
INSERT INTO job_view (id, project_id, job_type, status, progress, current_step, parameters, \
    result, error, traceback, tags, created_by, attempts, max_attempts, scheduled_for, \
    dispatched_at, worker_id, lease_until, cancel_requested, created_at, started_at, \
    completed_at, updated_at, duration_seconds, is_terminal, version, position, created_position, \
    doc) \
SELECT id, project_id, job_type, status, progress, current_step, parameters, \
    result, error, traceback, tags, created_by, attempts, max_attempts, scheduled_for, \
    dispatched_at, worker_id, lease_until, cancel_requested, created_at, started_at, \
    completed_at, updated_at, duration_seconds, is_terminal, version, position, created_position, \
    unnest \
  FROM ROWS FROM (jsonb_populate_recordset(NULL::job_view, $1::jsonb), unnest($2::text[])) AS r \
ON CONFLICT (id) DO UPDATE SET project_id = EXCLUDED.project_id, job_type = EXCLUDED.job_type, \
    status = EXCLUDED.status, progress = EXCLUDED.progress, current_step = EXCLUDED.current_step, \
    parameters = EXCLUDED.parameters, result = EXCLUDED.result, error = EXCLUDED.error, \
    traceback = EXCLUDED.traceback, tags = EXCLUDED.tags, created_by = EXCLUDED.created_by, \
    attempts = EXCLUDED.attempts, max_attempts = EXCLUDED.max_attempts, \
    scheduled_for = EXCLUDED.scheduled_for, dispatched_at = EXCLUDED.dispatched_at, \
    worker_id = EXCLUDED.worker_id, lease_until = EXCLUDED.lease_until, \
    cancel_requested = EXCLUDED.cancel_requested, created_at = EXCLUDED.created_at, \
    started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, \
    updated_at = EXCLUDED.updated_at, duration_seconds = EXCLUDED.duration_seconds, \
    is_terminal = EXCLUDED.is_terminal, version = EXCLUDED.version, \
    position = EXCLUDED.position, created_position = EXCLUDED.created_position, \
    doc = EXCLUDED.doc";

/// The served columns that are `double precision`.
const FLOATS: &[&str] = &["duration_seconds"];

/// The columns a job's document serves: every column but `doc`.
const SERVED: &[&str] = &[
    "id",
    "project_id",
    "job_type",
    "status",
    "progress",
    "current_step",
    "parameters",
    "result",
    "error",
    "traceback",
    "tags",
    "created_by",
    "attempts",
    "max_attempts",
    "scheduled_for",
    "dispatched_at",
    "worker_id",
    "lease_until",
    "cancel_requested",
    "created_at",
    "started_at",
    "completed_at",
    "updated_at",
    "duration_seconds",
    "is_terminal",
    "version",
    "position",
    "created_position",
];

const FAILURES: &str = "\
INSERT INTO job_failures_by_hour AS f (project_id, hour, n) \
SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[]) \
ON CONFLICT (project_id, hour) DO UPDATE SET n = f.n + EXCLUDED.n";

const COUNTS: &str = "\
INSERT INTO job_counts AS c (project_id, job_type, status, n, duration_sum_us, duration_n) \
SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[]) \
ON CONFLICT (project_id, job_type, status) DO UPDATE \
   SET n = c.n + EXCLUDED.n, duration_sum_us = c.duration_sum_us + EXCLUDED.duration_sum_us, \
       duration_n = c.duration_n + EXCLUDED.duration_n";

/// A job's group in `job_counts`.
type CountKey = (i64, String, String);

/// How one job adds to `job_counts`: its group, and its duration if it has one.
fn contribution(record: &JobRecord) -> (CountKey, Option<i64>) {
    let key = (
        record.project_id.get(),
        record.job_type.as_str().to_string(),
        record.status.as_str().to_string(),
    );
    (key, record.duration_us())
}

/// The hour a failed job failed in, for `job_failures_by_hour`.
fn failure_hour(record: &JobRecord) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::DurationRound;
    if record.status != commandcenter_domain::job::JobStatus::Failed {
        return None;
    }
    record
        .completed_at
        .and_then(|at| at.duration_trunc(chrono::Duration::hours(1)).ok())
}

#[derive(Default)]
struct Delta {
    n: i64,
    duration_sum_us: i64,
    duration_n: i64,
}

impl Delta {
    fn add(&mut self, sign: i64, duration_us: Option<i64>) {
        self.n += sign;
        if let Some(us) = duration_us {
            self.duration_sum_us += sign * us;
            self.duration_n += sign;
        }
    }
}

/// The row JSON of a job: the record's fields plus the derived and positional columns.
fn row(record: &JobRecord, entry: &Folded<Job, Position>) -> Result<Value, ProjectionError> {
    let mut row = serde_json::to_value(record).map_err(|source| ProjectionError::Decode {
        what: format!("job {}", record.id),
        source,
    })?;
    row["duration_seconds"] = json!(record.duration_seconds());
    row["is_terminal"] = json!(record.status.is_terminal());
    row["version"] = json!(entry.version);
    row["position"] = json!(entry.position);
    row["created_position"] = json!(entry.extra);
    Ok(row)
}

fn position_field(value: &Value, field: &str) -> Position {
    value[field]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or(Position::ZERO)
}

impl ReadModel for JobView {
    const NAME: &'static str = JobView::NAME;
    const AGGREGATE_TYPE: &'static str = "job";
    const TABLES: &'static [&'static str] = &["job_view", "job_counts", "job_failures_by_hour"];

    async fn apply<E: FoldEvent>(
        &self,
        conn: &mut PgConnection,
        events: &[E],
    ) -> Result<Vec<Change>, ProjectionError> {
        // The extra column kept per row: `created_position`, the position of the job's
        // first event.
        let entries = fold(
            conn,
            Self::NAME,
            "SELECT id, to_jsonb(j) - 'doc' FROM job_view j WHERE id = ANY($1)",
            events,
            |id, row| {
                let created_position = position_field(&row, "created_position");
                let record: JobRecord =
                    serde_json::from_value(row).map_err(|source| ProjectionError::Decode {
                        what: format!("job_view row {id}"),
                        source,
                    })?;
                Ok((Job::Live(Box::new(record)), created_position))
            },
            |first| first,
        )
        .await?;

        let mut upserts = Upserts::default();
        let served = Served::new(SERVED, FLOATS);
        let mut deletes = Vec::new();
        // In key order, so that concurrent transactions (a rebuild applies a batch in parts)
        // take the shared count rows in the same order and cannot deadlock.
        let mut deltas: BTreeMap<CountKey, Delta> = BTreeMap::new();
        let mut failures: BTreeMap<(i64, chrono::DateTime<chrono::Utc>), i64> = BTreeMap::new();
        let mut changes = Vec::with_capacity(entries.len());
        for (id, entry) in &entries {
            if entry.version == 0 {
                continue;
            }
            if let Job::Live(before) = &entry.before {
                let (key, duration) = contribution(before);
                deltas.entry(key).or_default().add(-1, duration);
                if let Some(hour) = failure_hour(before) {
                    *failures.entry((before.project_id.get(), hour)).or_default() -= 1;
                }
            }
            let project_id = entry.state.record().map_or(0, |r| r.project_id.get());
            let change_row = match &entry.state {
                Job::Live(record) => {
                    let (key, duration) = contribution(record);
                    deltas.entry(key).or_default().add(1, duration);
                    if let Some(hour) = failure_hour(record) {
                        *failures.entry((record.project_id.get(), hour)).or_default() += 1;
                    }
                    let value = row(record, entry)?;
                    // Stored with the document it serves; announced without it.
                    upserts.push(&value, &served)?;
                    Some(value)
                }
                Job::Deleted(_) | Job::NotCreated => {
                    deletes.push(id.clone());
                    None
                }
            };
            changes.push(Change {
                view: Self::NAME,
                project_id,
                id: id.clone(),
                position: entry.position,
                correlation_id: entry.correlation_id.clone(),
                deleted: change_row.is_none(),
                row: change_row,
            });
        }
        write_rows(
            conn,
            UPSERT,
            "DELETE FROM job_view WHERE id = ANY($1)",
            upserts,
            &deletes,
        )
        .await?;
        deltas.retain(|_, d| d.n != 0 || d.duration_n != 0 || d.duration_sum_us != 0);
        if !deltas.is_empty() {
            let mut columns = (vec![], vec![], vec![], vec![], vec![], vec![]);
            for ((project, job_type, status), d) in deltas {
                columns.0.push(project);
                columns.1.push(job_type);
                columns.2.push(status);
                columns.3.push(d.n);
                columns.4.push(d.duration_sum_us);
                columns.5.push(d.duration_n);
            }
            sqlx::query(COUNTS)
                .bind(&columns.0)
                .bind(&columns.1)
                .bind(&columns.2)
                .bind(&columns.3)
                .bind(&columns.4)
                .bind(&columns.5)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM job_counts WHERE n = 0")
                .execute(&mut *conn)
                .await?;
        }
        failures.retain(|_, n| *n != 0);
        if !failures.is_empty() {
            let (mut projects, mut hours, mut ns) = (vec![], vec![], vec![]);
            for ((project, hour), n) in failures {
                projects.push(project);
                hours.push(hour);
                ns.push(n);
            }
            sqlx::query(FAILURES)
                .bind(&projects)
                .bind(&hours)
                .bind(&ns)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM job_failures_by_hour WHERE n = 0")
                .execute(&mut *conn)
                .await?;
        }
        changes.sort_by_key(|c| c.position);
        Ok(changes)
    }
}
