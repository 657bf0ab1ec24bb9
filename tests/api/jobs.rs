//! The job commands over HTTP: lifecycle, dispatch, cancel, patch from external workers.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn job_lifecycle_through_patch_by_an_external_worker() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    assert_eq!(job["status"], "pending");
    assert_eq!(job["parameters"], json!({"steps": 1, "step_ms": 0}));
    assert_eq!(job["max_attempts"], 3);
    let id = job["id"].as_str().unwrap();
    let path = format!("/api/v1/jobs/{id}");

    // Not dispatched yet: a worker cannot start it.
    assert_problem(
        app.patch(&path, &json!({"status": "running"})).await,
        409,
        "",
    )
    .await;

    let dispatched = app.post(&format!("{path}/dispatch"), &json!({})).await;
    assert_eq!(dispatched.status(), 200);
    let dispatched: Value = dispatched.json().await.unwrap();
    assert!(dispatched["scheduled_for"].is_string());

    let running: Value = app
        .patch(
            &path,
            &json!({"status": "running", "progress": 10, "current_step": "warming up"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(running["status"], "running");
    assert_eq!(running["progress"], 10);
    assert_eq!(running["attempts"], 1);
    assert_eq!(running["worker_id"], "external");

    assert_problem(
        app.patch(&path, &json!({"progress": 5})).await,
        409,
        "progress",
    )
    .await;

    let done: Value = app
        .patch(
            &path,
            &json!({"status": "completed", "result": {"rows": 3}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["is_terminal"], true);
    assert_eq!(done["result"], json!({"rows": 3}));

    assert_problem(
        app.post(&format!("{path}/cancel"), &json!({})).await,
        409,
        "",
    )
    .await;

    let history: Value = app
        .get(&format!("{path}/history"))
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "JobCreated",
            "JobDispatched",
            "JobStarted",
            "JobProgressReported",
            "JobCompleted"
        ]
    );
    assert_eq!(app.delete(&path).await.status(), 204);
    assert_problem(app.patch(&path, &json!({"progress": 100})).await, 404, "").await;
    assert_eq!(app.get(&format!("{path}/history")).await.status(), 200);
}

#[tokio::test]
async fn cancel_is_immediate_for_pending_and_a_request_for_running_jobs() {
    let app = spawn_app().await;
    let pending = app.create_job().await;
    let path = format!("/api/v1/jobs/{}", pending["id"].as_str().unwrap());
    let cancelled: Value = app
        .post(&format!("{path}/cancel"), &json!({"reason": "not needed"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");

    let running = app.create_job().await;
    let path = format!("/api/v1/jobs/{}", running["id"].as_str().unwrap());
    app.post(&format!("{path}/dispatch"), &json!({})).await;
    app.patch(&path, &json!({"status": "running"})).await;
    let requested = app.post(&format!("{path}/cancel"), &json!({})).await;
    assert_eq!(requested.status(), 200);
    let requested: Value = requested.json().await.unwrap();
    assert_eq!(requested["status"], "running");
    assert_eq!(requested["cancel_requested"], true);
    // The worker may no longer report progress; it confirms by reporting cancelled.
    assert_problem(app.patch(&path, &json!({"progress": 50})).await, 409, "").await;
    assert_problem(
        app.post(&format!("{path}/cancel"), &json!({})).await,
        409,
        "",
    )
    .await;
    assert_problem(app.delete(&path).await, 409, "").await;
    let stopped: Value = app
        .patch(&path, &json!({"status": "cancelled"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["status"], "cancelled");
    assert_eq!(app.delete(&path).await.status(), 204);
}

#[tokio::test]
async fn delayed_dispatch_cannot_start_before_its_time() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    let dispatched = app
        .post(&format!("{path}/dispatch?delay_seconds=3600"), &json!({}))
        .await;
    assert_eq!(dispatched.status(), 200);
    let problem = assert_problem(
        app.patch(&path, &json!({"status": "running"})).await,
        409,
        "",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("scheduled"));
    assert_problem(
        app.post(&format!("{path}/dispatch"), &json!({})).await,
        409,
        "",
    )
    .await;
}

#[tokio::test]
async fn failure_requeues_until_attempts_run_out() {
    let app = spawn_app().await;
    let job: Value = app
        .post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "noop", "max_attempts": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    app.post(&format!("{path}/dispatch"), &json!({})).await;
    app.patch(&path, &json!({"status": "running"})).await;
    let failed: Value = app
        .patch(
            &path,
            &json!({"status": "failed", "error": "boom", "traceback": "at line 1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], "boom");
    assert_eq!(failed["traceback"], "at line 1");
    assert_eq!(failed["is_terminal"], true);
}
