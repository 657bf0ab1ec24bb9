//! `job_view`, `job_counts` and `job_failures_by_hour`: every field of each job plus
//! `duration_seconds`, `is_terminal` and the cursor key `created_position`; per
//! (project, type, status) the number of jobs with the sum and count of their
//! durations; and failed jobs per project and hour of failure.
//!
//! Applied like `technology_view`: load the touched rows, fold the events with the
//! domain's `Job::apply`, write rows, deletions and count deltas.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use commandcenter_domain::job::{Job, JobRecord};
use commandcenter_domain::values::Tags;
use commandcenter_event_store::Position;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::documents::Served;
use crate::read_model::{delete_rows, fold, FoldEvent, Folded};
use crate::{Change, ProjectionError, ReadModel};

/// The job read model.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobView;

impl JobView {
    /// Its name.
    pub const NAME: &'static str = "job_view";
}

/// The upsert of a batch's rows, one typed array per column (`JobRows`): PostgreSQL
/// receives them in binary, where a JSON array of rows (`jsonb_populate_recordset`, still
/// `technology_view`'s) had it parse and sort every row's keys and convert every field
/// from text: 16.6 % of all the CPU of a `job_view` rebuild. Only `parameters`, `result`
/// and `tags` travel as `jsonb`; `tags` becomes the column's `text[]` here, as the
/// recordset made it of the row's JSON list (in its order: the function scan returns the
/// elements in array order, and `ARRAY(…)` keeps the order of its subquery's rows).
/// Integers that are `integer` columns travel as `bigint`, so that one out of range fails
/// as it did, in the cast.
const UPSERT: &str = "\
INSERT INTO job_view (id, project_id, job_type, status, progress, current_step, parameters, \
    result, error, traceback, tags, created_by, attempts, max_attempts, scheduled_for, \
    dispatched_at, worker_id, lease_until, cancel_requested, created_at, started_at, \
    completed_at, updated_at, duration_seconds, is_terminal, version, position, created_position, \
    doc) \
SELECT r.id, r.project_id, r.job_type, r.status, r.progress, r.current_step, r.parameters, \
    r.result, r.error, r.traceback, ARRAY(SELECT jsonb_array_elements_text(r.tags)), \
    r.created_by, r.attempts::integer, r.max_attempts::integer, r.scheduled_for, \
    r.dispatched_at, r.worker_id, r.lease_until, r.cancel_requested, r.created_at, r.started_at, \
    r.completed_at, r.updated_at, r.duration_seconds, r.is_terminal, r.version, r.position, \
    r.created_position, r.doc \
  FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::smallint[], $6::text[], \
       $7::jsonb[], $8::jsonb[], $9::text[], $10::text[], $11::jsonb[], $12::text[], \
       $13::bigint[], $14::bigint[], $15::timestamptz[], $16::timestamptz[], $17::text[], \
       $18::timestamptz[], $19::boolean[], $20::timestamptz[], $21::timestamptz[], \
       $22::timestamptz[], $23::timestamptz[], $24::float8[], $25::boolean[], $26::bigint[], \
       $27::text[], $28::text[], $29::text[]) \
    AS r(id, project_id, job_type, status, progress, current_step, parameters, result, error, \
         traceback, tags, created_by, attempts, max_attempts, scheduled_for, dispatched_at, \
         worker_id, lease_until, cancel_requested, created_at, started_at, completed_at, \
         updated_at, duration_seconds, is_terminal, version, position, created_position, doc) \
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

/// A batch's new rows as `UPSERT` binds them: one array per column, in its order, each
/// value borrowed from the folded record where it can be.
#[derive(Default)]
struct JobRows<'a> {
    id: Vec<&'a str>,
    project_id: Vec<i64>,
    job_type: Vec<&'static str>,
    status: Vec<&'static str>,
    progress: Vec<i16>,
    current_step: Vec<Option<&'a str>>,
    parameters: Vec<Json<&'a Map<String, Value>>>,
    result: Vec<Option<Json<&'a Value>>>,
    error: Vec<Option<&'a str>>,
    traceback: Vec<Option<&'a str>>,
    tags: Vec<Json<&'a Tags>>,
    created_by: Vec<Option<&'a str>>,
    attempts: Vec<i64>,
    max_attempts: Vec<i64>,
    scheduled_for: Vec<Option<DateTime<Utc>>>,
    dispatched_at: Vec<Option<DateTime<Utc>>>,
    worker_id: Vec<Option<&'a str>>,
    lease_until: Vec<Option<DateTime<Utc>>>,
    cancel_requested: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    updated_at: Vec<DateTime<Utc>>,
    duration_seconds: Vec<Option<f64>>,
    is_terminal: Vec<bool>,
    version: Vec<i64>,
    position: Vec<String>,
    created_position: Vec<String>,
    doc: Vec<String>,
}

