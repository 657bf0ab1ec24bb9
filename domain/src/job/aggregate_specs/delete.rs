//! Deleting a job.

use super::fixtures::*;

// --- delete ------------------------------------------------------------------

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
