//! An event as stored, with everything an auditor or a feed consumer needs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::store::position_from_row;
use crate::Position;

/// The columns every reader of [`StoredEvent`] selects. The text form of `tx_id` is
/// named `tx_text`, never `tx_id`: an `ORDER BY tx_id` would otherwise sort by the
/// output column, as text ("1000000" before "999999").
pub(crate) const STORED_EVENT_COLUMNS: &str =
    "aggregate_type, aggregate_id, sequence, event_type, \
     event_version, payload, metadata, tx_id::text AS tx_text, global_position, recorded_at, hash";

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredEvent {
    /// `technology` or `job`.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The aggregate's version after this event (1-based).
    pub sequence: i64,
    /// Event type name.
    pub event_type: String,
    /// Payload schema version.
    pub event_version: String,
    /// The event.
    pub payload: Value,
    /// Correlation, causation, actor, project, request and idempotency ids.
    pub metadata: Value,
    /// Opaque position token in the global order.
    pub position: Position,
    /// The identity value drawn at insert (informative; order by `position`).
    pub global_position: i64,
    /// Server time of the append.
    #[serde(serialize_with = "commandcenter_domain::serde_helpers::time")]
    pub recorded_at: DateTime<Utc>,
    /// Hex of sha256(previous hash || canonical event).
    pub hash: String,
}

impl StoredEvent {
    /// Decodes rows selected with [`STORED_EVENT_COLUMNS`].
    pub(crate) fn from_rows(rows: &[PgRow]) -> Result<Vec<Self>, sqlx::Error> {
        rows.iter().map(Self::from_row).collect()
    }

    pub(crate) fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let hash: Vec<u8> = row.try_get("hash")?;
        Ok(Self {
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            position: position_from_row(row)?,
            global_position: row.try_get("global_position")?,
            recorded_at: row.try_get("recorded_at")?,
            hash: hex::encode(hash),
        })
    }
}

/// The columns [`CompactEvent::from_row`] reads. The correlation id is taken only when it
/// is a string, as [`StoredEvent`] readers take `metadata["correlation_id"]`.
pub(crate) const COMPACT_EVENT_COLUMNS: &str =
    "aggregate_id, sequence, event_type, event_version, \
     payload::text AS payload_text, \
     CASE WHEN jsonb_typeof(metadata -> 'correlation_id') = 'string' \
          THEN metadata ->> 'correlation_id' END AS correlation_id, \
     tx_id::text AS tx_text, global_position";

/// A stored event as a read model folds it, for reads of millions of events (a
/// rebuild's): its payload as JSON text, to be decoded straight into the domain's event,
/// and of its metadata only the correlation id. Building a [`StoredEvent`]'s two JSON
/// trees, its hex hash and its aggregate type, then dropping them, took about half of a
/// rebuild process's time.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactEvent {
    /// Aggregate id.
    pub aggregate_id: String,
    /// The aggregate's version after this event (1-based).
    pub sequence: i64,
    /// Event type name.
    pub event_type: String,
    /// Payload schema version.
    pub event_version: String,
    /// The event, as PostgreSQL prints its `jsonb`.
    pub payload: String,
    /// `metadata.correlation_id`, when it is a string.
    pub correlation_id: Option<String>,
    /// Position in the global order.
    pub position: Position,
}

impl CompactEvent {
    /// Decodes rows selected with [`COMPACT_EVENT_COLUMNS`].
    pub(crate) fn from_rows(rows: &[PgRow]) -> Result<Vec<Self>, sqlx::Error> {
        rows.iter().map(Self::from_row).collect()
    }

    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload_text")?,
            correlation_id: row.try_get("correlation_id")?,
            position: position_from_row(row)?,
        })
    }
}
