//! `technology_view`, `technology_search` and `technology_counts`: every field of each
//! live technology, flattened; the few columns a search's count reads (migration 0018);
//! and the number of technologies per (project, domain, status).
//!
//! A batch is applied by loading the touched rows, folding the events into them with
//! the domain's own `Technology::apply` (so the view cannot disagree with the aggregate),
//! then writing the rows, the deletions and the count deltas (`technology_search` is
//! written by the view's triggers, migration 0018).

use std::collections::BTreeMap;

use commandcenter_domain::technology::{Technology, TechnologyRecord};
use commandcenter_event_store::Position;
use sqlx::PgConnection;

use crate::documents::Served;
use crate::read_model::{fold, write_rows, FoldEvent, Upserts};
use crate::{Change, ProjectionError, ReadModel};

/// The technology read model.
#[derive(Debug, Clone, Copy, Default)]
pub struct TechnologyView;

impl TechnologyView {
    /// Its name.
    pub const NAME: &'static str = "technology_view";
}

/// Columns written from the row JSON (everything but the generated `search`).
const UPSERT: &str = "\
INSERT INTO technology_view (id, project_id, title, vendor, domain, status, relevance_score, \
    priority, description, notes, use_cases, documentation_url, repository_url, website_url, tags, \
    latency_ms, throughput_qps, integration_difficulty, integration_time_estimate_days, \
    maturity_level, stability_score, cost_tier, cost_monthly_usd, dependencies, alternatives, \
    last_hn_mention, hn_score_avg, github_stars, github_last_commit, \
    created_at, updated_at, version, position, doc) \
SELECT id, project_id, title, vendor, domain, status, relevance_score, \
    priority, description, notes, use_cases, documentation_url, repository_url, website_url, tags, \
    latency_ms, throughput_qps, integration_difficulty, integration_time_estimate_days, \
    maturity_level, stability_score, cost_tier, cost_monthly_usd, dependencies, alternatives, \
    last_hn_mention, hn_score_avg, github_stars, github_last_commit, \
    created_at, updated_at, version, position, unnest \
  FROM ROWS FROM (jsonb_populate_recordset(NULL::technology_view, $1::jsonb), unnest($2::text[])) AS r \
ON CONFLICT (id) DO UPDATE SET project_id = EXCLUDED.project_id, title = EXCLUDED.title, \
    vendor = EXCLUDED.vendor, domain = EXCLUDED.domain, status = EXCLUDED.status, \
    relevance_score = EXCLUDED.relevance_score, priority = EXCLUDED.priority, \
    description = EXCLUDED.description, notes = EXCLUDED.notes, use_cases = EXCLUDED.use_cases, \
    documentation_url = EXCLUDED.documentation_url, repository_url = EXCLUDED.repository_url, \
    website_url = EXCLUDED.website_url, tags = EXCLUDED.tags, latency_ms = EXCLUDED.latency_ms, \
    throughput_qps = EXCLUDED.throughput_qps, integration_difficulty = EXCLUDED.integration_difficulty, \
    integration_time_estimate_days = EXCLUDED.integration_time_estimate_days, \
    maturity_level = EXCLUDED.maturity_level, stability_score = EXCLUDED.stability_score, \
    cost_tier = EXCLUDED.cost_tier, cost_monthly_usd = EXCLUDED.cost_monthly_usd, \
    dependencies = EXCLUDED.dependencies, alternatives = EXCLUDED.alternatives, \
    last_hn_mention = EXCLUDED.last_hn_mention, hn_score_avg = EXCLUDED.hn_score_avg, \
    github_stars = EXCLUDED.github_stars, github_last_commit = EXCLUDED.github_last_commit, \
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
    version = EXCLUDED.version, position = EXCLUDED.position, doc = EXCLUDED.doc";

/// The served columns that are `double precision`.
const FLOATS: &[&str] = &[
    "latency_ms",
    "throughput_qps",
    "cost_monthly_usd",
    "hn_score_avg",
];

/// The columns a technology's document serves: every column but `search` and `doc`.
const SERVED: &[&str] = &[
    "id",
    "project_id",
    "title",
    "vendor",
    "domain",
    "status",
    "relevance_score",
    "priority",
    "description",
    "notes",
    "use_cases",
    "documentation_url",
    "repository_url",
    "website_url",
    "tags",
    "latency_ms",
    "throughput_qps",
    "integration_difficulty",
    "integration_time_estimate_days",
    "maturity_level",
    "stability_score",
    "cost_tier",
    "cost_monthly_usd",
    "dependencies",
    "alternatives",
    "last_hn_mention",
    "hn_score_avg",
    "github_stars",
    "github_last_commit",
    "created_at",
    "updated_at",
    "version",
    "position",
];

const COUNTS: &str = "\
INSERT INTO technology_counts AS c (project_id, domain, status, n) \
SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
ON CONFLICT (project_id, domain, status) DO UPDATE SET n = c.n + EXCLUDED.n";

