//! What a command can fail with, in the executor's own terms (no HTTP): the aggregate's
//! refusal, a stale or lost version race, an idempotency key in conflict, or the store.

use commandcenter_domain::job::JobError;
use commandcenter_domain::technology::TechnologyError;
use commandcenter_domain::ValidationError;
use commandcenter_event_store::StoreError;

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The technology refused the command (or does not exist).
    #[error(transparent)]
    Technology(#[from] TechnologyError),
    /// The job refused the command in its current state (or does not exist); workers tell
    /// a cancel request from a lost claim by it.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A value of the command breaks a rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The caller required another version than the current one.
    #[error("version {expected} was expected but the current version is {actual}")]
    PreconditionFailed {
        /// The version the caller required.
        expected: i64,
        /// The aggregate's version.
        actual: i64,
    },
    /// Concurrent writers won every attempt (or the caller required a version and lost
    /// the race for it).
    #[error("the resource was changed concurrently; reload it and retry")]
    Concurrent,
    /// The Idempotency-Key came with another request before.
    #[error("Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// A request with the same Idempotency-Key is still running.
    #[error("a request with this Idempotency-Key is in progress; retry")]
    IdempotencyInProgress,
    /// The event store failed (a uniqueness claim taken, the database unavailable, …).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The answer could not be encoded.
    #[error("the answer could not be encoded")]
    Encode(#[source] serde_json::Error),
    /// A saved idempotency record cannot be replayed.
    #[error("the saved answer of Idempotency-Key {key:?} is unusable: {reason}")]
    CorruptIdempotencyRecord {
        /// The key.
        key: String,
        /// What is wrong with the record.
        reason: String,
    },
    /// The command's task panicked or was cancelled.
    #[error("the command's task ended abnormally")]
    Task(#[from] tokio::task::JoinError),
    /// An invariant of the executor or of its caller does not hold (a bug).
    #[error("broken invariant: {0}")]
    Invariant(&'static str),
}

impl From<sqlx::Error> for CommandError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

impl CommandError {
    /// True when the database could not be reached or answer in time, or the commit
    /// queue was full: retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(err) if err.is_unavailable())
    }

    /// True for a failure of the service rather than a refusal of the command.
    pub fn is_fault(&self) -> bool {
        match self {
            Self::Store(err) => !matches!(
                err,
                StoreError::Conflict { .. } | StoreError::ClaimTaken { .. }
            ),
            Self::Encode(_) | Self::CorruptIdempotencyRecord { .. } | Self::Task(_) => true,
            Self::Invariant(_) => true,
            _ => false,
        }
    }

    /// True when the command lost to the aggregate's state or a concurrent writer (a 409
    /// or 412 over HTTP).
    pub fn is_conflict(&self) -> bool {
        match self {
            Self::PreconditionFailed { .. }
            | Self::Concurrent
            | Self::IdempotencyKeyReused
            | Self::IdempotencyInProgress => true,
            Self::Store(err) => matches!(
                err,
                StoreError::Conflict { .. } | StoreError::ClaimTaken { .. }
            ),
            Self::Technology(err) => matches!(
                err,
                TechnologyError::AlreadyExists | TechnologyError::Archived
            ),
            Self::Job(err) => !matches!(
                err,
                JobError::NotFound | JobError::Deleted | JobError::Invalid(_)
            ),
            Self::Validation(_)
            | Self::Encode(_)
            | Self::CorruptIdempotencyRecord { .. }
            | Self::Task(_)
            | Self::Invariant(_) => false,
        }
    }
}
