//! Errors of the projections boundary.

use commandcenter_event_store::StoreError;

/// What can stop a projection batch or a rebuild.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event or a stored row does not deserialize.
    #[error("cannot read {what}: {source}")]
    Decode {
        /// What was being read.
        what: String,
        /// Why it failed.
        source: serde_json::Error,
    },
    /// A row's document does not serialize.
    #[error("cannot render the document of {what}: {source}")]
    Render {
        /// Whose document.
        what: String,
        /// Why it failed.
        source: serde_json::Error,
    },
    /// NATS failed.
    #[error("NATS: {0}")]
    Nats(#[source] async_nats::Error),
    /// Another rebuild of the same read model is running.
    #[error("a rebuild of {0} is already running")]
    RebuildRunning(&'static str),
    /// A read model missed events that the event store cannot supply either.
    #[error("{view}: gap that cannot be filled from the event store: {detail}")]
    Gap {
        /// The read model.
        view: String,
        /// Where the gap is.
        detail: String,
    },
    /// The stream cannot be used by this deployment.
    #[error(transparent)]
    Stream(#[from] commandcenter_relay::StreamError),
    /// A task applying part of a rebuild's batch was stopped before it finished.
    #[error("a rebuild's apply task stopped: {0}")]
    Stopped(#[source] tokio::task::JoinError),
    /// No read model has this name.
    #[error("unknown read model {0:?} (known: {known})", known = crate::READ_MODELS.join(", "))]
    UnknownReadModel(String),
}

impl ProjectionError {
    pub(crate) fn nats(err: impl Into<async_nats::Error>) -> Self {
        Self::Nats(err.into())
    }
}
