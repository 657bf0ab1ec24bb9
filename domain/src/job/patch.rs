//! Updates by an external worker (`PATCH /api/v1/jobs/{id}`).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;

use super::state::{Job, JobRecord, EXTERNAL_LEASE_SECONDS, EXTERNAL_WORKER};
use super::{JobError, JobEvent, JobPatch, JobStatus, RetryPolicy};
use crate::error::ValidationError;

impl Job {
    pub(super) async fn patch(
        &mut self,
        patch: JobPatch,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let patch = self.live()?.unchanged_dropped(patch)?;
        let status = self.live()?.status;
        let target = patch.status;
        if patch.result.is_some() && target != Some(JobStatus::Completed) {
            return Err(
                ValidationError::new("result", "is only accepted with status completed").into(),
            );
        }
        if (patch.error.is_some() || patch.traceback.is_some()) && target != Some(JobStatus::Failed)
        {
            let field = if patch.error.is_some() {
                "error"
            } else {
                "traceback"
            };
            return Err(ValidationError::new(field, "is only accepted with status failed").into());
        }
        if target == Some(JobStatus::Pending) && status != JobStatus::Pending {
            return Err(JobError::InvalidTransition {
                action: "set back to pending",
                status,
            });
        }
        if target == Some(JobStatus::Running) && status.is_terminal() {
            return Err(JobError::InvalidTransition {
                action: "restart",
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
                self.fail(error, patch.traceback, RetryPolicy::default(), at, sink)
                    .await
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

impl JobRecord {
    /// Checks the read-only fields sent back, then drops what the patch would leave as it
    /// is (a whole job read and sent back changes nothing): the same status, progress,
    /// step, result, error and traceback.
    fn unchanged_dropped(&self, mut patch: JobPatch) -> Result<JobPatch, JobError> {
        if !patch.read_back.is_empty() {
            // A record always serializes; were it not to, every field sent would differ.
            let current = serde_json::to_value(self).unwrap_or_default();
            for (field, sent) in &patch.read_back {
                let same = match field.as_str() {
                    "created_at" => sent
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t == self.created_at),
                    _ => current.get(field) == Some(sent),
                };
                if !same {
                    return Err(ValidationError::new(
                        field.as_str(),
                        "is read-only and differs from the job's; send it back as read, \
                         or leave it out",
                    )
                    .into());
                }
            }
        }
        if patch.status == Some(self.status) {
            patch.status = None;
        }
        // A report on a job asked to stop is refused even when it changes nothing: that
        // refusal is how an external worker learns of the cancellation.
        if !self.cancel_requested {
            if patch.progress == Some(self.progress) {
                patch.progress = None;
            }
            if patch.current_step.is_some() && patch.current_step == self.current_step {
                patch.current_step = None;
            }
        }
        if patch.result.is_some() && patch.result == self.result {
            patch.result = None;
        }
        if patch.error.is_some() && patch.error == self.error {
            patch.error = None;
        }
        if patch.traceback.is_some() && patch.traceback == self.traceback {
            patch.traceback = None;
        }
        let outcome_changed =
            patch.result.is_some() || patch.error.is_some() || patch.traceback.is_some();
        if self.status.is_terminal() && patch.status.is_none() && outcome_changed {
            return Err(JobError::InvalidTransition {
                action: "change the outcome of",
                status: self.status,
            });
        }
        Ok(patch)
    }
}
