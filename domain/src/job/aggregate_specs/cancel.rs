//! Cancelling a pending or running job.

use super::fixtures::*;

// --- cancel ------------------------------------------------------------------

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
