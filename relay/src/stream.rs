//! The JetStream stream every event is published to, and the names derived from the
//! deployment's subject prefix.
//!
//! With prefix `cc` (the default) the stream is `CC_EVENTS` over `cc.events.>`, and an
//! event goes to `cc.events.<aggregate_type>.<aggregate_id>.<event_type>` with
//! `Nats-Msg-Id = <aggregate_type>:<aggregate_id>:<sequence>`. Another prefix gives
//! another stream, so deployments (and test runs) can share a NATS server.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use sqlx::PgPool;

use commandcenter_event_store::{Deployment, Position, StoredEvent, HEADER_DEPLOYMENT};

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

/// Why a process cannot use the event stream of its prefix.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The stream belongs to another event store.
    #[error(
        "NATS stream {stream} belongs to another deployment ({owner}); this database is \
         deployment {ours}. Two deployments cannot share a subject prefix on one NATS server: \
         start this one with another CC_NATS_PREFIX (e.g. CC_NATS_PREFIX=cc_{short}), or point \
         DATABASE_URL at the database that owns the stream"
    )]
    OtherDeployment {
        /// The stream's name.
        stream: String,
        /// Who owns it, as far as the stream says.
        owner: String,
        /// This process's deployment.
        ours: Deployment,
        /// Its first digits, for the suggested prefix.
        short: String,
    },
    /// NATS failed or refused.
    #[error("NATS: {0}")]
    Nats(#[source] async_nats::Error),
    /// The event store could not be asked whether a legacy stream's events are its own.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StreamError {
    /// True when retrying cannot help: the configuration must change.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::OtherDeployment { .. })
    }
}

fn nats_error(err: impl Into<async_nats::Error>) -> StreamError {
    StreamError::Nats(err.into())
}

/// The description that binds a stream to a deployment.
fn description(deployment: &Deployment) -> String {
    format!("CommandCenter events of deployment {deployment}")
}

/// The deployment a stream description names, if it names one.
fn owner(description: Option<&str>) -> Option<&str> {
    description?
        .strip_prefix("CommandCenter events of deployment ")
        .map(str::trim)
}

/// Names of the event stream for one subject prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStream {
    prefix: String,
    replicas: usize,
}

impl EventStream {
    /// The stream for subject prefix `prefix` (letters, digits, `_` and `-`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            replicas: 1,
        }
    }

    /// The same stream, created with `replicas` copies (1 on a single server; 3 on a
    /// cluster of three or more, so it survives one node's loss). Applied when the
    /// stream is created, and to an existing stream when it differs (NATS moves the
    /// copies itself).
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// How many copies of the stream the cluster keeps.
    pub fn replicas(&self) -> usize {
        self.replicas
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

    /// The stream's configuration for `deployment`: file storage, the duplicate window,
    /// no limits beyond the server's (PostgreSQL keeps the authoritative copy), and the
    /// owning deployment in its description.
    pub fn config(&self, deployment: &Deployment) -> stream::Config {
        stream::Config {
            name: self.name(),
            description: Some(description(deployment)),
            subjects: vec![self.subjects()],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// The stream of `deployment`: created bound to it, or an existing one checked to be
    /// its own and brought up to date. A stream bound to another deployment is refused
    /// ([`StreamError::OtherDeployment`]). A stream made before deployment ids is adopted
    /// when it is empty or its last event is one of `pool`'s events, and refused otherwise.
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
        deployment: &Deployment,
        pool: &PgPool,
    ) -> Result<stream::Stream, StreamError> {
        let existing = match js.get_stream(self.name()).await {
            Ok(existing) => existing,
            Err(missing) => match js.create_stream(self.config(deployment)).await {
                Ok(created) => return Ok(created),
                // Another process may have created it meanwhile: look again.
                Err(create) => js.get_stream(self.name()).await.map_err(|_| {
                    tracing::debug!(%missing, "stream not found before the create");
                    nats_error(create)
                })?,
            },
        };
        let info = existing.cached_info().clone();
        match owner(info.config.description.as_deref()) {
            Some(owner) if owner == deployment.as_str() => {}
            Some(owner) => return Err(self.refusal(owner, deployment)),
            None => {
                if !self.holds_only_ours(&existing, &info, pool).await? {
                    return Err(self.refusal(
                        "unknown: a stream made before deployment ids, whose last event is \
                         not in this database",
                        deployment,
                    ));
                }
                tracing::info!(stream = %self.name(), %deployment, "stream adopted by this deployment");
            }
        }
        let mut wanted = self.config(deployment);
        // Copies are only ever added here: one process started without the setting must
        // not take a replicated stream down to one copy (an operator lowers it with the
        // NATS tools, on purpose).
        if info.config.num_replicas > wanted.num_replicas {
            tracing::warn!(
                stream = %self.name(),
                copies = info.config.num_replicas,
                configured = wanted.num_replicas,
                "the stream keeps more copies than CC_NATS_STREAM_REPLICAS asks; left as it is"
            );
            wanted.num_replicas = info.config.num_replicas;
        }
        if info.config.description != wanted.description
            || info.config.subjects != wanted.subjects
            || info.config.duplicate_window != wanted.duplicate_window
            || info.config.num_replicas != wanted.num_replicas
        {
            js.update_stream(wanted).await.map_err(nats_error)?;
        }
        Ok(existing)
    }

    fn refusal(&self, owner: &str, deployment: &Deployment) -> StreamError {
        StreamError::OtherDeployment {
            stream: self.name(),
            owner: owner.to_string(),
            ours: deployment.clone(),
            short: deployment.short().to_string(),
        }
    }

    /// Whether a stream without an owner can be adopted: empty, or its last message is an
    /// event of this store (same message id and position).
    async fn holds_only_ours(
        &self,
        stream: &stream::Stream,
        info: &stream::Info,
        pool: &PgPool,
    ) -> Result<bool, StreamError> {
        if info.state.messages == 0 {
            return Ok(true);
        }
        let last = stream
            .get_raw_message(info.state.last_sequence)
            .await
            .map_err(nats_error)?;
        let header = |name: &str| last.headers.get(name).map(|v| v.as_str().to_string());
        if header(HEADER_DEPLOYMENT).is_some() {
            return Ok(false);
        }
        let (Some(id), Some(position)) = (header("Nats-Msg-Id"), header(HEADER_POSITION)) else {
            return Ok(false);
        };
        let mut parts = id.rsplitn(2, ':');
        let (Some(sequence), Some(rest)) = (parts.next(), parts.next()) else {
            return Ok(false);
        };
        let Some((aggregate_type, aggregate_id)) = rest.split_once(':') else {
            return Ok(false);
        };
        let Ok(sequence) = sequence.parse::<i64>() else {
            return Ok(false);
        };
        let Ok(position) = position.parse::<Position>() else {
            return Ok(false);
        };
        let stored: Option<(String, i64)> = sqlx::query_as(
            "SELECT tx_id::text, global_position FROM events \
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(pool)
        .await?;
        let stored =
            stored.and_then(|(tx, pos)| tx.parse::<u64>().ok().map(|tx| Position::new(tx, pos)));
        Ok(stored == Some(position))
    }
}

/// True for the error a deleted (or never stored) stream message reads as; any other
/// error is a real failure.
pub fn is_missing(err: &jetstream::stream::RawMessageError) -> bool {
    use jetstream::stream::RawMessageErrorKind;
    match err.kind() {
        RawMessageErrorKind::NoMessageFound => true,
        RawMessageErrorKind::JetStream(inner) => {
            inner.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
        }
        _ => false,
    }
}
