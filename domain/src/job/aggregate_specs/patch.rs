//! Updates by an external worker through `PATCH`.

use super::fixtures::*;

// --- patch (external worker) -------------------------------------------------

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

// --- a whole job read and sent back (clients of the previous API) ---------------

/// The patch a client sends when it `PATCH`es back the job it read from `events`.
fn sent_back(events: Vec<JobEvent>) -> JobPatch {
    let job = replay(events);
    let record = job.record().expect("a live job");
    let read = serde_json::to_value(record).unwrap();
    JobPatch {
        status: Some(record.status),
        progress: Some(record.progress),
        current_step: record.current_step.clone(),
        result: record.result.clone(),
        error: record.error.clone(),
        traceback: record.traceback.clone(),
        read_back: crate::job::JOB_IDENTITY_FIELDS
            .iter()
            .map(|field| ((*field).to_string(), read[*field].clone()))
            .collect(),
    }
}

#[tokio::test]
async fn a_job_sent_back_as_read_changes_nothing_in_any_state() {
    let mut completed_with_result = running();
    completed_with_result.push(JobEvent::JobCompleted {
        result: Some(json!({"rows": 3})),
        at: at(4),
    });
    for events in [
        vec![created()],
        pending_dispatched(),
        running_at(40),
        completed_with_result,
        given_up(),
        cancelled(),
    ] {
        Spec::with(())
            .given(events.clone())
            .when_async(patch(sent_back(events), 6))
            .await
            .then_expect_events(vec![]);
    }
}

#[tokio::test]
async fn a_job_sent_back_with_an_edit_applies_only_the_edit() {
    let mut edited = sent_back(running_at(40));
    edited.progress = Some(pct(70));
    Spec::with(())
        .given(running_at(40))
        .when_async(patch(edited, 6))
        .await
        .then_expect_events(vec![progressed(70, Some("step"), 6)]);
}

#[tokio::test]
async fn a_read_only_field_sent_back_changed_is_refused_naming_it() {
    for (field, value) in [
        ("project_id", json!(2)),
        ("job_type", json!("export")),
        ("parameters", json!({"steps": 4})),
        ("tags", json!(["weekly"])),
        ("created_by", json!("bob")),
        ("max_attempts", json!(5)),
        ("created_at", json!("2001-01-01T00:00:00Z")),
        ("id", json!("0190b6c2-0000-7000-8000-000000000999")),
    ] {
        let mut changed = sent_back(running());
        changed.progress = Some(pct(50));
        for entry in &mut changed.read_back {
            if entry.0 == field {
                entry.1 = value.clone();
            }
        }
        let result = Spec::with(())
            .given(running())
            .when_async(patch(changed, 6))
            .await
            .inspect_result();
        match result {
            Err(JobError::Invalid(error)) => assert_eq!(error.field, field),
            other => panic!("{field}: expected a refusal naming it, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_creation_time_sent_back_in_another_offset_is_the_same() {
    let mut sent = sent_back(running());
    for entry in &mut sent.read_back {
        if entry.0 == "created_at" {
            entry.1 = json!("2026-11-01T13:00:00+01:00");
        }
    }
    Spec::with(())
        .given(running())
        .when_async(patch(sent, 6))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_finished_job_sent_back_with_another_outcome_is_refused() {
    let mut sent = sent_back(completed());
    sent.result = Some(json!({"forged": true}));
    Spec::with(())
        .given(completed())
        .when_async(patch(sent, 6))
        .await
        .then_expect_error(JobError::InvalidTransition {
            action: "change the outcome of",
            status: JobStatus::Completed,
        });
}

#[tokio::test]
async fn a_job_asked_to_stop_refuses_a_report_even_sent_back_unchanged() {
    Spec::with(())
        .given(running_with_cancel_request())
        .when_async(patch(sent_back(running_with_cancel_request()), 6))
        .await
        .then_expect_error(JobError::CancelRequested);
}
