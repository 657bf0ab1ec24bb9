//! Which project each aggregate belongs to, read from its first event and remembered:
//! an aggregate never changes project, so an answer stays true. The memory is bounded
//! (the least used are forgotten first); unknown aggregates are not remembered, since
//! they may be created a moment later.

use moka::sync::Cache;
use sqlx::PgPool;

use super::Guard;
use crate::policy::Kind;
use crate::AccessError;

/// Most aggregate owners remembered.
const MAX_OWNERS: u64 = 200_000;

/// The owners read so far, and where to read the others.
pub(super) struct Owners {
    pool: PgPool,
    known: Cache<(Kind, String), i64>,
}

impl Owners {
    /// An empty memory over the event store in `pool`.
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Cache::new(MAX_OWNERS),
        }
    }

    /// The project of the aggregate `id` of `kind` from its first event, if it exists.
    async fn read(&self, kind: Kind, id: &str) -> Result<Option<i64>, AccessError> {
        let first: Option<(String, String, serde_json::Value, Option<i64>)> = sqlx::query_as(
            "SELECT event_type, event_version, payload, cc_event_project(metadata) \
               FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
        )
        .bind(kind.aggregate_type())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match (kind, first) {
            (_, None) => None,
            // The domain says which project a job belongs to (its parameters may name
            // others); a technology belongs to the project its first event names.
            (Kind::Job, Some((event_type, version, payload, named))) => {
                match serde_json::from_value::<commandcenter_domain::job::JobEvent>(
                    commandcenter_domain::upcast_payload(&event_type, &version, payload),
                ) {
                    Ok(event) => event.owning_project().map(|p| p.get()),
                    // An event this version cannot read (a newer writer's): the project its
                    // metadata names.
                    Err(err) => {
                        tracing::warn!(%err, job_id = id, "cannot read a job's first event; using its metadata's project");
                        named
                    }
                }
            }
            (_, Some((_, _, _, project))) => project,
        })
    }
}

impl Guard {
    /// The project an aggregate belongs to (from its first event), if it exists.
    pub async fn owner(&self, kind: Kind, id: &str) -> Result<Option<i64>, AccessError> {
        if commandcenter_domain::values::AggregateId::parse(id).is_none() {
            return Ok(None);
        }
        let owners = &self.0.owners;
        let key = (kind, id.to_string());
        if let Some(project) = owners.known.get(&key) {
            return Ok(Some(project));
        }
        let project = owners.read(kind, id).await?;
        if let Some(project) = project {
            owners.known.insert(key, project);
        }
        Ok(project)
    }
}
