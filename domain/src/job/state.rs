//! The job aggregate's state: the record its events build and the lifecycle around it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{JobError, JobStatus, JobType, WorkerClaim};
use crate::values::{Progress, ProjectId, Tags};

/// The worker id recorded when an external worker drives a job through `PATCH`.
pub const EXTERNAL_WORKER: &str = "external";
/// The lease an external worker gets when it starts a job through `PATCH`.
pub const EXTERNAL_LEASE_SECONDS: u32 = 300;

/// A job as its events describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRecord {
    /// Aggregate id.
    pub id: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// Kind of work.
    pub job_type: JobType,
    /// What the job works on, checked against its type when it was created.
    #[schema(value_type = crate::job::JobParametersForm)]
    pub parameters: Map<String, Value>,
    /// Free labels for finding and grouping jobs.
    pub tags: Tags,
    /// Who asked for it.
    #[schema(value_type = Option<crate::values::schema::Label>)]
    pub created_by: Option<String>,
    /// Lifecycle status.
    pub status: JobStatus,
    /// Progress of the current attempt.
    pub progress: Progress,
    /// What the current attempt is doing.
    pub current_step: Option<String>,
    /// What it produced (any JSON).
    pub result: Option<Value>,
    /// Last error.
    pub error: Option<String>,
    /// Last traceback.
    pub traceback: Option<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Attempts given back unfinished by a worker shutting down: they do not count
    /// against `max_attempts`.
    #[serde(default)]
    pub releases: u32,
    /// Earliest start of the next attempt, once dispatched.
    #[serde(serialize_with = "crate::serde_helpers::opt_time")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// When it was handed to the workers.
    #[serde(serialize_with = "crate::serde_helpers::opt_time")]
    pub dispatched_at: Option<DateTime<Utc>>,
    /// The worker holding (or last holding) the job.
    pub worker_id: Option<String>,
    /// When the running attempt's claim lapses.
    #[serde(serialize_with = "crate::serde_helpers::opt_time")]
    pub lease_until: Option<DateTime<Utc>>,
    /// Whether cancellation of the running attempt was requested.
    pub cancel_requested: bool,
    /// When it was created.
    #[serde(serialize_with = "crate::serde_helpers::time")]
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    #[serde(serialize_with = "crate::serde_helpers::opt_time")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(serialize_with = "crate::serde_helpers::opt_time")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When any event last touched it.
    #[serde(serialize_with = "crate::serde_helpers::time")]
    pub updated_at: DateTime<Utc>,
}

impl JobRecord {
    /// `completed_at - started_at` of a finished job that ran, in microseconds.
    pub fn duration_us(&self) -> Option<i64> {
        if !self.status.is_terminal() {
            return None;
        }
        let (started, completed) = (self.started_at?, self.completed_at?);
        (completed - started).num_microseconds()
    }

    /// `completed_at - started_at` of a finished job that ran, in seconds.
    pub fn duration_seconds(&self) -> Option<f64> {
        self.duration_us().map(|us| us as f64 / 1e6)
    }

    /// Attempts that ended otherwise than by a release (the running one included).
    pub fn failed_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.releases)
    }
}

/// The job aggregate's lifecycle.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Job {
    /// No event yet.
    #[default]
    NotCreated,
    /// Exists (in any status).
    Live(Box<JobRecord>),
    /// Removed; kept for history and time travel.
    Deleted(Box<JobRecord>),
}

impl Job {
    /// The record of an existing job, or why there is none.
    pub fn live(&self) -> Result<&JobRecord, JobError> {
        match self {
            Self::NotCreated => Err(JobError::NotFound),
            Self::Live(record) => Ok(record),
            Self::Deleted(_) => Err(JobError::Deleted),
        }
    }

    /// The record, live or deleted.
    pub fn record(&self) -> Option<&JobRecord> {
        match self {
            Self::NotCreated => None,
            Self::Live(record) | Self::Deleted(record) => Some(record),
        }
    }

    pub(super) fn record_mut(&mut self) -> Option<&mut JobRecord> {
        match self {
            Self::NotCreated => None,
            Self::Live(record) | Self::Deleted(record) => Some(record),
        }
    }

    pub(super) fn running(&self, action: &'static str) -> Result<&JobRecord, JobError> {
        let record = self.live()?;
        if record.status != JobStatus::Running {
            return Err(JobError::InvalidTransition {
                action,
                status: record.status,
            });
        }
        Ok(record)
    }

    /// Checks that `claim` is the running attempt's, for a report from its worker.
    pub(super) fn held_by(&self, claim: &WorkerClaim) -> Result<&JobRecord, JobError> {
        let record = self.live()?;
        let holds = record.status == JobStatus::Running
            && record.worker_id.as_deref() == Some(claim.worker_id.as_str())
            && record.attempts == claim.attempt;
        if !holds {
            return Err(JobError::NotClaimHolder {
                worker_id: claim.worker_id.clone(),
                attempt: claim.attempt,
            });
        }
        Ok(record)
    }
}
