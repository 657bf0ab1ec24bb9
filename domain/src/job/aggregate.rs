//! The job aggregate: its state, how commands are decided and events applied.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    JobCommand, JobError, JobEvent, JobPatch, JobStatus, JobType, RetryPolicy, WorkerAction,
    WorkerClaim, RETRY_MAX_SECONDS,
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
    /// Attempts given back unfinished by a worker shutting down: they do not count
    /// against `max_attempts`.
    #[serde(default)]
    pub releases: u32,
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

impl JobRecord {
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
        retry: RetryPolicy,
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
        let failed = record.failed_attempts();
        let retry_at = match retry {
            RetryPolicy::Backoff { base_ms } if failed < record.max_attempts => {
                Some(at + backoff_after(failed, base_ms))
            }
            RetryPolicy::Backoff { .. } | RetryPolicy::Never => None,
        };
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

    /// Checks that `claim` is the running attempt's, for a report from its worker.
    fn held_by(&self, claim: &WorkerClaim) -> Result<&JobRecord, JobError> {
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

    async fn worker_report(
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

    async fn expire_lease(
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

/// Backoff before retrying after failed attempt number `attempt` (1-based), with the
/// default base: 5 s, 10 s, 20 s, … capped at one hour.
#[cfg(test)]
fn retry_backoff(attempt: u32) -> Duration {
    backoff_after(attempt, (super::RETRY_BASE_SECONDS * 1000) as u32)
}

/// Backoff after failed attempt `attempt` (1-based) when the first backoff is `base_ms`:
/// doubled per earlier attempt, capped at [`RETRY_MAX_SECONDS`].
pub fn backoff_after(attempt: u32, base_ms: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(24);
    let ms = (i64::from(base_ms) << exponent).min(RETRY_MAX_SECONDS * 1000);
    Duration::milliseconds(ms)
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
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    use super::*;
    use crate::job::parse_parameters;

    type Spec = TestFramework<Job>;

    const ID: &str = "0190b6c2-0000-7000-8000-000000000101";
    const WORKER: &str = "worker-1";
    const LEASE_SECONDS: u32 = 60;

    fn at(minute: u32) -> DateTime<Utc> {
        at_s(minute, 0)
    }

    fn at_s(minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 12, minute, second)
            .unwrap()
    }

    fn pct(value: i64) -> Progress {
        Progress::parse("progress", value).unwrap()
    }

    fn project() -> ProjectId {
        ProjectId::parse("project_id", 1).unwrap()
    }

    fn parameters() -> Map<String, Value> {
        parse_parameters(JobType::Noop, json!({"steps": 3})).unwrap()
    }

    fn tags() -> Tags {
        Tags::parse("tags", &["nightly".to_string()]).unwrap()
    }

    fn created_with(max_attempts: u32) -> JobEvent {
        JobEvent::JobCreated {
            id: ID.into(),
            project_id: project(),
            job_type: JobType::Noop,
            parameters: parameters(),
            tags: tags(),
            created_by: Some("alice".into()),
            max_attempts,
            at: at(0),
        }
    }

    fn created() -> JobEvent {
        created_with(3)
    }

    fn dispatched(minute: u32) -> JobEvent {
        JobEvent::JobDispatched {
            scheduled_for: at(minute),
            at: at(minute),
        }
    }

    fn started(attempt: u32, start: DateTime<Utc>) -> JobEvent {
        JobEvent::JobStarted {
            worker_id: WORKER.into(),
            attempt,
            lease_until: start + Duration::seconds(i64::from(LEASE_SECONDS)),
            at: start,
        }
    }

    fn progressed(value: i64, step: Option<&str>, minute: u32) -> JobEvent {
        JobEvent::JobProgressReported {
            progress: pct(value),
            current_step: step.map(Into::into),
            at: at(minute),
        }
    }

    fn failed(attempt: u32, retry_at: Option<DateTime<Utc>>, minute: u32) -> JobEvent {
        JobEvent::JobFailed {
            error: "boom".into(),
            traceback: None,
            attempt,
            retry_at,
            at: at(minute),
        }
    }

    fn cancel_requested(minute: u32) -> JobEvent {
        JobEvent::JobCancelRequested {
            reason: Some("no longer needed".into()),
            at: at(minute),
        }
    }

    /// Created and dispatched at minute 1, due at once.
    fn pending_dispatched() -> Vec<JobEvent> {
        vec![created(), dispatched(1)]
    }

    /// Claimed by `WORKER` at minute 2 (attempt 1).
    fn running() -> Vec<JobEvent> {
        vec![created(), dispatched(1), started(1, at(2))]
    }

    fn running_at(value: i64) -> Vec<JobEvent> {
        let mut events = running();
        events.push(progressed(value, Some("step"), 3));
        events
    }

    fn running_with_cancel_request() -> Vec<JobEvent> {
        let mut events = running();
        events.push(cancel_requested(3));
        events
    }

    fn completed() -> Vec<JobEvent> {
        let mut events = running();
        events.push(JobEvent::JobCompleted {
            result: None,
            at: at(3),
        });
        events
    }

    fn given_up() -> Vec<JobEvent> {
        vec![
            created_with(1),
            dispatched(1),
            started(1, at(2)),
            failed(1, None, 3),
        ]
    }

    fn cancelled() -> Vec<JobEvent> {
        vec![
            created(),
            JobEvent::JobCancelled {
                reason: None,
                at: at(1),
            },
        ]
    }

    fn create() -> JobCommand {
        JobCommand::CreateJob {
            id: ID.into(),
            project_id: project(),
            job_type: JobType::Noop,
            parameters: parameters(),
            tags: tags(),
            created_by: Some("alice".into()),
            max_attempts: 3,
            at: at(0),
        }
    }

    fn dispatch(delay_seconds: u32, minute: u32) -> JobCommand {
        JobCommand::DispatchJob {
            delay_seconds,
            at: at(minute),
        }
    }

    fn start(at: DateTime<Utc>) -> JobCommand {
        JobCommand::StartJob {
            worker_id: WORKER.into(),
            lease_seconds: LEASE_SECONDS,
            at,
        }
    }

    fn progress(value: i64, step: Option<&str>, minute: u32) -> JobCommand {
        JobCommand::ReportJobProgress {
            progress: pct(value),
            current_step: step.map(Into::into),
            at: at(minute),
        }
    }

    fn complete(minute: u32) -> JobCommand {
        JobCommand::CompleteJob {
            result: Some(json!({"rows": 3})),
            at: at(minute),
        }
    }

    fn fail(minute: u32) -> JobCommand {
        JobCommand::FailJob {
            error: "boom".into(),
            traceback: None,
            at: at(minute),
        }
    }

    fn cancel(minute: u32) -> JobCommand {
        JobCommand::RequestJobCancel {
            reason: Some("no longer needed".into()),
            at: at(minute),
        }
    }

    fn confirm_cancelled(minute: u32) -> JobCommand {
        JobCommand::ConfirmJobCancelled { at: at(minute) }
    }

    fn patch(patch: JobPatch, minute: u32) -> JobCommand {
        JobCommand::PatchJob {
            patch,
            at: at(minute),
        }
    }

    fn delete(minute: u32) -> JobCommand {
        JobCommand::DeleteJob { at: at(minute) }
    }

    /// One of each command except `CreateJob`.
    fn every_command_but_create(minute: u32) -> Vec<JobCommand> {
        vec![
            dispatch(0, minute),
            start(at(minute)),
            progress(10, None, minute),
            complete(minute),
            fail(minute),
            cancel(minute),
            confirm_cancelled(minute),
            patch(
                JobPatch {
                    status: Some(JobStatus::Running),
                    ..Default::default()
                },
                minute,
            ),
            delete(minute),
            by_worker(1, WorkerAction::ConfirmCancelled, at(minute)),
            JobCommand::ExpireLease { at: at(minute) },
        ]
    }

    fn claim(attempt: u32) -> WorkerClaim {
        WorkerClaim {
            worker_id: WORKER.into(),
            attempt,
        }
    }

    fn by_worker(attempt: u32, action: WorkerAction, at: DateTime<Utc>) -> JobCommand {
        JobCommand::Worker {
            claim: claim(attempt),
            action,
            at,
        }
    }

    fn replay(events: Vec<JobEvent>) -> Job {
        let mut job = Job::default();
        for event in events {
            job.apply(event);
        }
        job
    }

    // --- create -------------------------------------------------------------------------

    #[tokio::test]
    async fn create_records_a_pending_job() {
        Spec::with(())
            .given_no_previous_events()
            .when_async(create())
            .await
            .then_expect_events(vec![created()]);
        let job = replay(vec![created()]);
        let record = job.live().unwrap();
        assert_eq!(record.status, JobStatus::Pending);
        assert_eq!(record.attempts, 0);
        assert_eq!(record.max_attempts, 3);
        assert_eq!(record.dispatched_at, None);
        assert_eq!(record.created_at, at(0));
        assert_eq!(record.updated_at, at(0));
    }

    #[tokio::test]
    async fn create_twice_is_refused() {
        Spec::with(())
            .given(vec![created()])
            .when_async(create())
            .await
            .then_expect_error(JobError::AlreadyExists);
    }

    #[tokio::test]
    async fn unknown_job_is_not_found() {
        for command in every_command_but_create(1) {
            let result = Spec::with(())
                .given_no_previous_events()
                .when_async(command.clone())
                .await
                .inspect_result();
            assert_eq!(result, Err(JobError::NotFound), "{command:?}");
        }
    }

    // --- dispatch -----------------------------------------------------------------------

    #[tokio::test]
    async fn dispatch_schedules_the_job_after_its_delay() {
        Spec::with(())
            .given(vec![created()])
            .when_async(dispatch(90, 1))
            .await
            .then_expect_events(vec![JobEvent::JobDispatched {
                scheduled_for: at_s(2, 30),
                at: at(1),
            }]);
    }

    #[tokio::test]
    async fn dispatch_twice_is_refused() {
        Spec::with(())
            .given(pending_dispatched())
            .when_async(dispatch(0, 2))
            .await
            .then_expect_error(JobError::AlreadyDispatched);
    }

    #[tokio::test]
    async fn dispatch_of_running_job_is_refused() {
        Spec::with(())
            .given(running())
            .when_async(dispatch(0, 3))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "dispatch",
                status: JobStatus::Running,
            });
    }

    #[tokio::test]
    async fn requeued_job_is_already_dispatched() {
        let mut events = running();
        events.push(failed(1, Some(at_s(3, 5)), 3));
        Spec::with(())
            .given(events)
            .when_async(dispatch(0, 4))
            .await
            .then_expect_error(JobError::AlreadyDispatched);
    }

    // --- start --------------------------------------------------------------------------

    #[tokio::test]
    async fn start_before_dispatch_is_refused() {
        Spec::with(())
            .given(vec![created()])
            .when_async(start(at(1)))
            .await
            .then_expect_error(JobError::NotDispatched);
    }

    #[tokio::test]
    async fn start_before_scheduled_time_is_not_due() {
        Spec::with(())
            .given(vec![created(), dispatched(10)])
            .when_async(start(at_s(9, 59)))
            .await
            .then_expect_error(JobError::NotDue {
                scheduled_for: at(10),
            });
    }

    #[tokio::test]
    async fn start_at_scheduled_time_claims_the_job_with_a_lease() {
        Spec::with(())
            .given(vec![created(), dispatched(10)])
            .when_async(start(at(10)))
            .await
            .then_expect_events(vec![JobEvent::JobStarted {
                worker_id: WORKER.into(),
                attempt: 1,
                lease_until: at(11),
                at: at(10),
            }]);
    }

    #[tokio::test]
    async fn start_of_running_job_is_refused() {
        Spec::with(())
            .given(running())
            .when_async(start(at(3)))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "start",
                status: JobStatus::Running,
            });
    }

    #[tokio::test]
    async fn start_of_finished_job_is_refused() {
        for (events, status) in [
            (completed(), JobStatus::Completed),
            (given_up(), JobStatus::Failed),
            (cancelled(), JobStatus::Cancelled),
        ] {
            Spec::with(())
                .given(events)
                .when_async(start(at(5)))
                .await
                .then_expect_error(JobError::InvalidTransition {
                    action: "start",
                    status,
                });
        }
    }

    // --- progress -----------------------------------------------------------------------

    #[tokio::test]
    async fn progress_is_recorded_on_running_job() {
        Spec::with(())
            .given(running())
            .when_async(progress(40, Some("parsing"), 3))
            .await
            .then_expect_events(vec![progressed(40, Some("parsing"), 3)]);
    }

    #[tokio::test]
    async fn progress_without_step_keeps_the_current_step() {
        Spec::with(())
            .given(running_at(40))
            .when_async(progress(60, None, 4))
            .await
            .then_expect_events(vec![progressed(60, Some("step"), 4)]);
    }

    #[tokio::test]
    async fn progress_never_goes_backwards() {
        Spec::with(())
            .given(running_at(40))
            .when_async(progress(39, Some("step"), 4))
            .await
            .then_expect_error(JobError::ProgressWentBackwards {
                current: 40,
                requested: 39,
            });
    }

    #[tokio::test]
    async fn same_progress_twice_records_nothing() {
        Spec::with(())
            .given(running_at(40))
            .when_async(progress(40, Some("step"), 4))
            .await
            .then_expect_events(vec![]);
        Spec::with(())
            .given(running_at(40))
            .when_async(progress(40, None, 4))
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn same_progress_with_a_new_step_is_recorded() {
        Spec::with(())
            .given(running_at(40))
            .when_async(progress(40, Some("writing"), 4))
            .await
            .then_expect_events(vec![progressed(40, Some("writing"), 4)]);
    }

    #[tokio::test]
    async fn progress_of_pending_job_is_refused() {
        Spec::with(())
            .given(pending_dispatched())
            .when_async(progress(10, None, 2))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "report progress on",
                status: JobStatus::Pending,
            });
    }

    #[tokio::test]
    async fn progress_of_finished_job_is_refused() {
        Spec::with(())
            .given(completed())
            .when_async(progress(100, None, 4))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "report progress on",
                status: JobStatus::Completed,
            });
    }

    // --- complete -----------------------------------------------------------------------

    #[tokio::test]
    async fn complete_records_the_result() {
        Spec::with(())
            .given(running_at(40))
            .when_async(complete(4))
            .await
            .then_expect_events(vec![JobEvent::JobCompleted {
                result: Some(json!({"rows": 3})),
                at: at(4),
            }]);
    }

    #[tokio::test]
    async fn complete_of_pending_job_is_refused() {
        Spec::with(())
            .given(pending_dispatched())
            .when_async(complete(2))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "complete",
                status: JobStatus::Pending,
            });
    }

    #[tokio::test]
    async fn complete_twice_is_refused() {
        Spec::with(())
            .given(completed())
            .when_async(complete(4))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "complete",
                status: JobStatus::Completed,
            });
    }

    #[test]
    fn complete_sets_progress_to_100() {
        let mut events = running_at(40);
        events.push(JobEvent::JobCompleted {
            result: Some(json!({"rows": 3})),
            at: at(4),
        });
        let job = replay(events);
        let record = job.record().unwrap();
        assert_eq!(record.status, JobStatus::Completed);
        assert_eq!(record.progress, Progress::DONE);
        assert_eq!(record.progress.get(), 100);
        assert_eq!(record.result, Some(json!({"rows": 3})));
        assert_eq!(record.completed_at, Some(at(4)));
        assert_eq!(record.lease_until, None);
    }

    // --- fail and retry -----------------------------------------------------------------

    #[tokio::test]
    async fn failure_with_attempts_left_requeues_with_backoff() {
        Spec::with(())
            .given(running())
            .when_async(JobCommand::FailJob {
                error: "boom".into(),
                traceback: Some("at line 1".into()),
                at: at(3),
            })
            .await
            .then_expect_events(vec![JobEvent::JobFailed {
                error: "boom".into(),
                traceback: Some("at line 1".into()),
                attempt: 1,
                retry_at: Some(at_s(3, 5)),
                at: at(3),
            }]);
        let mut events = running();
        events.push(failed(1, Some(at_s(3, 5)), 3));
        let job = replay(events);
        let record = job.live().unwrap();
        assert_eq!(record.status, JobStatus::Pending);
        assert_eq!(record.scheduled_for, Some(at_s(3, 5)));
        assert_eq!(record.error.as_deref(), Some("boom"));
        assert_eq!(record.lease_until, None);
        assert_eq!(record.completed_at, None);
    }

    #[tokio::test]
    async fn second_failure_waits_twice_as_long() {
        let events = vec![
            created(),
            dispatched(1),
            started(1, at(2)),
            failed(1, Some(at_s(3, 5)), 3),
            started(2, at(4)),
        ];
        Spec::with(())
            .given(events)
            .when_async(fail(5))
            .await
            .then_expect_events(vec![failed(2, Some(at_s(5, 10)), 5)]);
    }

    #[tokio::test]
    async fn last_failure_gives_up() {
        let events = vec![
            created(),
            dispatched(1),
            started(1, at(2)),
            failed(1, Some(at_s(3, 5)), 3),
            started(2, at(4)),
            failed(2, Some(at_s(5, 10)), 5),
            started(3, at(6)),
        ];
        Spec::with(())
            .given(events.clone())
            .when_async(fail(7))
            .await
            .then_expect_events(vec![failed(3, None, 7)]);
        let mut all = events;
        all.push(failed(3, None, 7));
        let job = replay(all);
        let record = job.live().unwrap();
        assert_eq!(record.status, JobStatus::Failed);
        assert_eq!(record.attempts, 3);
        assert_eq!(record.completed_at, Some(at(7)));
        assert_eq!(record.lease_until, None);
    }

    #[tokio::test]
    async fn single_attempt_job_gives_up_at_first_failure() {
        Spec::with(())
            .given(vec![created_with(1), dispatched(1), started(1, at(2))])
            .when_async(fail(3))
            .await
            .then_expect_events(vec![failed(1, None, 3)]);
    }

    #[tokio::test]
    async fn requeued_job_cannot_start_before_its_backoff() {
        let mut events = running();
        events.push(failed(1, Some(at_s(3, 5)), 3));
        Spec::with(())
            .given(events)
            .when_async(start(at_s(3, 4)))
            .await
            .then_expect_error(JobError::NotDue {
                scheduled_for: at_s(3, 5),
            });
    }

    #[tokio::test]
    async fn requeued_job_starts_a_new_attempt() {
        let mut events = running();
        events.push(failed(1, Some(at_s(3, 5)), 3));
        Spec::with(())
            .given(events)
            .when_async(start(at_s(3, 5)))
            .await
            .then_expect_events(vec![started(2, at_s(3, 5))]);
    }

    #[tokio::test]
    async fn fail_of_pending_job_is_refused() {
        Spec::with(())
            .given(pending_dispatched())
            .when_async(fail(2))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "fail",
                status: JobStatus::Pending,
            });
    }

    #[tokio::test]
    async fn fail_of_finished_job_is_refused() {
        Spec::with(())
            .given(given_up())
            .when_async(fail(4))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "fail",
                status: JobStatus::Failed,
            });
    }

    #[test]
    fn retry_backoff_doubles_and_caps() {
        assert_eq!(retry_backoff(1), Duration::seconds(5));
        assert_eq!(retry_backoff(2), Duration::seconds(10));
        assert_eq!(retry_backoff(3), Duration::seconds(20));
        assert_eq!(retry_backoff(4), Duration::seconds(40));
        assert_eq!(retry_backoff(10), Duration::seconds(2560));
        assert_eq!(retry_backoff(11), Duration::seconds(RETRY_MAX_SECONDS));
        assert_eq!(retry_backoff(20), Duration::seconds(RETRY_MAX_SECONDS));
        assert_eq!(
            retry_backoff(u32::MAX),
            Duration::seconds(RETRY_MAX_SECONDS)
        );
        assert_eq!(
            retry_backoff(0),
            Duration::seconds(super::super::RETRY_BASE_SECONDS)
        );
        for attempt in 1..40 {
            assert!(retry_backoff(attempt + 1) >= retry_backoff(attempt));
        }
    }

    // --- cancel -------------------------------------------------------------------------

    #[tokio::test]
    async fn cancel_of_pending_job_is_immediate() {
        for events in [vec![created()], pending_dispatched()] {
            Spec::with(())
                .given(events)
                .when_async(cancel(2))
                .await
                .then_expect_events(vec![JobEvent::JobCancelled {
                    reason: Some("no longer needed".into()),
                    at: at(2),
                }]);
        }
    }

    #[tokio::test]
    async fn cancel_of_running_job_is_a_request_then_progress_is_refused() {
        Spec::with(())
            .given(running())
            .when_async(cancel(3))
            .await
            .then_expect_events(vec![cancel_requested(3)]);
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(progress(50, None, 4))
            .await
            .then_expect_error(JobError::CancelRequested);
        let job = replay(running_with_cancel_request());
        let record = job.live().unwrap();
        assert_eq!(record.status, JobStatus::Running);
        assert!(record.cancel_requested);
    }

    #[tokio::test]
    async fn completion_after_cancel_request_is_refused() {
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(complete(4))
            .await
            .then_expect_error(JobError::CancelRequested);
    }

    #[tokio::test]
    async fn cancel_requested_twice_is_refused() {
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(cancel(4))
            .await
            .then_expect_error(JobError::CancelAlreadyRequested);
    }

    #[tokio::test]
    async fn fail_after_cancel_request_is_recorded_as_cancelled() {
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(fail(4))
            .await
            .then_expect_events(vec![JobEvent::JobCancelled {
                reason: Some("cancel requested; the worker stopped with: boom".into()),
                at: at(4),
            }]);
    }

    #[tokio::test]
    async fn confirm_cancelled_after_request_cancels_the_job() {
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(confirm_cancelled(4))
            .await
            .then_expect_events(vec![JobEvent::JobCancelled {
                reason: Some("cancelled by request".into()),
                at: at(4),
            }]);
        let mut events = running_with_cancel_request();
        events.push(JobEvent::JobCancelled {
            reason: Some("cancelled by request".into()),
            at: at(4),
        });
        let job = replay(events);
        let record = job.live().unwrap();
        assert_eq!(record.status, JobStatus::Cancelled);
        assert_eq!(record.completed_at, Some(at(4)));
        assert_eq!(record.lease_until, None);
    }

    #[tokio::test]
    async fn confirm_cancelled_requires_a_request() {
        Spec::with(())
            .given(running())
            .when_async(confirm_cancelled(3))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "confirm the cancellation of",
                status: JobStatus::Running,
            });
        Spec::with(())
            .given(pending_dispatched())
            .when_async(confirm_cancelled(3))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "confirm the cancellation of",
                status: JobStatus::Pending,
            });
    }

    #[tokio::test]
    async fn finished_job_cannot_be_cancelled() {
        for (events, status) in [
            (completed(), JobStatus::Completed),
            (given_up(), JobStatus::Failed),
            (cancelled(), JobStatus::Cancelled),
        ] {
            Spec::with(())
                .given(events)
                .when_async(cancel(5))
                .await
                .then_expect_error(JobError::InvalidTransition {
                    action: "cancel",
                    status,
                });
        }
    }

    #[test]
    fn new_attempt_clears_an_old_cancel_request() {
        // A failure-after-request ends the job, so this only shows the apply rule.
        let mut events = running_with_cancel_request();
        events.push(failed(1, Some(at_s(4, 5)), 4));
        events.push(started(2, at(5)));
        let job = replay(events);
        assert!(!job.live().unwrap().cancel_requested);
    }

    // --- delete -------------------------------------------------------------------------

    #[tokio::test]
    async fn pending_or_finished_job_can_be_deleted() {
        for events in [
            vec![created()],
            pending_dispatched(),
            completed(),
            given_up(),
            cancelled(),
        ] {
            Spec::with(())
                .given(events)
                .when_async(delete(9))
                .await
                .then_expect_events(vec![JobEvent::JobDeleted { at: at(9) }]);
        }
    }

    #[tokio::test]
    async fn running_job_cannot_be_deleted() {
        Spec::with(())
            .given(running())
            .when_async(delete(3))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "delete",
                status: JobStatus::Running,
            });
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(delete(4))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "delete",
                status: JobStatus::Running,
            });
    }

    #[tokio::test]
    async fn deleted_job_accepts_nothing() {
        let mut events = pending_dispatched();
        events.push(JobEvent::JobDeleted { at: at(2) });
        for command in every_command_but_create(3) {
            let result = Spec::with(())
                .given(events.clone())
                .when_async(command.clone())
                .await
                .inspect_result();
            assert_eq!(result, Err(JobError::Deleted), "{command:?}");
        }
        Spec::with(())
            .given(events)
            .when_async(create())
            .await
            .then_expect_error(JobError::AlreadyExists);
    }

    #[test]
    fn deleted_job_keeps_its_record_for_history() {
        let mut events = completed();
        events.push(JobEvent::JobDeleted { at: at(9) });
        let job = replay(events);
        assert!(matches!(job, Job::Deleted(_)));
        assert_eq!(job.live(), Err(JobError::Deleted));
        let record = job.record().unwrap();
        assert_eq!(record.status, JobStatus::Completed);
        assert_eq!(record.updated_at, at(9));
    }

    // --- patch (external worker) --------------------------------------------------------

    #[tokio::test]
    async fn patch_to_running_starts_pending_job_for_external_worker() {
        Spec::with(())
            .given(pending_dispatched())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Running),
                    ..Default::default()
                },
                2,
            ))
            .await
            .then_expect_events(vec![JobEvent::JobStarted {
                worker_id: EXTERNAL_WORKER.into(),
                attempt: 1,
                lease_until: at(2) + Duration::seconds(i64::from(EXTERNAL_LEASE_SECONDS)),
                at: at(2),
            }]);
        assert_eq!(EXTERNAL_WORKER, "external");
    }

    #[tokio::test]
    async fn patch_to_running_of_undispatched_job_is_refused() {
        Spec::with(())
            .given(vec![created()])
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Running),
                    ..Default::default()
                },
                2,
            ))
            .await
            .then_expect_error(JobError::NotDispatched);
    }

    #[tokio::test]
    async fn patch_progress_is_recorded() {
        Spec::with(())
            .given(running())
            .when_async(patch(
                JobPatch {
                    progress: Some(pct(30)),
                    current_step: Some("loading".into()),
                    ..Default::default()
                },
                3,
            ))
            .await
            .then_expect_events(vec![progressed(30, Some("loading"), 3)]);
    }

    #[tokio::test]
    async fn patch_step_alone_keeps_the_progress() {
        Spec::with(())
            .given(running_at(40))
            .when_async(patch(
                JobPatch {
                    current_step: Some("writing".into()),
                    ..Default::default()
                },
                4,
            ))
            .await
            .then_expect_events(vec![progressed(40, Some("writing"), 4)]);
    }

    #[tokio::test]
    async fn patch_progress_never_goes_backwards() {
        Spec::with(())
            .given(running_at(40))
            .when_async(patch(
                JobPatch {
                    progress: Some(pct(10)),
                    ..Default::default()
                },
                4,
            ))
            .await
            .then_expect_error(JobError::ProgressWentBackwards {
                current: 40,
                requested: 10,
            });
    }

    #[tokio::test]
    async fn patch_to_completed_records_the_result() {
        Spec::with(())
            .given(running())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Completed),
                    result: Some(json!({"ok": true})),
                    ..Default::default()
                },
                3,
            ))
            .await
            .then_expect_events(vec![JobEvent::JobCompleted {
                result: Some(json!({"ok": true})),
                at: at(3),
            }]);
    }

    #[tokio::test]
    async fn patch_to_completed_of_pending_job_starts_then_completes() {
        Spec::with(())
            .given(pending_dispatched())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Completed),
                    ..Default::default()
                },
                2,
            ))
            .await
            .then_expect_events(vec![
                JobEvent::JobStarted {
                    worker_id: EXTERNAL_WORKER.into(),
                    attempt: 1,
                    lease_until: at(2) + Duration::seconds(i64::from(EXTERNAL_LEASE_SECONDS)),
                    at: at(2),
                },
                JobEvent::JobCompleted {
                    result: None,
                    at: at(2),
                },
            ]);
    }

    #[tokio::test]
    async fn patch_result_without_completed_status_is_invalid() {
        for status in [None, Some(JobStatus::Running), Some(JobStatus::Failed)] {
            let result = Spec::with(())
                .given(running())
                .when_async(patch(
                    JobPatch {
                        status,
                        result: Some(json!({"ok": true})),
                        ..Default::default()
                    },
                    3,
                ))
                .await
                .inspect_result();
            match result {
                Err(JobError::Invalid(e)) => assert_eq!(e.field, "result"),
                other => panic!("expected a validation error on result, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn patch_error_without_failed_status_is_invalid() {
        let result = Spec::with(())
            .given(running())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Completed),
                    error: Some("boom".into()),
                    ..Default::default()
                },
                3,
            ))
            .await
            .inspect_result();
        match result {
            Err(JobError::Invalid(e)) => assert_eq!(e.field, "error"),
            other => panic!("expected a validation error on error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn patch_to_failed_records_the_failure_with_its_error() {
        Spec::with(())
            .given(running())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Failed),
                    error: Some("disk full".into()),
                    traceback: Some("at write".into()),
                    ..Default::default()
                },
                3,
            ))
            .await
            .then_expect_events(vec![JobEvent::JobFailed {
                error: "disk full".into(),
                traceback: Some("at write".into()),
                attempt: 1,
                retry_at: Some(at_s(3, 5)),
                at: at(3),
            }]);
    }

    #[tokio::test]
    async fn patch_back_to_pending_from_running_is_refused() {
        Spec::with(())
            .given(running())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Pending),
                    ..Default::default()
                },
                3,
            ))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "set back to pending",
                status: JobStatus::Running,
            });
    }

    #[tokio::test]
    async fn patch_to_cancelled_of_running_job_cancels_it() {
        for events in [running(), running_with_cancel_request()] {
            Spec::with(())
                .given(events)
                .when_async(patch(
                    JobPatch {
                        status: Some(JobStatus::Cancelled),
                        ..Default::default()
                    },
                    4,
                ))
                .await
                .then_expect_events(vec![JobEvent::JobCancelled {
                    reason: Some("cancelled by its worker".into()),
                    at: at(4),
                }]);
        }
    }

    #[tokio::test]
    async fn patch_to_cancelled_of_pending_job_cancels_it_without_starting() {
        Spec::with(())
            .given(pending_dispatched())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Cancelled),
                    ..Default::default()
                },
                2,
            ))
            .await
            .then_expect_events(vec![JobEvent::JobCancelled {
                reason: None,
                at: at(2),
            }]);
    }

    #[tokio::test]
    async fn patch_to_cancelled_of_finished_job_is_refused() {
        Spec::with(())
            .given(completed())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Cancelled),
                    ..Default::default()
                },
                4,
            ))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "cancel",
                status: JobStatus::Completed,
            });
    }

    #[tokio::test]
    async fn patch_with_progress_and_completed_records_both_in_order() {
        Spec::with(())
            .given(running())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Completed),
                    progress: Some(pct(90)),
                    result: Some(json!({"ok": true})),
                    ..Default::default()
                },
                3,
            ))
            .await
            .then_expect_events(vec![
                progressed(90, None, 3),
                JobEvent::JobCompleted {
                    result: Some(json!({"ok": true})),
                    at: at(3),
                },
            ]);
    }

    #[tokio::test]
    async fn patch_to_completed_after_cancel_request_is_refused() {
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Completed),
                    ..Default::default()
                },
                4,
            ))
            .await
            .then_expect_error(JobError::CancelRequested);
    }

    /// The patch passes validation (a result with status completed), then its progress
    /// step is refused: the completion that would follow is not recorded either.
    /// (With the current rules no step after a *recorded* one can fail: a start resets
    /// progress and the cancel request, so the following steps always succeed.)
    #[tokio::test]
    async fn patch_whose_second_step_fails_records_nothing() {
        Spec::with(())
            .given(running_at(60))
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Completed),
                    progress: Some(pct(30)),
                    result: Some(json!({"ok": true})),
                    ..Default::default()
                },
                4,
            ))
            .await
            .then_expect_error(JobError::ProgressWentBackwards {
                current: 60,
                requested: 30,
            });
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(patch(
                JobPatch {
                    status: Some(JobStatus::Failed),
                    progress: Some(pct(30)),
                    ..Default::default()
                },
                4,
            ))
            .await
            .then_expect_error(JobError::CancelRequested);
    }

    #[tokio::test]
    async fn patch_of_pending_job_without_status_change_cannot_report_progress() {
        Spec::with(())
            .given(pending_dispatched())
            .when_async(patch(
                JobPatch {
                    progress: Some(pct(10)),
                    ..Default::default()
                },
                2,
            ))
            .await
            .then_expect_error(JobError::InvalidTransition {
                action: "report progress on",
                status: JobStatus::Pending,
            });
    }

    #[tokio::test]
    async fn patch_to_running_of_finished_job_is_refused() {
        for (events, expected) in [
            (completed(), JobStatus::Completed),
            (given_up(), JobStatus::Failed),
            (cancelled(), JobStatus::Cancelled),
        ] {
            let result = Spec::with(())
                .given(events)
                .when_async(patch(
                    JobPatch {
                        status: Some(JobStatus::Running),
                        ..Default::default()
                    },
                    5,
                ))
                .await
                .inspect_result();
            match result {
                Err(JobError::InvalidTransition { status, .. }) => assert_eq!(status, expected),
                other => panic!("expected the transition to be refused, got {other:?}"),
            }
        }
    }

    // --- replaying a whole life ---------------------------------------------------------

    #[test]
    fn full_lifecycle_updates_the_record() {
        let mut job = Job::default();
        assert_eq!(job.record(), None);
        assert_eq!(job.live(), Err(JobError::NotFound));

        job.apply(created());
        job.apply(JobEvent::JobDispatched {
            scheduled_for: at(2),
            at: at(1),
        });
        {
            let r = job.live().unwrap();
            assert_eq!(r.status, JobStatus::Pending);
            assert_eq!(r.dispatched_at, Some(at(1)));
            assert_eq!(r.scheduled_for, Some(at(2)));
            assert_eq!(r.project_id, project());
            assert_eq!(r.job_type, JobType::Noop);
            assert_eq!(r.parameters, parameters());
            assert_eq!(r.tags, tags());
            assert_eq!(r.created_by.as_deref(), Some("alice"));
        }

        job.apply(started(1, at(2)));
        job.apply(progressed(40, Some("parsing"), 3));
        {
            let r = job.live().unwrap();
            assert_eq!(r.status, JobStatus::Running);
            assert_eq!(r.attempts, 1);
            assert_eq!(r.worker_id.as_deref(), Some(WORKER));
            assert_eq!(r.started_at, Some(at(2)));
            assert_eq!(r.lease_until, Some(at(3)));
            assert_eq!(r.progress, pct(40));
            assert_eq!(r.current_step.as_deref(), Some("parsing"));
        }

        job.apply(JobEvent::JobFailed {
            error: "boom".into(),
            traceback: Some("at parse".into()),
            attempt: 1,
            retry_at: Some(at_s(4, 5)),
            at: at(4),
        });
        {
            let r = job.live().unwrap();
            assert_eq!(r.status, JobStatus::Pending);
            assert_eq!(r.scheduled_for, Some(at_s(4, 5)));
            assert_eq!(r.lease_until, None);
            assert_eq!(r.error.as_deref(), Some("boom"));
            assert_eq!(r.traceback.as_deref(), Some("at parse"));
            assert_eq!(r.completed_at, None);
        }

        job.apply(started(2, at(5)));
        {
            let r = job.live().unwrap();
            assert_eq!(r.status, JobStatus::Running);
            assert_eq!(r.attempts, 2);
            assert_eq!(r.started_at, Some(at(5)));
            assert_eq!(r.progress, Progress::default());
            assert_eq!(r.progress.get(), 0);
            assert_eq!(r.current_step, None);
            assert_eq!(r.lease_until, Some(at(6)));
        }

        job.apply(progressed(70, Some("writing"), 6));
        job.apply(JobEvent::JobCompleted {
            result: Some(json!({"rows": 3})),
            at: at(7),
        });
        let r = job.live().unwrap();
        assert_eq!(r.id, ID);
        assert_eq!(r.status, JobStatus::Completed);
        assert!(r.status.is_terminal());
        assert_eq!(r.attempts, 2);
        assert_eq!(r.max_attempts, 3);
        assert_eq!(r.progress, Progress::DONE);
        assert_eq!(r.result, Some(json!({"rows": 3})));
        assert_eq!(r.worker_id.as_deref(), Some(WORKER));
        assert_eq!(r.lease_until, None);
        assert_eq!(r.created_at, at(0));
        assert_eq!(r.started_at, Some(at(5)));
        assert_eq!(r.completed_at, Some(at(7)));
        assert_eq!(r.updated_at, at(7));
        assert!(!r.cancel_requested);
    }

    #[test]
    fn events_for_an_unknown_job_are_ignored() {
        let mut job = Job::default();
        job.apply(dispatched(1));
        job.apply(JobEvent::JobDeleted { at: at(2) });
        assert_eq!(job, Job::NotCreated);
    }

    // --- workers: claims, heartbeats, lease expiry, release ----------------------------

    #[tokio::test]
    async fn heartbeat_extends_the_lease_of_the_claim_holder() {
        Spec::with(())
            .given(running())
            .when_async(by_worker(
                1,
                WorkerAction::RenewLease { lease_seconds: 30 },
                at(3),
            ))
            .await
            .then_expect_events(vec![JobEvent::JobLeaseRenewed {
                lease_until: at_s(3, 30),
                at: at(3),
            }]);
        let mut events = running();
        events.push(JobEvent::JobLeaseRenewed {
            lease_until: at_s(3, 30),
            at: at(3),
        });
        assert_eq!(
            replay(events).live().unwrap().lease_until,
            Some(at_s(3, 30))
        );
    }

    #[tokio::test]
    async fn heartbeat_after_a_cancel_request_tells_the_worker_to_stop() {
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(by_worker(
                1,
                WorkerAction::RenewLease { lease_seconds: 30 },
                at(4),
            ))
            .await
            .then_expect_error(JobError::CancelRequested);
    }

    #[tokio::test]
    async fn reports_under_a_stale_claim_are_refused() {
        let other = JobCommand::Worker {
            claim: WorkerClaim {
                worker_id: "worker-2".into(),
                attempt: 1,
            },
            action: WorkerAction::Complete { result: None },
            at: at(3),
        };
        for (command, given) in [
            (other, running()),
            (
                by_worker(2, WorkerAction::Complete { result: None }, at(3)),
                running(),
            ),
            (
                by_worker(1, WorkerAction::Complete { result: None }, at(3)),
                pending_dispatched(),
            ),
            (
                by_worker(1, WorkerAction::Complete { result: None }, at(4)),
                completed(),
            ),
        ] {
            let result = Spec::with(())
                .given(given)
                .when_async(command.clone())
                .await
                .inspect_result();
            assert!(
                matches!(result, Err(JobError::NotClaimHolder { .. })),
                "{command:?}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn claim_holder_reports_progress_and_completes() {
        Spec::with(())
            .given(running())
            .when_async(by_worker(
                1,
                WorkerAction::ReportProgress {
                    progress: pct(40),
                    current_step: Some("step".into()),
                },
                at(3),
            ))
            .await
            .then_expect_events(vec![progressed(40, Some("step"), 3)]);
        Spec::with(())
            .given(running())
            .when_async(by_worker(
                1,
                WorkerAction::Complete {
                    result: Some(json!({"rows": 3})),
                },
                at(3),
            ))
            .await
            .then_expect_events(vec![JobEvent::JobCompleted {
                result: Some(json!({"rows": 3})),
                at: at(3),
            }]);
    }

    #[tokio::test]
    async fn worker_failure_backs_off_by_its_policy() {
        let fail = |retry| {
            by_worker(
                1,
                WorkerAction::Fail {
                    error: "boom".into(),
                    traceback: None,
                    retry,
                },
                at(3),
            )
        };
        Spec::with(())
            .given(running())
            .when_async(fail(RetryPolicy::Backoff { base_ms: 1500 }))
            .await
            .then_expect_events(vec![JobEvent::JobFailed {
                error: "boom".into(),
                traceback: None,
                attempt: 1,
                retry_at: Some(at(3) + Duration::milliseconds(1500)),
                at: at(3),
            }]);
        Spec::with(())
            .given(running())
            .when_async(fail(RetryPolicy::Never))
            .await
            .then_expect_events(vec![failed(1, None, 3)]);
    }

    #[test]
    fn backoff_doubles_from_its_base_and_caps() {
        assert_eq!(backoff_after(1, 100), Duration::milliseconds(100));
        assert_eq!(backoff_after(3, 100), Duration::milliseconds(400));
        assert_eq!(backoff_after(40, 100), Duration::seconds(RETRY_MAX_SECONDS));
    }

    #[tokio::test]
    async fn worker_confirms_a_requested_cancellation() {
        Spec::with(())
            .given(running_with_cancel_request())
            .when_async(by_worker(1, WorkerAction::ConfirmCancelled, at(4)))
            .await
            .then_expect_events(vec![JobEvent::JobCancelled {
                reason: Some("cancelled by request".into()),
                at: at(4),
            }]);
    }

    #[tokio::test]
    async fn released_job_is_pending_and_due_at_once() {
        let released = JobEvent::JobReleased {
            worker_id: WORKER.into(),
            attempt: 1,
            reason: "worker shutting down".into(),
            at: at(3),
        };
        Spec::with(())
            .given(running())
            .when_async(by_worker(
                1,
                WorkerAction::Release {
                    reason: "worker shutting down".into(),
                },
                at(3),
            ))
            .await
            .then_expect_events(vec![released.clone()]);
        let mut events = running();
        events.push(released);
        let job = replay(events.clone());
        let record = job.live().unwrap();
        assert_eq!(record.status, JobStatus::Pending);
        assert_eq!(record.scheduled_for, Some(at(3)));
        assert_eq!(record.attempts, 1);
        Spec::with(())
            .given(events)
            .when_async(start(at(3)))
            .await
            .then_expect_events(vec![started(2, at(3))]);
    }

    #[tokio::test]
    async fn a_released_attempt_does_not_count_against_max_attempts() {
        let events = vec![
            created_with(1),
            dispatched(1),
            started(1, at(2)),
            JobEvent::JobReleased {
                worker_id: WORKER.into(),
                attempt: 1,
                reason: "shutting down".into(),
                at: at(3),
            },
            started(2, at(3)),
        ];
        let result = Spec::with(())
            .given(events.clone())
            .when_async(by_worker(
                2,
                WorkerAction::Fail {
                    error: "boom".into(),
                    traceback: None,
                    retry: RetryPolicy::Backoff { base_ms: 1000 },
                },
                at(4),
            ))
            .await
            .inspect_result();
        assert!(result.is_ok());
        // max_attempts 1, one real attempt: given up, not retried.
        let mut job = replay(events);
        assert_eq!(job.live().unwrap().failed_attempts(), 1);
        let sink = EventSink::default();
        job.handle(fail(4), &(), &sink).await.unwrap();
        assert!(matches!(
            sink.collect().await.as_slice(),
            [JobEvent::JobFailed {
                retry_at: None,
                attempt: 2,
                ..
            }]
        ));
    }

    #[tokio::test]
    async fn release_after_a_cancel_request_cancels() {
        let result = Spec::with(())
            .given(running_with_cancel_request())
            .when_async(by_worker(
                1,
                WorkerAction::Release {
                    reason: "shutting down".into(),
                },
                at(4),
            ))
            .await
            .inspect_result();
        assert!(result.is_ok());
        let mut events = running_with_cancel_request();
        let mut job = replay(events.clone());
        let sink = EventSink::default();
        job.handle(
            by_worker(
                1,
                WorkerAction::Release {
                    reason: "shutting down".into(),
                },
                at(4),
            ),
            &(),
            &sink,
        )
        .await
        .unwrap();
        events.extend(sink.collect().await);
        assert_eq!(replay(events).live().unwrap().status, JobStatus::Cancelled);
    }

    #[tokio::test]
    async fn lease_that_still_holds_cannot_be_expired() {
        Spec::with(())
            .given(running())
            .when_async(JobCommand::ExpireLease { at: at(2) })
            .await
            .then_expect_error(JobError::LeaseHolds { lease_until: at(3) });
    }

    #[tokio::test]
    async fn lapsed_lease_fails_the_attempt_and_requeues_at_once() {
        Spec::with(())
            .given(running())
            .when_async(JobCommand::ExpireLease { at: at(5) })
            .await
            .then_expect_events(vec![JobEvent::JobFailed {
                error: format!(
                    "lease of worker {WORKER} expired at {}: the worker stopped without reporting",
                    at(3).to_rfc3339()
                ),
                traceback: None,
                attempt: 1,
                retry_at: Some(at(5)),
                at: at(5),
            }]);
    }

    #[tokio::test]
    async fn lapsed_lease_of_the_last_attempt_gives_up() {
        let result = Spec::with(())
            .given(vec![created_with(1), dispatched(1), started(1, at(2))])
            .when_async(JobCommand::ExpireLease { at: at(5) })
            .await
            .inspect_result();
        assert!(result.is_ok());
        let mut job = replay(vec![created_with(1), dispatched(1), started(1, at(2))]);
        let sink = EventSink::default();
        job.handle(JobCommand::ExpireLease { at: at(5) }, &(), &sink)
            .await
            .unwrap();
        let events = sink.collect().await;
        assert!(matches!(
            events.as_slice(),
            [JobEvent::JobFailed {
                retry_at: None,
                attempt: 1,
                ..
            }]
        ));
    }

    #[tokio::test]
    async fn lease_of_pending_job_cannot_expire() {
        let result = Spec::with(())
            .given(pending_dispatched())
            .when_async(JobCommand::ExpireLease { at: at(5) })
            .await
            .inspect_result();
        assert!(matches!(result, Err(JobError::InvalidTransition { .. })));
    }

    #[tokio::test]
    async fn scheduled_analysis_is_dispatched_with_a_delay() {
        let created = JobEvent::JobCreated {
            id: ID.into(),
            project_id: project(),
            job_type: JobType::ScheduledAnalysis,
            parameters: parse_parameters(JobType::ScheduledAnalysis, json!({})).unwrap(),
            tags: tags(),
            created_by: None,
            max_attempts: 3,
            at: at(0),
        };
        let result = Spec::with(())
            .given(vec![created.clone()])
            .when_async(dispatch(0, 1))
            .await
            .inspect_result();
        assert!(
            matches!(&result, Err(JobError::Invalid(e)) if e.field == "delay_seconds"),
            "{result:?}"
        );
        Spec::with(())
            .given(vec![created])
            .when_async(dispatch(60, 1))
            .await
            .then_expect_events(vec![JobEvent::JobDispatched {
                scheduled_for: at(2),
                at: at(1),
            }]);
    }

    #[test]
    fn startable_events_say_when_the_job_is_due() {
        assert!(dispatched(1).makes_job_startable());
        assert_eq!(dispatched(1).due_at(), Some(at(1)));
        assert!(failed(1, Some(at(4)), 3).makes_job_startable());
        assert!(!failed(1, None, 3).makes_job_startable());
        assert!(!started(1, at(2)).makes_job_startable());
    }
}
