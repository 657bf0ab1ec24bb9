//! Errors of the event store boundary.

/// What can go wrong reading or appending events.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the aggregate first (optimistic concurrency).
    #[error("aggregate {aggregate_type}/{aggregate_id} was changed concurrently")]
    Conflict {
        /// Aggregate type.
        aggregate_type: String,
        /// Aggregate id.
        aggregate_id: String,
    },
    /// A uniqueness claim is held by another aggregate.
    #[error("{scope} {key:?} is already taken")]
    ClaimTaken {
        /// The claim's scope.
        scope: String,
        /// The claimed key.
        key: String,
    },
    /// A stored payload no longer deserializes into its event type.
    #[error("event {sequence} of {aggregate_type}/{aggregate_id} cannot be read: {source}")]
    Corrupt {
        /// Aggregate type.
        aggregate_type: String,
        /// Aggregate id.
        aggregate_id: String,
        /// Sequence of the unreadable event.
        sequence: i64,
        /// The deserialization error.
        source: serde_json::Error,
    },
    /// An event could not be serialized.
    #[error("event cannot be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The store holds no event (nothing to checkpoint).
    #[error("the event store is empty")]
    Empty,
    /// An import needs an empty store.
    #[error("the event store is not empty: import loads into a new database only")]
    NotEmpty,
    /// An import file is not a valid export.
    #[error("import failed: {0}")]
    BadImport(String),
    /// Reading or writing a file or stream failed.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Too many commands already wait for a commit (group commit's bounded queue): this
    /// one was refused before anything was written. Retrying shortly may succeed.
    #[error("{waiting} commands are already waiting for a commit; retry shortly")]
    Busy {
        /// The queue's limit.
        waiting: usize,
    },
    /// The transaction this command shared with others (group commit) did not commit:
    /// none of its commands was applied.
    #[error("the command's batch did not commit: {0}")]
    Batch(#[source] std::sync::Arc<sqlx::Error>),
    /// The connection was lost while the command's batch committed, and whether the
    /// commit took place could not be read back (the database stayed out of reach): the
    /// command may have been applied. Retrying with the same Idempotency-Key, or reading
    /// the resource, tells which.
    #[error("the command's batch may or may not have committed: {0}")]
    CommitUnknown(#[source] std::sync::Arc<sqlx::Error>),
}

impl StoreError {
    /// True when retrying later may succeed: the commit queue is full, or the error is
    /// the database's and the pool or the connection is gone, or the server is shutting down, starting, out of
    /// connections or cancelled the statement (a time limit). Nothing of the transaction
    /// it happened in was committed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(err) => is_unavailable(err),
            Self::Batch(err) => is_unavailable(err),
            Self::Busy { .. } => true,
            _ => false,
        }
    }
}

/// [`StoreError::is_unavailable`] for a bare database error.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01 admin shutdown (fast shutdown), 57P02 crash
            // shutdown, 57P03 cannot connect now (starting or stopping); 53300 too many
            // connections; 57014 statement cancelled (statement_timeout); 40001 a read
            // cancelled by a hot standby's recovery conflict (or a serialization failure);
            // 40P01 a deadlock victim; 55P03 a lock not obtained in time. Each is worth
            // retrying.
            code.starts_with("08")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "53300" | "57014" | "40001" | "40P01" | "55P03"
                )
        }),
        _ => false,
    }
}

/// The name of the unique constraint a database error violated, if any.
pub(crate) fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => db.constraint(),
        _ => None,
    }
}