impl<'a> JobRows<'a> {
    /// Adds the row of `record` (folded into `entry`) and the document it serves. Each
    /// column holds what `jsonb_populate_recordset` made of the row's JSON when rows went
    /// that way: a JSON `null` result is SQL `NULL`, as a missing one.
    fn push(&mut self, record: &'a JobRecord, entry: &Folded<Job, Position>, doc: String) {
        self.id.push(&record.id);
        self.project_id.push(record.project_id.get());
        self.job_type.push(record.job_type.as_str());
        self.status.push(record.status.as_str());
        self.progress.push(i16::from(record.progress.get()));
        self.current_step.push(record.current_step.as_deref());
        self.parameters.push(Json(&record.parameters));
        self.result
            .push(record.result.as_ref().filter(|r| !r.is_null()).map(Json));
        self.error.push(record.error.as_deref());
        self.traceback.push(record.traceback.as_deref());
        self.tags.push(Json(&record.tags));
        self.created_by.push(record.created_by.as_deref());
        self.attempts.push(i64::from(record.attempts));
        self.max_attempts.push(i64::from(record.max_attempts));
        self.scheduled_for.push(record.scheduled_for);
        self.dispatched_at.push(record.dispatched_at);
        self.worker_id.push(record.worker_id.as_deref());
        self.lease_until.push(record.lease_until);
        self.cancel_requested.push(record.cancel_requested);
        self.created_at.push(record.created_at);
        self.started_at.push(record.started_at);
        self.completed_at.push(record.completed_at);
        self.updated_at.push(record.updated_at);
        self.duration_seconds.push(record.duration_seconds());
        self.is_terminal.push(record.status.is_terminal());
        self.version.push(entry.version);
        self.position.push(entry.position.to_string());
        self.created_position.push(entry.extra.to_string());
        self.doc.push(doc);
    }

    /// Writes the rows, if any, with one `UPSERT`.
    async fn write(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.id.is_empty() {
            return Ok(());
        }
        sqlx::query(UPSERT)
            .bind(self.id)
            .bind(self.project_id)
            .bind(self.job_type)
            .bind(self.status)
            .bind(self.progress)
            .bind(self.current_step)
            .bind(self.parameters)
            .bind(self.result)
            .bind(self.error)
            .bind(self.traceback)
            .bind(self.tags)
            .bind(self.created_by)
            .bind(self.attempts)
            .bind(self.max_attempts)
            .bind(self.scheduled_for)
            .bind(self.dispatched_at)
            .bind(self.worker_id)
            .bind(self.lease_until)
            .bind(self.cancel_requested)
            .bind(self.created_at)
            .bind(self.started_at)
            .bind(self.completed_at)
            .bind(self.updated_at)
            .bind(self.duration_seconds)
            .bind(self.is_terminal)
            .bind(self.version)
            .bind(self.position)
            .bind(self.created_position)
            .bind(self.doc)
            .execute(conn)
            .await?;
        Ok(())
    }
}

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
fn failure_hour(record: &JobRecord) -> Option<DateTime<Utc>> {
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

/// The document of a job's row: the record's fields plus the derived and positional
/// columns.
fn document(
    served: &Served,
    record: &JobRecord,
    entry: &Folded<Job, Position>,
) -> Result<String, ProjectionError> {
    let render = || {
        let mut document = served.document();
        document.fields(record)?;
        document.set("duration_seconds", &record.duration_seconds())?;
        document.set("is_terminal", &record.status.is_terminal())?;
        document.set("version", &entry.version)?;
        document.set("position", &entry.position)?;
        document.set("created_position", &entry.extra)?;
        document.finish()
    };
    render().map_err(|source| ProjectionError::Render {
        what: format!("job {}", record.id),
        source,
    })
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

        let mut rows = JobRows::default();
        let served = Served::new(SERVED, FLOATS);
        let mut deletes = Vec::new();
        // In key order, so that concurrent transactions (a rebuild applies a batch in parts)
        // take the shared count rows in the same order and cannot deadlock.
        let mut deltas: BTreeMap<CountKey, Delta> = BTreeMap::new();
        let mut failures: BTreeMap<(i64, DateTime<Utc>), i64> = BTreeMap::new();
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
                    let document = document(&served, record, entry)?;
                    rows.push(record, entry, document.clone());
                    Some(document)
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
        rows.write(&mut *conn).await?;
        delete_rows(conn, "DELETE FROM job_view WHERE id = ANY($1)", &deletes).await?;
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
