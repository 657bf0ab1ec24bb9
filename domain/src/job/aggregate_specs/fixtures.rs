//! Builders of events and commands shared by the job specs.

pub(super) use chrono::TimeZone;
pub(super) use cqrs_es::test::TestFramework;
pub(super) use serde_json::json;

pub(super) use chrono::{DateTime, Duration, Utc};
pub(super) use cqrs_es::Aggregate;
pub(super) use serde_json::{Map, Value};

pub(super) use crate::job::parse_parameters;
pub(super) use crate::job::retry::*;
pub(super) use crate::job::state::*;
pub(super) use crate::job::{
    JobCommand, JobError, JobEvent, JobPatch, JobStatus, JobType, RetryPolicy, WorkerAction,
    WorkerClaim, RETRY_MAX_SECONDS,
};
pub(super) use crate::values::{Progress, ProjectId, Tags};
pub(super) use cqrs_es::event_sink::EventSink;

pub(super) type Spec = TestFramework<Job>;

pub(super) const ID: &str = "0190b6c2-0000-7000-8000-000000000101";
pub(super) const WORKER: &str = "worker-1";
pub(super) const LEASE_SECONDS: u32 = 60;

pub(super) fn at(minute: u32) -> DateTime<Utc> {
    at_s(minute, 0)
}

pub(super) fn at_s(minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, minute, second)
        .unwrap()
}

pub(super) fn pct(value: i64) -> Progress {
    Progress::parse("progress", value).unwrap()
}

pub(super) fn project() -> ProjectId {
    ProjectId::parse("project_id", 1).unwrap()
}

pub(super) fn parameters() -> Map<String, Value> {
    parse_parameters(JobType::Noop, json!({"steps": 3})).unwrap()
}

pub(super) fn tags() -> Tags {
    Tags::parse("tags", &["nightly".to_string()]).unwrap()
}

pub(super) fn created_with(max_attempts: u32) -> JobEvent {
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

pub(super) fn created() -> JobEvent {
    created_with(3)
}

pub(super) fn dispatched(minute: u32) -> JobEvent {
    JobEvent::JobDispatched {
        scheduled_for: at(minute),
        at: at(minute),
    }
}

pub(super) fn started(attempt: u32, start: DateTime<Utc>) -> JobEvent {
    JobEvent::JobStarted {
        worker_id: WORKER.into(),
        attempt,
        lease_until: start + Duration::seconds(i64::from(LEASE_SECONDS)),
        at: start,
    }
}

pub(super) fn progressed(value: i64, step: Option<&str>, minute: u32) -> JobEvent {
    JobEvent::JobProgressReported {
        progress: pct(value),
        current_step: step.map(Into::into),
        at: at(minute),
    }
}

pub(super) fn failed(attempt: u32, retry_at: Option<DateTime<Utc>>, minute: u32) -> JobEvent {
    JobEvent::JobFailed {
        error: "boom".into(),
        traceback: None,
        attempt,
        retry_at,
        at: at(minute),
    }
}

pub(super) fn cancel_requested(minute: u32) -> JobEvent {
    JobEvent::JobCancelRequested {
        reason: Some("no longer needed".into()),
        at: at(minute),
    }
}

/// Created and dispatched at minute 1, due at once.
pub(super) fn pending_dispatched() -> Vec<JobEvent> {
    vec![created(), dispatched(1)]
}

/// Claimed by `WORKER` at minute 2 (attempt 1).
pub(super) fn running() -> Vec<JobEvent> {
    vec![created(), dispatched(1), started(1, at(2))]
}

pub(super) fn running_at(value: i64) -> Vec<JobEvent> {
    let mut events = running();
    events.push(progressed(value, Some("step"), 3));
    events
}

pub(super) fn running_with_cancel_request() -> Vec<JobEvent> {
    let mut events = running();
    events.push(cancel_requested(3));
    events
}

pub(super) fn completed() -> Vec<JobEvent> {
    let mut events = running();
    events.push(JobEvent::JobCompleted {
        result: None,
        at: at(3),
    });
    events
}

pub(super) fn given_up() -> Vec<JobEvent> {
    vec![
        created_with(1),
        dispatched(1),
        started(1, at(2)),
        failed(1, None, 3),
    ]
}

pub(super) fn cancelled() -> Vec<JobEvent> {
    vec![
        created(),
        JobEvent::JobCancelled {
            reason: None,
            at: at(1),
        },
    ]
}

pub(super) fn create() -> JobCommand {
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

pub(super) fn dispatch(delay_seconds: u32, minute: u32) -> JobCommand {
    JobCommand::DispatchJob {
        delay_seconds,
        at: at(minute),
    }
}

pub(super) fn start(at: DateTime<Utc>) -> JobCommand {
    JobCommand::StartJob {
        worker_id: WORKER.into(),
        lease_seconds: LEASE_SECONDS,
        at,
    }
}

pub(super) fn progress(value: i64, step: Option<&str>, minute: u32) -> JobCommand {
    JobCommand::ReportJobProgress {
        progress: pct(value),
        current_step: step.map(Into::into),
        at: at(minute),
    }
}

pub(super) fn complete(minute: u32) -> JobCommand {
    JobCommand::CompleteJob {
        result: Some(json!({"rows": 3})),
        at: at(minute),
    }
}

pub(super) fn fail(minute: u32) -> JobCommand {
    JobCommand::FailJob {
        error: "boom".into(),
        traceback: None,
        at: at(minute),
    }
}

pub(super) fn cancel(minute: u32) -> JobCommand {
    JobCommand::RequestJobCancel {
        reason: Some("no longer needed".into()),
        at: at(minute),
    }
}

pub(super) fn confirm_cancelled(minute: u32) -> JobCommand {
    JobCommand::ConfirmJobCancelled { at: at(minute) }
}

pub(super) fn patch(patch: JobPatch, minute: u32) -> JobCommand {
    JobCommand::PatchJob {
        patch,
        at: at(minute),
    }
}

pub(super) fn delete(minute: u32) -> JobCommand {
    JobCommand::DeleteJob { at: at(minute) }
}

/// One of each command except `CreateJob`.
pub(super) fn every_command_but_create(minute: u32) -> Vec<JobCommand> {
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

pub(super) fn claim(attempt: u32) -> WorkerClaim {
    WorkerClaim {
        worker_id: WORKER.into(),
        attempt,
    }
}

pub(super) fn by_worker(attempt: u32, action: WorkerAction, at: DateTime<Utc>) -> JobCommand {
    JobCommand::Worker {
        claim: claim(attempt),
        action,
        at,
    }
}

pub(super) fn replay(events: Vec<JobEvent>) -> Job {
    let mut job = Job::default();
    for event in events {
        job.apply(event);
    }
    job
}
