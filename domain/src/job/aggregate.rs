//! The job aggregate: its state, how commands are decided and events applied.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    JobCommand, JobError, JobEvent, JobPatch, JobStatus, JobType, RETRY_BASE_SECONDS,
    RETRY_MAX_SECONDS,
};
use crate::error::ValidationError;
use crate::values::{Progress, ProjectId, Tags};

/// The worker id recorded when an external worker drives a job through `PATCH`.
pub const EXTERNAL_WORKER: &str = "external";
/// The lease an external worker gets when it starts a job through `PATCH`.
pub const EXTERNAL_LEASE_SECONDS: u32 = 300;

/// A job as its events describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Aggregate id.
    pub id: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// Kind of work.
    pub job_type: JobType,
    /// Parameters.
    pub parameters: Map<String, Value>,
    /// Labels.
    pub tags: Tags,
    /// Who asked for it.
    pub created_by: Option<String>,
    /// Lifecycle status.
    pub status: JobStatus,
    /// Progress of the current attempt.
    pub progress: Progress,
    /// What the current attempt is doing.
    pub current_step: Option<String>,
    /// What it produced.
    pub result: Option<Value>,
    /// Last error.
    pub error: Option<String>,
    /// Last traceback.
    pub traceback: Option<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Earliest start of the next attempt, once dispatched.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// When it was handed to the workers.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// The worker holding (or last holding) the job.
    pub worker_id: Option<String>,
    /// When the running attempt's claim lapses.
    pub lease_until: Option<DateTime<Utc>>,
    /// Whether cancellation of the running attempt was requested.
    pub cancel_requested: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// When any event last touched it.
    pub updated_at: DateTime<Utc>,
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

    fn record_mut(&mut self) -> Option<&mut JobRecord> {
        match self {
            Self::NotCreated => None,
            Self::Live(record) | Self::Deleted(record) => Some(record),
        }
    }

    fn running(&self, action: &'static str) -> Result<&JobRecord, JobError> {
        let record = self.live()?;
        if record.status != JobStatus::Running {
            return Err(JobError::InvalidTransition {
                action,
                status: record.status,
            });
        }
        Ok(record)
    }

    async fn dispatch(
        &mut self,
        delay_seconds: u32,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let record = self.live()?;
        if record.status != JobStatus::Pending {
            return Err(JobError::InvalidTransition {
                action: "dispatch",
                status: record.status,
            });
        }
        if record.dispatched_at.is_some() {
            return Err(JobError::AlreadyDispatched);
        }
        let scheduled_for = at + Duration::seconds(i64::from(delay_seconds));
        sink.write(JobEvent::JobDispatched { scheduled_for, at }, self)
            .await;
        Ok(())
    }

    async fn start(
        &mut self,
        worker_id: String,
        lease_seconds: u32,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let record = self.live()?;
        if record.status != JobStatus::Pending {
            return Err(JobError::InvalidTransition {
                action: "start",
                status: record.status,
            });
        }
        let scheduled_for = record.scheduled_for.ok_or(JobError::NotDispatched)?;
        if scheduled_for > at {
            return Err(JobError::NotDue { scheduled_for });
        }
        let event = JobEvent::JobStarted {
            worker_id,
            attempt: record.attempts + 1,
            lease_until: at + Duration::seconds(i64::from(lease_seconds)),
            at,
        };
        sink.write(event, self).await;
        Ok(())
    }

    async fn report_progress(
        &mut self,
        progress: Progress,
        current_step: Option<String>,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let record = self.running("report progress on")?;
        if record.cancel_requested {
            return Err(JobError::CancelRequested);
        }
        if progress < record.progress {
            return Err(JobError::ProgressWentBackwards {
                current: record.progress.get(),
                requested: progress.get(),
            });
        }
        let step = current_step.or_else(|| record.current_step.clone());
        if progress == record.progress && step == record.current_step {
            return Ok(());
        }
        let event = JobEvent::JobProgressReported {
            progress,
            current_step: step,
            at,
        };
        sink.write(event, self).await;
        Ok(())
    }

    async fn complete(
        &mut self,
        result: Option<Value>,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        if self.running("complete")?.cancel_requested {
            return Err(JobError::CancelRequested);
        }
        sink.write(JobEvent::JobCompleted { result, at }, self)
            .await;
        Ok(())
    }

    async fn fail(
        &mut self,
        error: String,
        traceback: Option<String>,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let record = self.running("fail")?;
        if record.cancel_requested {
            let event = JobEvent::JobCancelled {
                reason: Some(format!(
                    "cancel requested; the worker stopped with: {error}"
                )),
                at,
            };
            sink.write(event, self).await;
            return Ok(());
        }
        let attempt = record.attempts;
        let retry_at = (attempt < record.max_attempts).then(|| at + retry_backoff(attempt));
        let event = JobEvent::JobFailed {
            error,
            traceback,
            attempt,
            retry_at,
            at,
        };
        sink.write(event, self).await;
        Ok(())
    }

    async fn request_cancel(
        &mut self,
        reason: Option<String>,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let record = self.live()?;
        let event = match record.status {
            JobStatus::Pending => JobEvent::JobCancelled { reason, at },
            JobStatus::Running if record.cancel_requested => {
                return Err(JobError::CancelAlreadyRequested)
            }
            JobStatus::Running => JobEvent::JobCancelRequested { reason, at },
            status => {
                return Err(JobError::InvalidTransition {
                    action: "cancel",
                    status,
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    async fn confirm_cancelled(
        &mut self,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        if !self
            .running("confirm the cancellation of")?
            .cancel_requested
        {
            return Err(JobError::InvalidTransition {
                action: "confirm the cancellation of",
                status: JobStatus::Running,
            });
        }
        let event = JobEvent::JobCancelled {
            reason: Some("cancelled by request".into()),
            at,
        };
        sink.write(event, self).await;
        Ok(())
    }

    async fn patch(
        &mut self,
        patch: JobPatch,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let status = self.live()?.status;
        let target = patch.status;
        if patch.result.is_some() && target != Some(JobStatus::Completed) {
            return Err(
                ValidationError::new("result", "is only accepted with status completed").into(),
            );
        }
        if (patch.error.is_some() || patch.traceback.is_some()) && target != Some(JobStatus::Failed)
        {
            return Err(
                ValidationError::new("error", "is only accepted with status failed").into(),
            );
        }
        if target == Some(JobStatus::Pending) && status != JobStatus::Pending {
            return Err(JobError::InvalidTransition {
                action: "set back to pending",
                status,
            });
        }
        if target.is_some_and(|t| t != JobStatus::Pending)
            && status == JobStatus::Pending
            && target != Some(JobStatus::Cancelled)
        {
            self.start(EXTERNAL_WORKER.into(), EXTERNAL_LEASE_SECONDS, at, sink)
                .await?;
        }
        if patch.progress.is_some() || patch.current_step.is_some() {
            let progress = patch.progress.unwrap_or(self.live()?.progress);
            self.report_progress(progress, patch.current_step, at, sink)
                .await?;
        }
        match target {
            Some(JobStatus::Completed) => self.complete(patch.result, at, sink).await,
            Some(JobStatus::Failed) => {
                let error = patch.error.unwrap_or_else(|| "failed".into());
                self.fail(error, patch.traceback, at, sink).await
            }
            Some(JobStatus::Cancelled) if self.live()?.status == JobStatus::Running => {
                let event = JobEvent::JobCancelled {
                    reason: Some("cancelled by its worker".into()),
                    at,
                };
                sink.write(event, self).await;
                Ok(())
            }
            Some(JobStatus::Cancelled) => self.request_cancel(None, at, sink).await,
            Some(JobStatus::Pending | JobStatus::Running) | None => Ok(()),
        }
    }
}

/// Backoff before retrying after failed attempt number `attempt` (1-based):
/// 5 s, 10 s, 20 s, … capped at one hour.
pub fn retry_backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    Duration::seconds((RETRY_BASE_SECONDS << exponent).min(RETRY_MAX_SECONDS))
}

impl Aggregate for Job {
    const TYPE: &'static str = "job";
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            JobCommand::CreateJob {
                id,
                project_id,
                job_type,
                parameters,
                tags,
                created_by,
                max_attempts,
                at,
            } => {
                if !matches!(self, Self::NotCreated) {
                    return Err(JobError::AlreadyExists);
                }
                let event = JobEvent::JobCreated {
                    id,
                    project_id,
                    job_type,
                    parameters,
                    tags,
                    created_by,
                    max_attempts,
                    at,
                };
                sink.write(event, self).await;
                Ok(())
            }
            JobCommand::DispatchJob { delay_seconds, at } => {
                self.dispatch(delay_seconds, at, sink).await
            }
            JobCommand::StartJob {
                worker_id,
                lease_seconds,
                at,
            } => self.start(worker_id, lease_seconds, at, sink).await,
            JobCommand::ReportJobProgress {
                progress,
                current_step,
                at,
            } => self.report_progress(progress, current_step, at, sink).await,
            JobCommand::CompleteJob { result, at } => self.complete(result, at, sink).await,
            JobCommand::FailJob {
                error,
                traceback,
                at,
            } => self.fail(error, traceback, at, sink).await,
            JobCommand::RequestJobCancel { reason, at } => {
                self.request_cancel(reason, at, sink).await
            }
            JobCommand::ConfirmJobCancelled { at } => self.confirm_cancelled(at, sink).await,
            JobCommand::PatchJob { patch, at } => self.patch(patch, at, sink).await,
            JobCommand::DeleteJob { at } => {
                let status = self.live()?.status;
                if status == JobStatus::Running {
                    return Err(JobError::InvalidTransition {
                        action: "delete",
                        status,
                    });
                }
                sink.write(JobEvent::JobDeleted { at }, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        let at = event.at();
        if let JobEvent::JobCreated {
            id,
            project_id,
            job_type,
            parameters,
            tags,
            created_by,
            max_attempts,
            at,
        } = event
        {
            *self = Self::Live(Box::new(JobRecord {
                id,
                project_id,
                job_type,
                parameters,
                tags,
                created_by,
                status: JobStatus::Pending,
                progress: Progress::default(),
                current_step: None,
                result: None,
                error: None,
                traceback: None,
                attempts: 0,
                max_attempts,
                scheduled_for: None,
                dispatched_at: None,
                worker_id: None,
                lease_until: None,
                cancel_requested: false,
                created_at: at,
                started_at: None,
                completed_at: None,
                updated_at: at,
            }));
            return;
        }
        if let JobEvent::JobDeleted { .. } = event {
            if let Self::Live(record) = std::mem::take(self) {
                *self = Self::Deleted(record);
            }
        }
        let Some(job) = self.record_mut() else {
            return;
        };
        job.updated_at = at;
        match event {
            JobEvent::JobCreated { .. } | JobEvent::JobDeleted { .. } => {}
            JobEvent::JobDispatched { scheduled_for, at } => {
                job.dispatched_at = Some(at);
                job.scheduled_for = Some(scheduled_for);
            }
            JobEvent::JobStarted {
                worker_id,
                attempt,
                lease_until,
                at,
            } => {
                job.status = JobStatus::Running;
                job.worker_id = Some(worker_id);
                job.attempts = attempt;
                job.lease_until = Some(lease_until);
                job.started_at = Some(at);
                job.progress = Progress::default();
                job.current_step = None;
                job.cancel_requested = false;
            }
            JobEvent::JobProgressReported {
                progress,
                current_step,
                ..
            } => {
                job.progress = progress;
                job.current_step = current_step;
            }
            JobEvent::JobCompleted { result, at } => {
                job.status = JobStatus::Completed;
                job.progress = Progress::DONE;
                job.result = result;
                job.lease_until = None;
                job.completed_at = Some(at);
            }
            JobEvent::JobFailed {
                error,
                traceback,
                retry_at,
                at,
                ..
            } => {
                job.error = Some(error);
                job.traceback = traceback;
                job.lease_until = None;
                match retry_at {
                    Some(retry_at) => {
                        job.status = JobStatus::Pending;
                        job.scheduled_for = Some(retry_at);
                    }
                    None => {
                        job.status = JobStatus::Failed;
                        job.completed_at = Some(at);
                    }
                }
            }
            JobEvent::JobCancelRequested { .. } => job.cancel_requested = true,
            JobEvent::JobCancelled { at, .. } => {
                job.status = JobStatus::Cancelled;
                job.lease_until = None;
                job.completed_at = Some(at);
            }
        }
    }
}
