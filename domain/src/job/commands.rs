//! Intents addressed to a job. Values are already validated; `at` is when the write side
//! accepted the request.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{JobStatus, JobType};
use crate::values::{Progress, ProjectId, Tags};

/// A partial update from an external worker (`PATCH /api/v1/jobs/{id}`), decided as the
/// sequence of lifecycle events it implies, all or nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobPatch {
    /// Target status, if it changes.
    pub status: Option<JobStatus>,
    /// New progress.
    pub progress: Option<Progress>,
    /// New step description.
    pub current_step: Option<String>,
    /// Result, with `status: completed`.
    pub result: Option<Value>,
    /// Error, with `status: failed`.
    pub error: Option<String>,
    /// Traceback, with `status: failed`.
    pub traceback: Option<String>,
    /// Fields the client cannot change, sent back as it read them (clients of the previous
    /// API `PATCH` whole objects): each must equal the job's, or the patch is refused
    /// naming it. Field name → the value sent.
    pub read_back: Vec<(String, Value)>,
}

/// The job fields a patch may send back only unchanged (see [`JobPatch::read_back`]).
pub const JOB_IDENTITY_FIELDS: [&str; 8] = [
    "id",
    "project_id",
    "job_type",
    "parameters",
    "tags",
    "created_by",
    "max_attempts",
    "created_at",
];

/// The claim a worker's commands must match: the worker that started the running
/// attempt, and which attempt it is. A worker whose claim lapsed (lease expired, job
/// re-queued) is refused, so it cannot touch another worker's attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerClaim {
    /// The worker that started the attempt.
    pub worker_id: String,
    /// The attempt it started (1-based).
    pub attempt: u32,
}

/// Whether, and how soon, a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Re-queue while attempts remain, after `base_ms` doubled per earlier attempt
    /// (capped at [`super::RETRY_MAX_SECONDS`]).
    Backoff {
        /// Backoff after the first attempt, in milliseconds.
        base_ms: u32,
    },
    /// The failure is final whatever attempts remain (a 4xx from a webhook, say).
    Never,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::Backoff {
            base_ms: (super::RETRY_BASE_SECONDS * 1000) as u32,
        }
    }
}

/// What a worker reports about the attempt it holds.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerAction {
    /// Heartbeat: extend the lease.
    RenewLease {
        /// The lease from now on.
        lease_seconds: u32,
    },
    /// How far the attempt is.
    ReportProgress {
        /// New progress (never below the current one).
        progress: Progress,
        /// What it is doing now.
        current_step: Option<String>,
    },
    /// The attempt succeeded.
    Complete {
        /// What it produced.
        result: Option<Value>,
    },
    /// The attempt failed.
    Fail {
        /// What went wrong.
        error: String,
        /// Where it went wrong: the stack trace, if the worker sent one.
        traceback: Option<String>,
        /// Whether to try again.
        retry: RetryPolicy,
    },
    /// The attempt stopped after a cancel request.
    ConfirmCancelled,
    /// The worker gives the job back unfinished (it is shutting down): pending again,
    /// for another worker at once.
    Release {
        /// Why, for the history.
        reason: String,
    },
}

/// A command on the job aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum JobCommand {
    /// Create a pending job.
    CreateJob {
        /// The new aggregate's id (a UUIDv7 string).
        id: String,
        /// Owning project.
        project_id: ProjectId,
        /// Kind of work.
        job_type: JobType,
        /// Validated parameters for that kind.
        parameters: Map<String, Value>,
        /// Free labels for finding and grouping jobs.
        tags: Tags,
        /// Who asked for it.
        created_by: Option<String>,
        /// Attempts before giving up.
        max_attempts: u32,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Hand the job to the workers, now or after a delay.
    DispatchJob {
        /// Seconds to wait (0–3600).
        delay_seconds: u32,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Claim the job for one worker, with a lease.
    StartJob {
        /// The claiming worker.
        worker_id: String,
        /// How long the claim holds without a heartbeat.
        lease_seconds: u32,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Report how far the running job is.
    ReportJobProgress {
        /// New progress (never below the current one).
        progress: Progress,
        /// What it is doing now.
        current_step: Option<String>,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Record success.
    CompleteJob {
        /// What the job produced.
        result: Option<Value>,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Record a failure (re-queued while attempts remain).
    FailJob {
        /// What went wrong.
        error: String,
        /// Where it went wrong: the stack trace, if the worker sent one.
        traceback: Option<String>,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Ask for the job to be cancelled.
    RequestJobCancel {
        /// Why, for the history.
        reason: Option<String>,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// The worker confirms it stopped after a cancel request.
    ConfirmJobCancelled {
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Apply an external worker's patch.
    PatchJob {
        /// The requested changes.
        patch: JobPatch,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// A report from the worker holding the running attempt.
    Worker {
        /// The attempt the worker holds.
        claim: WorkerClaim,
        /// What it reports.
        action: WorkerAction,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// The sweeper found the running attempt's lease lapsed: fail it (re-queued at once
    /// while attempts remain).
    ExpireLease {
        /// When the sweeper looked.
        at: DateTime<Utc>,
    },
    /// Remove the job (not while it runs).
    DeleteJob {
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
}
