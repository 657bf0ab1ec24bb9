//! After each commit, every changed row is announced on core NATS as
//! `<prefix>.<deployment>.views.<view>.<project_id>.<id>` (the deployment's core prefix, see
//! `Deployment::core_prefix`): the WebSocket hub and caches listen there.
//! Announcements are best effort (core NATS, after the commit); a subscriber that
//! misses one can read the row, whose `position` says how fresh it is.

use commandcenter_event_store::Position;
use serde::{ser, Serialize, Serializer};
use serde_json::value::RawValue;

/// One changed read-model row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The read model (`technology_view`, `job_view`).
    pub view: &'static str,
    /// The row's project.
    pub project_id: i64,
    /// The row's id.
    pub id: String,
    /// Position of the last event applied to the row.
    pub position: Position,
    /// Correlation id of that event, to follow one command end to end.
    pub correlation_id: Option<String>,
    /// True when the row was removed.
    pub deleted: bool,
    /// The new row (absent when deleted): the document it serves, announced as the JSON
    /// it is, so that a push carries what a read of the row returns.
    #[serde(serialize_with = "document")]
    pub row: Option<String>,
}

/// Writes a row's document as the JSON it holds.
fn document<S: Serializer>(row: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    match row {
        Some(text) => {
            let raw: &RawValue = serde_json::from_str(text).map_err(ser::Error::custom)?;
            serializer.serialize_some(raw)
        }
        None => serializer.serialize_none(),
    }
}

/// The subject a change of `view` row `id` in `project_id` is announced on.
pub fn view_subject(prefix: &str, view: &str, project_id: i64, id: &str) -> String {
    format!("{prefix}.views.{view}.{project_id}.{id}")
}

/// Announces `changes`; failures are logged, never fatal (the rows are committed).
pub(crate) async fn announce(client: &async_nats::Client, prefix: &str, changes: &[Change]) {
    for change in changes {
        let subject = view_subject(prefix, change.view, change.project_id, &change.id);
        let payload = match serde_json::to_vec(change) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(%err, "cannot serialize a view change");
                continue;
            }
        };
        if let Err(err) = client.publish(subject, payload.into()).await {
            tracing::debug!(%err, "view change not announced");
        }
    }
}
