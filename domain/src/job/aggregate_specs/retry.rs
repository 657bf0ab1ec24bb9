//! Failures and retries with backoff.

use super::fixtures::*;

// --- fail and retry ----------------------------------------------------------

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
        Duration::seconds(crate::job::RETRY_BASE_SECONDS)
    );
    for attempt in 1..40 {
        assert!(retry_backoff(attempt + 1) >= retry_backoff(attempt));
    }
}
