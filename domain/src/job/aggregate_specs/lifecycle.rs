//! Creating, dispatching, starting, progressing and completing a job.

use super::fixtures::*;

// --- create ------------------------------------------------------------------

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

// --- dispatch ----------------------------------------------------------------

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

// --- start -------------------------------------------------------------------

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

// --- progress ----------------------------------------------------------------

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

// --- complete ----------------------------------------------------------------

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
