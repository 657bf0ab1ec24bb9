//! What the job aggregate refuses, and why.

use super::JobStatus;
use crate::error::ValidationError;

/// A command the job aggregate rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// No job has this id.
    #[error("job not found")]
    NotFound,
    /// A create for an id that already exists.
    #[error("job already exists")]
    AlreadyExists,
    /// The job was deleted; it accepts no further command.
    #[error("job has been deleted")]
    Deleted,
    /// The command does not apply to a job in this status.
    #[error("cannot {action} a job that is {status}")]
    InvalidTransition {
        /// What was attempted (`start`, `complete`, ...).
        action: &'static str,
        /// The job's status at the time.
        status: JobStatus,
    },
    /// Start was asked for a job nobody dispatched.
    #[error("job has not been dispatched")]
    NotDispatched,
    /// Dispatch was asked twice.
    #[error("job is already dispatched")]
    AlreadyDispatched,
    /// Start came before the job's scheduled time.
    #[error("job is scheduled for {scheduled_for}")]
    NotDue {
        /// When it may start.
        scheduled_for: chrono::DateTime<chrono::Utc>,
    },
    /// Progress may only grow.
    #[error("progress cannot go back from {current} to {requested}")]
    ProgressWentBackwards {
        /// Progress so far.
        current: u8,
        /// What was reported.
        requested: u8,
    },
    /// The job's cancellation was requested: its worker must stop and confirm.
    #[error("job cancellation was requested")]
    CancelRequested,
    /// Cancel was asked twice for a running job.
    #[error("job cancellation was already requested")]
    CancelAlreadyRequested,
    /// A worker reported on an attempt it does not hold (any more).
    #[error("job is not held by worker {worker_id} in attempt {attempt}")]
    NotClaimHolder {
        /// The reporting worker.
        worker_id: String,
        /// The attempt it thought it held.
        attempt: u32,
    },
    /// The sweeper asked to expire a lease that still holds.
    #[error("the job's lease holds until {lease_until}")]
    LeaseHolds {
        /// When it lapses.
        lease_until: chrono::DateTime<chrono::Utc>,
    },
    /// A field value breaks a rule that needs the aggregate's state to check.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}
