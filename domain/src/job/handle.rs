//! How the job aggregate decides its commands: dispatch, start, progress, completion, cancellation, worker reports and lease expiry (create and delete are decided in `aggregate.rs`, external `PATCH`es in `patch.rs`, failures in `retry.rs`).

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use serde_json::Value;

use super::state::Job;
use super::{JobError, JobEvent, JobStatus, JobType, WorkerAction, WorkerClaim};
use crate::error::ValidationError;
use crate::values::Progress;

impl Job {
    pub(super) async fn dispatch(
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
        if record.job_type == JobType::ScheduledAnalysis && delay_seconds == 0 {
            return Err(ValidationError::new(
                "delay_seconds",
                "a scheduled_analysis job is dispatched with a delay of at least 1 second",
            )
            .into());
        }
        let scheduled_for = at + Duration::seconds(i64::from(delay_seconds));
        sink.write(JobEvent::JobDispatched { scheduled_for, at }, self)
            .await;
        Ok(())
    }

    pub(super) async fn start(
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

    pub(super) async fn report_progress(
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

    pub(super) async fn complete(
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

    pub(super) async fn request_cancel(
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

    pub(super) async fn confirm_cancelled(
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

    pub(super) async fn worker_report(
        &mut self,
        claim: WorkerClaim,
        action: WorkerAction,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let record = self.held_by(&claim)?;
        match action {
            WorkerAction::RenewLease { lease_seconds } => {
                if record.cancel_requested {
                    return Err(JobError::CancelRequested);
                }
                let lease_until = at + Duration::seconds(i64::from(lease_seconds));
                sink.write(JobEvent::JobLeaseRenewed { lease_until, at }, self)
                    .await;
                Ok(())
            }
            WorkerAction::ReportProgress {
                progress,
                current_step,
            } => self.report_progress(progress, current_step, at, sink).await,
            WorkerAction::Complete { result } => self.complete(result, at, sink).await,
            WorkerAction::Fail {
                error,
                traceback,
                retry,
            } => self.fail(error, traceback, retry, at, sink).await,
            WorkerAction::ConfirmCancelled => self.confirm_cancelled(at, sink).await,
            WorkerAction::Release { reason } => {
                let event = if record.cancel_requested {
                    JobEvent::JobCancelled {
                        reason: Some(format!("cancel requested; the worker stopped: {reason}")),
                        at,
                    }
                } else {
                    JobEvent::JobReleased {
                        worker_id: claim.worker_id,
                        attempt: claim.attempt,
                        reason,
                        at,
                    }
                };
                sink.write(event, self).await;
                Ok(())
            }
        }
    }

    pub(super) async fn expire_lease(
        &mut self,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let record = self.running("expire the lease of")?;
        let lease_until = record.lease_until.unwrap_or(at);
        if lease_until > at {
            return Err(JobError::LeaseHolds { lease_until });
        }
        let worker = record.worker_id.clone().unwrap_or_default();
        let event = if record.cancel_requested {
            JobEvent::JobCancelled {
                reason: Some(format!(
                    "cancel requested; the lease of worker {worker} expired before it confirmed"
                )),
                at,
            }
        } else {
            JobEvent::JobFailed {
                error: format!(
                    "lease of worker {worker} expired at {}: the worker stopped without reporting",
                    lease_until.to_rfc3339()
                ),
                traceback: None,
                attempt: record.attempts,
                retry_at: (record.failed_attempts() < record.max_attempts).then_some(at),
                at,
            }
        };
        sink.write(event, self).await;
        Ok(())
    }
}