/// A technology's group in `technology_counts`.
type CountKey = (i64, String, String);

fn count_key(record: &TechnologyRecord) -> CountKey {
    (
        record.project_id.get(),
        record.fields.domain.as_str().to_string(),
        record.fields.status.as_str().to_string(),
    )
}

/// The document of a live technology's row: the record's fields plus version and
/// position. It is also the row's JSON the upsert reads its columns from.
fn document(
    served: &Served,
    record: &TechnologyRecord,
    version: i64,
    position: Position,
) -> Result<String, ProjectionError> {
    let render = || {
        let mut document = served.document();
        document.fields(record)?;
        document.set("version", &version)?;
        document.set("position", &position)?;
        document.finish()
    };
    render().map_err(|source| ProjectionError::Render {
        what: format!("technology {}", record.id),
        source,
    })
}

impl ReadModel for TechnologyView {
    const NAME: &'static str = TechnologyView::NAME;
    const AGGREGATE_TYPE: &'static str = "technology";
    const TABLES: &'static [&'static str] =
        &["technology_view", "technology_search", "technology_counts"];
    /// Migration 0018's.
    const TRIGGERS: &'static [&'static str] = &[
        "CREATE OR REPLACE TRIGGER technology_search_inserted AFTER INSERT ON {schema}.technology_view \
             REFERENCING NEW TABLE AS changed FOR EACH STATEMENT \
             EXECUTE FUNCTION cc_technology_search_upsert()",
        "CREATE OR REPLACE TRIGGER technology_search_updated AFTER UPDATE ON {schema}.technology_view \
             REFERENCING NEW TABLE AS changed FOR EACH STATEMENT \
             EXECUTE FUNCTION cc_technology_search_upsert()",
        "CREATE OR REPLACE TRIGGER technology_search_deleted AFTER DELETE ON {schema}.technology_view \
             REFERENCING OLD TABLE AS gone FOR EACH STATEMENT \
             EXECUTE FUNCTION cc_technology_search_delete()",
    ];

    async fn apply<E: FoldEvent>(
        &self,
        conn: &mut PgConnection,
        events: &[E],
    ) -> Result<Vec<Change>, ProjectionError> {
        let entries = fold(
            conn,
            Self::NAME,
            "SELECT id, to_jsonb(t) - 'search' - 'search_text' - 'doc' FROM technology_view t WHERE id = ANY($1)",
            events,
            |id, row| {
                let record: TechnologyRecord =
                    serde_json::from_value(row).map_err(|source| ProjectionError::Decode {
                        what: format!("technology_view row {id}"),
                        source,
                    })?;
                Ok((Technology::Live(record), ()))
            },
            |_| (),
        )
        .await?;

        let mut upserts = Upserts::default();
        let served = Served::new(SERVED, FLOATS);
        let mut deletes = Vec::new();
        // In key order, so that concurrent transactions (a rebuild applies a batch in parts)
        // take the shared count rows in the same order and cannot deadlock.
        let mut deltas: BTreeMap<CountKey, i64> = BTreeMap::new();
        let mut changes = Vec::with_capacity(entries.len());
        for (id, entry) in entries {
            if entry.version == 0 {
                continue;
            }
            if let Technology::Live(before) = &entry.before {
                *deltas.entry(count_key(before)).or_default() -= 1;
            }
            let project_id = entry.state.record().map_or(0, |r| r.project_id.get());
            let change_row = match &entry.state {
                Technology::Live(record) => {
                    *deltas.entry(count_key(record)).or_default() += 1;
                    let document = document(&served, record, entry.version, entry.position)?;
                    upserts.push(document.clone());
                    Some(document)
                }
                Technology::Deleted(_) | Technology::NotCreated => {
                    deletes.push(id.clone());
                    None
                }
            };
            changes.push(Change {
                view: Self::NAME,
                project_id,
                id,
                position: entry.position,
                correlation_id: entry.correlation_id,
                deleted: change_row.is_none(),
                row: change_row,
            });
        }
        write_rows(
            conn,
            UPSERT,
            "DELETE FROM technology_view WHERE id = ANY($1)",
            upserts,
            &deletes,
        )
        .await?;
        deltas.retain(|_, n| *n != 0);
        if !deltas.is_empty() {
            let (mut projects, mut domains, mut statuses, mut ns) =
                (vec![], vec![], vec![], vec![]);
            for ((project, domain, status), n) in deltas {
                projects.push(project);
                domains.push(domain);
                statuses.push(status);
                ns.push(n);
            }
            sqlx::query(COUNTS)
                .bind(&projects)
                .bind(&domains)
                .bind(&statuses)
                .bind(&ns)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM technology_counts WHERE n = 0")
                .execute(&mut *conn)
                .await?;
        }
        changes.sort_by_key(|c| c.position);
        Ok(changes)
    }
}
