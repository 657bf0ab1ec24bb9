//! What can stop a worker from starting.

/// A worker that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The settings do not fit together.
    #[error("invalid worker configuration: {0}")]
    Config(String),
}
