//! The job aggregate for `cqrs-es`: commands routed to their decisions, events applied.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

use super::state::{Job, JobRecord};
use super::{JobCommand, JobError, JobEvent, JobStatus, RetryPolicy};
use crate::values::Progress;

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
            } => {
                self.fail(error, traceback, RetryPolicy::default(), at, sink)
                    .await
            }
            JobCommand::Worker { claim, action, at } => {
                self.worker_report(claim, action, at, sink).await
            }
            JobCommand::ExpireLease { at } => self.expire_lease(at, sink).await,
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
                releases: 0,
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
            JobEvent::JobLeaseRenewed { lease_until, .. } => job.lease_until = Some(lease_until),
            JobEvent::JobReleased { at, .. } => {
                job.releases += 1;
                job.status = JobStatus::Pending;
                job.scheduled_for = Some(at);
                job.lease_until = None;
            }
            JobEvent::JobCancelled { at, .. } => {
                job.status = JobStatus::Cancelled;
                job.lease_until = None;
                job.completed_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
#[path = "aggregate_specs/mod.rs"]
mod specs;
