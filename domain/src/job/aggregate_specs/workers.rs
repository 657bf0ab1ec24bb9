//! Workers: claims, heartbeats, lease expiry and release.

use super::fixtures::*;

// --- workers: claims, heartbeats, lease expiry, release ----------------------

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
