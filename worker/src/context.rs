//! What a running job sees: its parameters, where to report progress, its
//! cancellation token, and the resources job types use.

use std::path::PathBuf;

use commandcenter_domain::job::{JobParameters, JobType};
use commandcenter_domain::values::ProjectId;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One progress report: percent done and what the job is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProgressReport {
    pub percent: u8,
    pub step: String,
}

/// A running attempt's view of the world.
pub struct JobContext {
    /// The job's id.
    pub id: String,
    /// The job's project.
    pub project_id: ProjectId,
    /// Kind of work.
    pub job_type: JobType,
    /// Which attempt this is (1-based).
    pub attempt: u32,
    /// Its parameters, typed.
    pub parameters: JobParameters,
    /// Cancelled when the job must stop (cancel request, soft time limit, shutdown).
    pub cancel: CancellationToken,
    /// The primary database (read models) for jobs that read the project's data.
    pub pool: PgPool,
    /// Where files are written.
    pub data_dir: PathBuf,
    /// HTTP client for outbound calls.
    pub http: reqwest::Client,
    /// The webhook signing key.
    pub webhook_secret: Option<crate::config::Secret>,
    /// Whether webhooks may reach private and local addresses.
    pub webhook_allow_private: bool,
    pub(crate) progress: watch::Sender<Option<ProgressReport>>,
}

impl JobContext {
    /// Reports progress; the worker writes it at most every `progress_interval`, and
    /// always writes the last value.
    pub fn progress(&self, percent: u8, step: impl Into<String>) {
        let report = ProgressReport {
            percent: percent.min(100),
            step: step.into(),
        };
        self.progress.send_replace(Some(report));
    }

    /// `Err` once the job has been asked to stop: the cooperative check between steps.
    pub fn check_stop(&self) -> Result<(), JobFailure> {
        if self.cancel.is_cancelled() {
            Err(JobFailure::stopped())
        } else {
            Ok(())
        }
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// What went wrong, for the job's `error`.
    pub error: String,
    /// Where, for the job's `traceback`.
    pub traceback: Option<String>,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl JobFailure {
    /// A failure another attempt may not have (network, 5xx, I/O).
    pub fn retryable(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            traceback: None,
            retryable: true,
        }
    }

    /// A failure no retry will fix (bad input, 4xx).
    pub fn permanent(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            traceback: None,
            retryable: false,
        }
    }

    /// The job stopped because it was asked to.
    pub fn stopped() -> Self {
        Self::retryable("the job stopped on request")
    }

    /// The same failure with a traceback.
    pub fn with_traceback(mut self, traceback: impl Into<String>) -> Self {
        self.traceback = Some(traceback.into());
        self
    }
}
