//! The JetStream stream every event is published to, and the names derived from the
//! deployment's subject prefix.
//!
//! With prefix `cc` (the default) the stream is `CC_EVENTS` over `cc.events.>`, and an
//! event goes to `cc.events.<aggregate_type>.<aggregate_id>.<event_type>` with
//! `Nats-Msg-Id = <aggregate_type>:<aggregate_id>:<sequence>`. Another prefix gives
//! another stream, so deployments (and test runs) can share a NATS server.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::StoredEvent;

/// How long JetStream remembers message ids to drop re-published duplicates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Header: the event's position token.
pub const HEADER_POSITION: &str = "CC-Position";
/// Header: the event's `global_position`.
pub const HEADER_GLOBAL_POSITION: &str = "CC-Global-Position";
/// Header: the event's sequence within its aggregate.
pub const HEADER_SEQUENCE: &str = "CC-Sequence";
/// Header: the event type.
pub const HEADER_EVENT_TYPE: &str = "CC-Event-Type";
/// Header: the event schema version.
pub const HEADER_EVENT_VERSION: &str = "CC-Event-Version";
/// Header: the correlation id from the event's metadata.
pub const HEADER_CORRELATION_ID: &str = "CC-Correlation-Id";
/// Header: the project id from the event's metadata.
pub const HEADER_PROJECT_ID: &str = "CC-Project-Id";

/// Names of the event stream for one subject prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStream {
    prefix: String,
}

impl EventStream {
    /// The stream for subject prefix `prefix` (letters, digits, `_` and `-`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The subject prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `CC_EVENTS` for prefix `cc`.
    pub fn name(&self) -> String {
        format!("{}_EVENTS", self.prefix.to_uppercase().replace('-', "_"))
    }

    /// Every subject of the stream: `<prefix>.events.>`.
    pub fn subjects(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The subjects of one aggregate type: `<prefix>.events.<type>.>`.
    pub fn aggregate_subjects(&self, aggregate_type: &str) -> String {
        format!("{}.events.{aggregate_type}.>", self.prefix)
    }

    /// Where `event` is published.
    pub fn subject(&self, event: &StoredEvent) -> String {
        format!(
            "{}.events.{}.{}.{}",
            self.prefix, event.aggregate_type, event.aggregate_id, event.event_type
        )
    }

    /// The de-duplication id of `event`.
    pub fn message_id(event: &StoredEvent) -> String {
        format!(
            "{}:{}:{}",
            event.aggregate_type, event.aggregate_id, event.sequence
        )
    }

    /// The stream's configuration: file storage, the duplicate window, no limits beyond
    /// the server's (PostgreSQL keeps the authoritative copy).
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name(),
            subjects: vec![self.subjects()],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }
    }

    /// Creates the stream, or brings an existing one's configuration up to date.
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
    ) -> Result<stream::Stream, async_nats::Error> {
        js.create_or_update_stream(self.config()).await?;
        Ok(js.get_stream(self.name()).await?)
    }
}
