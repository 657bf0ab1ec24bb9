//! Replaying whole lives of jobs.

use super::fixtures::*;

// --- replaying a whole life --------------------------------------------------

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
