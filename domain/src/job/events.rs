//! Facts about a job, in the past tense.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::JobType;
use crate::values::{Progress, ProjectId, Tags};

/// Something that happened to a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    /// The job was created, pending.
    JobCreated {
        /// Aggregate id.
        id: String,
        /// Owning project.
        project_id: ProjectId,
        /// Kind of work.
        job_type: JobType,
        /// What the job works on, checked against its type when it was created.
        parameters: Map<String, Value>,
        /// Free labels for finding and grouping jobs.
        tags: Tags,
        /// Who asked for it.
        created_by: Option<String>,
        /// Attempts before giving up.
        max_attempts: u32,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The job was handed to the workers, to start no earlier than `scheduled_for`.
    JobDispatched {
        /// Earliest start.
        scheduled_for: DateTime<Utc>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// A worker claimed the job.
    JobStarted {
        /// The worker.
        worker_id: String,
        /// Which attempt this is (1-based).
        attempt: u32,
        /// The claim lapses at this time without a heartbeat.
        lease_until: DateTime<Utc>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The running job reported progress.
    JobProgressReported {
        /// Progress now.
        progress: Progress,
        /// What it is doing.
        current_step: Option<String>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The job succeeded.
    JobCompleted {
        /// What it produced.
        result: Option<Value>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// An attempt failed; `retry_at` is set when the job was re-queued.
    JobFailed {
        /// What went wrong.
        error: String,
        /// Where it went wrong: the stack trace, if the worker sent one.
        traceback: Option<String>,
        /// The attempt that failed.
        attempt: u32,
        /// When the next attempt may start, or `None` when the job is given up.
        retry_at: Option<DateTime<Utc>>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// Cancellation of the running job was requested.
    JobCancelRequested {
        /// Why, in words (shown to users and kept in the history).
        reason: Option<String>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The job was cancelled.
    JobCancelled {
        /// Why, in words (shown to users and kept in the history).
        reason: Option<String>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The running attempt's worker extended its lease (heartbeat).
    JobLeaseRenewed {
        /// The claim now lapses at this time without another heartbeat.
        lease_until: DateTime<Utc>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The worker gave the job back unfinished; it is pending again, due at once.
    JobReleased {
        /// The worker that held it.
        worker_id: String,
        /// The attempt it gave back.
        attempt: u32,
        /// Why, in words (shown to users and kept in the history).
        reason: String,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The job was removed.
    JobDeleted {
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
}

impl JobEvent {
    /// True for the events after which a worker may start the job: it was dispatched,
    /// or re-queued after a failure, a lapsed lease or a release.
    pub fn makes_job_startable(&self) -> bool {
        matches!(
            self,
            Self::JobDispatched { .. }
                | Self::JobFailed {
                    retry_at: Some(_),
                    ..
                }
                | Self::JobReleased { .. }
        )
    }

    /// When the job this event made startable may start.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::JobDispatched { scheduled_for, .. } => Some(*scheduled_for),
            Self::JobFailed { retry_at, .. } => *retry_at,
            Self::JobReleased { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// The project a job created by this event belongs to, for access control: its own
    /// project, or `None` when its parameters name other projects too (a batch made
    /// before batches were kept to their own project holds their data, so it belongs to
    /// no single project). `None` for every other event.
    pub fn owning_project(&self) -> Option<ProjectId> {
        let Self::JobCreated {
            project_id,
            parameters,
            ..
        } = self
        else {
            return None;
        };
        let others = parameters
            .get("project_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.as_i64() != Some(project_id.get()));
        (!others).then_some(*project_id)
    }

    /// When the event happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::JobCreated { at, .. }
            | Self::JobDispatched { at, .. }
            | Self::JobStarted { at, .. }
            | Self::JobProgressReported { at, .. }
            | Self::JobCompleted { at, .. }
            | Self::JobFailed { at, .. }
            | Self::JobCancelRequested { at, .. }
            | Self::JobCancelled { at, .. }
            | Self::JobLeaseRenewed { at, .. }
            | Self::JobReleased { at, .. }
            | Self::JobDeleted { at } => *at,
        }
    }
}

impl DomainEvent for JobEvent {
    fn event_type(&self) -> String {
        match self {
            Self::JobCreated { .. } => "JobCreated",
            Self::JobDispatched { .. } => "JobDispatched",
            Self::JobStarted { .. } => "JobStarted",
            Self::JobProgressReported { .. } => "JobProgressReported",
            Self::JobCompleted { .. } => "JobCompleted",
            Self::JobFailed { .. } => "JobFailed",
            Self::JobCancelRequested { .. } => "JobCancelRequested",
            Self::JobCancelled { .. } => "JobCancelled",
            Self::JobLeaseRenewed { .. } => "JobLeaseRenewed",
            Self::JobReleased { .. } => "JobReleased",
            Self::JobDeleted { .. } => "JobDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
