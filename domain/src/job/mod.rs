//! The *job* aggregate: a unit of background work for a project.
//!
//! Lifecycle: `pending` → (dispatched, possibly for later) → `running` (claimed by one
//! worker, with a lease) → progress… → `completed` | `failed` | `cancelled`.
//! Rules (specified in `aggregate_specs/`):
//! - a job must be dispatched, and its `scheduled_for` time reached, before it can start;
//! - only a running job reports progress, completes or fails; progress never goes back;
//! - a failure re-queues the job (pending, dispatched for after an exponential backoff)
//!   while `attempts < max_attempts`, and ends it as `failed` after that;
//! - cancelling a pending job cancels it at once; cancelling a running job records the
//!   request, after which its worker may only confirm the cancellation (or fail, which is
//!   recorded as cancelled): progress and completion are refused;
//! - a finished job cannot be cancelled; a running job cannot be deleted;
//! - the worker holding a running attempt reports on it (heartbeat, progress, outcome,
//!   release) under its claim (worker id and attempt); a stale claim is refused;
//! - a running attempt whose lease lapsed is failed by the sweeper ("lease expired") and
//!   re-queued at once while attempts remain; a released job is pending again at once;
//! - a `scheduled_analysis` job is dispatched with a delay;
//! - a deleted job accepts nothing; every illegal transition is an error, never ignored.

mod aggregate;
mod commands;
mod error;
mod events;
mod handle;
mod parameters;
mod patch;
mod retry;
mod state;

pub use commands::{
    JobCommand, JobPatch, RetryPolicy, WorkerAction, WorkerClaim, JOB_IDENTITY_FIELDS,
};
pub use error::JobError;
pub use events::JobEvent;
pub use parameters::schema::JobParametersForm;
pub use parameters::{
    parse_parameters, parse_typed_parameters, typed_parameters, AnalysisOptions, ExportFormat,
    JobParameters,
};
pub use state::{Job, JobRecord, EXTERNAL_WORKER};

use crate::values::closed_set;
use serde::{Deserialize, Serialize};

closed_set! {
    /// What kind of work a job does.
    JobType {
        Analysis => "analysis",
        Export => "export",
        BatchAnalysis => "batch_analysis",
        BatchExport => "batch_export",
        WebhookDelivery => "webhook_delivery",
        ScheduledAnalysis => "scheduled_analysis",
        Noop => "noop",
    }
}

closed_set! {
    /// Where a job is in its lifecycle.
    JobStatus {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl JobStatus {
    /// True once nothing more will happen to the job.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Default number of attempts before a failing job is given up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The most attempts a job may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
/// The longest dispatch delay, in seconds.
pub const MAX_DISPATCH_DELAY_SECONDS: u32 = 3600;
/// Backoff before the first retry; it doubles with each further attempt.
pub const RETRY_BASE_SECONDS: i64 = 5;
/// The longest backoff between two attempts.
pub const RETRY_MAX_SECONDS: i64 = 3600;
