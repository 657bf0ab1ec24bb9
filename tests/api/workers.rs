//! Job workers against the real PostgreSQL and NATS: claims, exactly-once runs across
//! competing workers, lease expiry after a killed worker, cancellation, time limits,
//! retries, webhooks, exports, analyses and graceful shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use commandcenter_domain::job::JobType;
use commandcenter_event_store::{AppendSignal, EventStore};
use commandcenter_worker::{Limit, Worker, WorkerConfig};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::{assert_problem, nats_url, spawn_app, spawn_app_with, TestApp};

const SECRET: &str = "test-webhook-secret";

/// A worker running in the test, with its own id and fast timings.
struct TestWorker {
    handle: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl TestWorker {
    /// Asks the worker to stop and waits for it to drain.
    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("worker task");
    }

    /// Kills the worker: its task is aborted, nothing is cleaned up or recorded.
    async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

fn fast_config(app: &TestApp, id: &str) -> WorkerConfig {
    let mut config = WorkerConfig::new(id, std::env::temp_dir().join(&app.nats.prefix));
    config.lease = Duration::from_secs(2);
    config.heartbeat = Duration::from_millis(500);
    config.sweep_interval = Duration::from_millis(200);
    config.retry_base = Duration::from_millis(200);
    config.webhook_secret = Some(SECRET.into());
    // The test receivers listen on 127.0.0.1.
    config.webhook_allow_private = true;
    config
}

async fn start_worker(app: &TestApp, config: WorkerConfig) -> TestWorker {
    let client = async_nats::connect(nats_url()).await.expect("nats");
    let store = EventStore::new(
        app.pool.clone(),
        AppendSignal::with_nats(client.clone(), &app.nats.prefix),
    );
    let worker = Worker::new(
        store,
        client,
        app.nats.stream(),
        config,
        commandcenter_metrics::Metrics::new(),
    )
    .expect("valid worker configuration");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    TestWorker { handle, shutdown }
}

/// Creates and dispatches a job; returns its id.
async fn submit(app: &TestApp, body: Value, delay_seconds: Option<u32>) -> String {
    let response = app.post("/api/v1/jobs", &body).await;
    assert_eq!(response.status(), 201, "create {body}");
    let job: Value = response.json().await.expect("job");
    let id = job["id"].as_str().expect("id").to_string();
    let path = match delay_seconds {
        Some(delay) => format!("/api/v1/jobs/{id}/dispatch?delay_seconds={delay}"),
        None => format!("/api/v1/jobs/{id}/dispatch"),
    };
    let response = app.post(&path, &json!({})).await;
    assert_eq!(response.status(), 200, "dispatch {id}");
    id
}

async fn job_row(app: &TestApp, id: &str) -> Value {
    sqlx::query_scalar::<_, Option<Value>>("SELECT to_jsonb(j) FROM job_view j WHERE id = $1")
        .bind(id)
        .fetch_optional(&app.pool)
        .await
        .expect("job_view readable")
        .flatten()
        .unwrap_or(Value::Null)
}

/// Polls the job's read-model row until `done` holds.
async fn wait_for(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = job_row(app, id).await;
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never became {what}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_terminal(app: &TestApp, id: &str) -> Value {
    wait_for(app, id, "terminal", |j| j["is_terminal"] == true).await
}

/// The job's events as `(event_type, payload, at)`.
async fn job_events(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    sqlx::query_as(
        "SELECT event_type, payload FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("events readable")
}

fn event_at(payload: &Value) -> DateTime<Utc> {
    let body = payload
        .as_object()
        .and_then(|o| o.values().next())
        .expect("event body");
    serde_json::from_value(body["at"].clone()).expect("at")
}

fn body_of(payload: &Value) -> &Value {
    payload
        .as_object()
        .and_then(|o| o.values().next())
        .expect("event body")
}

/// Runs 1,000 webhook jobs on `workers` workers. A webhook job's body is one delivery,
/// counted by the receiver: "exactly once" is the bodies that ran, not the `JobStarted`
/// events (which the aggregate limits anyway).
async fn run_jobs_on(workers: usize) {
    const JOBS: usize = 1000;
    let app = spawn_app().await;
    let hook = receiver(vec![200]).await;
    let mut running = Vec::new();
    for n in 0..workers {
        running.push(start_worker(&app, fast_config(&app, &format!("worker-{n}"))).await);
    }
    let app = Arc::new(app);
    let ids: Vec<String> = futures::stream::iter(0..JOBS)
        .map(|n| {
            let (app, url) = (app.clone(), hook.url.clone());
            async move {
                submit(
                    &app,
                    json!({"project_id": 1, "job_type": "webhook_delivery",
                           "parameters": {"url": url, "payload": {"n": n}}}),
                    None,
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(ids.len(), JOBS);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let finished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM job_view WHERE status = 'completed'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if finished == JOBS as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{finished} of {JOBS} jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly once: one start and one completion per job, nothing left pending.
    let runs: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FILTER (WHERE event_type = 'JobStarted'), \
                count(*) FILTER (WHERE event_type = 'JobCompleted') \
         FROM events WHERE aggregate_type = 'job' GROUP BY aggregate_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), JOBS);
    for (id, starts, completions) in &runs {
        assert_eq!((*starts, *completions), (1, 1), "job {id}");
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_view WHERE status <> 'completed' OR attempts <> 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    // Every body ran once: one delivery per job, none twice.
    let mut deliveries = vec![0_u32; JOBS];
    for (body, valid) in hook.seen.lock().unwrap().iter() {
        assert!(valid, "signed");
        // The delivery's body is the job's payload.
        let n = serde_json::from_slice::<Value>(body).unwrap()["n"]
            .as_u64()
            .expect("the job's payload") as usize;
        deliveries[n] += 1;
    }
    let wrong: Vec<(usize, u32)> = deliveries
        .iter()
        .enumerate()
        .filter(|(_, d)| **d != 1)
        .map(|(n, d)| (n, *d))
        .collect();
    assert!(
        wrong.is_empty(),
        "jobs delivered other than once: {wrong:?}"
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), JOBS);
    let by_worker: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker_id, count(*) FROM job_view GROUP BY worker_id ORDER BY worker_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(by_worker.len() > 1, "the work was shared: {by_worker:?}");

    for worker in running {
        worker.stop().await;
    }
    Arc::try_unwrap(app).ok().expect("sole owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_run_each_of_1000_jobs_exactly_once() {
    run_jobs_on(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_run_each_of_1000_jobs_exactly_once() {
    run_jobs_on(4).await;
}

/// A 3-second noop job running, with progress, on a worker called `doomed`.
async fn running_on_doomed_worker(app: &TestApp) -> (TestWorker, String) {
    let worker = start_worker(app, fast_config(app, "doomed")).await;
    let id = submit(
        app,
        json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 30, "step_ms": 100}}),
        None,
    )
    .await;
    wait_for(app, &id, "running with progress", |j| {
        j["status"] == "running" && j["progress"].as_i64().unwrap_or(0) > 0
    })
    .await;
    (worker, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_of_a_killed_worker_is_taken_over_after_its_lease_lapses() {
    let app = spawn_app().await;
    let (first, id) = running_on_doomed_worker(&app).await;
    first.kill().await;

    let second = start_worker(&app, fast_config(&app, "survivor")).await;
    let job = wait_terminal(&app, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["worker_id"], "survivor");
    let events = job_events(&app, &id).await;
    let failure = events
        .iter()
        .find(|(t, _)| t == "JobFailed")
        .expect("the lapsed attempt is recorded as failed");
    let error = body_of(&failure.1)["error"].as_str().unwrap();
    assert!(error.contains("lease of worker doomed expired"), "{error}");
    let starters: Vec<&str> = events
        .iter()
        .filter(|(t, _)| t == "JobStarted")
        .map(|(_, p)| body_of(p)["worker_id"].as_str().unwrap())
        .collect();
    assert_eq!(starters, ["doomed", "survivor"]);
    second.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_within_a_second() {
    let app = spawn_app().await;
    let worker = start_worker(&app, fast_config(&app, "w1")).await;
    let id = submit(
        &app,
        json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 100, "step_ms": 100}}),
        None,
    )
    .await;
    wait_for(&app, &id, "running with progress", |j| {
        j["status"] == "running" && j["progress"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    let asked = tokio::time::Instant::now();
    let response = app
        .post(
            &format!("/api/v1/jobs/{id}/cancel"),
            &json!({"reason": "not needed"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["status"], "running",
        "the request does not wait for the worker"
    );
    assert_eq!(answer["cancel_requested"], true);

    let job = wait_terminal(&app, &id).await;
    let waited = asked.elapsed();
    assert_eq!(job["status"], "cancelled", "{job}");
    let events = job_events(&app, &id).await;
    let requested = events
        .iter()
        .position(|(t, _)| t == "JobCancelRequested")
        .expect("cancel requested");
    let cancelled = events
        .iter()
        .position(|(t, _)| t == "JobCancelled")
        .expect("cancelled");
    let took = event_at(&events[cancelled].1) - event_at(&events[requested].1);
    assert!(
        took < chrono::Duration::seconds(1),
        "cancelled {took} after the request (observed after {waited:?})"
    );
    assert!(
        events[requested..]
            .iter()
            .all(|(t, _)| t != "JobProgressReported"),
        "no progress after the cancel request: {events:?}"
    );
    assert_eq!(cancelled, events.len() - 1);
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_and_hard_time_limits_fail_the_job() {
    let app = spawn_app().await;
    let mut config = fast_config(&app, "w1");
    config.limits.set(
        JobType::Noop,
        Limit {
            soft: Duration::from_millis(500),
            hard: Duration::from_millis(1500),
        },
    );
    let worker = start_worker(&app, config).await;
    // Checks for a stop between 50 ms steps: stops at the soft limit.
    let polite = submit(
        &app,
        json!({"project_id": 1, "job_type": "noop", "max_attempts": 1, "parameters": {"steps": 200, "step_ms": 50}}),
        None,
    )
    .await;
    // One 10 s step that cannot be interrupted: aborted at the hard limit.
    let stubborn = submit(
        &app,
        json!({"project_id": 1, "job_type": "noop", "max_attempts": 1, "parameters": {"steps": 1, "step_ms": 10000}}),
        None,
    )
    .await;
    let job = wait_terminal(&app, &polite).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("soft time limit of 0.5 s exceeded"),
        "{error}"
    );
    let job = wait_terminal(&app, &stubborn).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("hard time limit of 1.5 s exceeded"),
        "{error}"
    );
    let duration = job["duration_seconds"].as_f64().unwrap();
    assert!(
        (1.4..10.0).contains(&duration),
        "aborted after {duration} s"
    );
    worker.stop().await;
    app.stop().await;
}

/// A local webhook receiver: answers the statuses of `script` in turn (the last one
/// from then on) and records each request's body and whether its signature was valid.
struct Receiver {
    url: String,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(Bytes, bool)>>>,
    server: JoinHandle<()>,
}

async fn receiver(script: Vec<u16>) -> Receiver {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (calls.clone(), seen.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (calls, seen, script) = (c.clone(), s.clone(), script.clone());
            async move {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(&body);
                let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                let valid = headers.get("x-cc-signature").and_then(|v| v.to_str().ok())
                    == Some(expected.as_str());
                seen.lock().unwrap().push((body, valid));
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let status = script[n.min(script.len() - 1)];
                if !valid {
                    return StatusCode::UNAUTHORIZED;
                }
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Receiver {
        url,
        calls,
        seen,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_signed_and_retried_after_server_errors() {
    let app = spawn_app().await;
    let hook = receiver(vec![500, 500, 200]).await;
    let worker = start_worker(&app, fast_config(&app, "w1")).await;
    let payload = json!({"event": "technology.promoted", "id": 7});
    let id = submit(
        &app,
        json!({"project_id": 1, "job_type": "webhook_delivery", "parameters": {"url": hook.url, "payload": payload}}),
        None,
    )
    .await;
    let job = wait_terminal(&app, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["result"]["status"], 200);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);
    for (body, valid) in hook.seen.lock().unwrap().iter() {
        assert!(valid, "every delivery is signed");
        assert_eq!(serde_json::from_slice::<Value>(body).unwrap(), payload);
    }
    // The signing secret is in no event, and not in the worker's configuration dump.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE strpos(payload::text || metadata::text, $1) > 0",
    )
    .bind(SECRET)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);
    assert!(!format!("{:?}", fast_config(&app, "w1")).contains(SECRET));
    worker.stop().await;
    hook.server.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_backs_off_between_attempts_then_fails() {
    let app = spawn_app().await;
    let always_down = receiver(vec![503]).await;
    let rejecting = receiver(vec![404]).await;
    let worker = start_worker(&app, fast_config(&app, "w1")).await;
    let down = submit(
        &app,
        json!({"project_id": 1, "job_type": "webhook_delivery", "max_attempts": 3, "parameters": {"url": always_down.url}}),
        None,
    )
    .await;
    let rejected = submit(
        &app,
        json!({"project_id": 1, "job_type": "webhook_delivery", "max_attempts": 3, "parameters": {"url": rejecting.url}}),
        None,
    )
    .await;

    let job = wait_terminal(&app, &down).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 3);
    assert!(job["error"].as_str().unwrap().contains("503"), "{job}");
    let events = job_events(&app, &down).await;
    let failures: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "JobFailed")
        .map(|(_, p)| body_of(p))
        .collect();
    assert_eq!(failures.len(), 3);
    let starts: Vec<DateTime<Utc>> = events
        .iter()
        .filter(|(t, _)| t == "JobStarted")
        .map(|(_, p)| event_at(p))
        .collect();
    for (n, failure) in failures.iter().enumerate() {
        let at: DateTime<Utc> = serde_json::from_value(failure["at"].clone()).unwrap();
        if n < 2 {
            // 200 ms after the first failure, 400 ms after the second.
            let retry_at: DateTime<Utc> =
                serde_json::from_value(failure["retry_at"].clone()).unwrap();
            assert_eq!(retry_at - at, chrono::Duration::milliseconds(200 << n));
            assert!(starts[n + 1] >= retry_at, "attempt {} started early", n + 2);
        } else {
            assert!(failure["retry_at"].is_null(), "the last failure gives up");
        }
    }
    assert_eq!(always_down.calls.load(Ordering::SeqCst), 3);

    // A 4xx is not worth retrying: failed at the first attempt.
    let job = wait_terminal(&app, &rejected).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1);
    assert_eq!(rejecting.calls.load(Ordering::SeqCst), 1);
    worker.stop().await;
    always_down.server.abort();
    rejecting.server.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_private_addresses_are_refused_by_default() {
    let app = spawn_app().await;
    let hook = receiver(vec![200]).await;
    let mut config = fast_config(&app, "w1");
    config.webhook_allow_private = false;
    let worker = start_worker(&app, config).await;
    let id = submit(
        &app,
        json!({"project_id": 1, "job_type": "webhook_delivery", "parameters": {"url": hook.url}}),
        None,
    )
    .await;
    let job = wait_terminal(&app, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "not worth retrying");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("private or local address"),
        "{job}"
    );
    assert_eq!(hook.calls.load(Ordering::SeqCst), 0, "nothing was sent");
    worker.stop().await;
    hook.server.abort();
    app.stop().await;
}

async fn technology(app: &TestApp, body: Value) -> Value {
    let response = app.post("/api/v1/technologies", &body).await;
    assert_eq!(response.status(), 201, "{body}");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_artifact_matches_its_sha256_and_the_view() {
    let app = spawn_app().await;
    for (n, title) in ["Faust", "JUCE, the framework", "Web \"Audio\" API"]
        .iter()
        .enumerate()
    {
        technology(
            &app,
            json!({"project_id": 1, "title": title, "tags": ["dsp", format!("t{n}")]}),
        )
        .await;
    }
    technology(&app, json!({"project_id": 2, "title": "Elsewhere"})).await;
    app.wait_caught_up().await;
    let worker = start_worker(&app, fast_config(&app, "w1")).await;

    let json_export = submit(&app, json!({"project_id": 1, "job_type": "export"}), None).await;
    let job = wait_terminal(&app, &json_export).await;
    assert_eq!(job["status"], "completed", "{job}");
    let result = &job["result"];
    assert_eq!(result["rows"], 3);
    let response = app
        .get(&format!("/api/v1/jobs/{json_export}/artifact"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let bytes = response.bytes().await.unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));
    assert_eq!(sha, result["sha256"].as_str().unwrap());
    assert_eq!(etag, format!("\"{sha}\""));
    assert_eq!(bytes.len() as u64, result["bytes"].as_u64().unwrap());
    let exported: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
    let in_view: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT id, title, tags FROM technology_view WHERE project_id = 1 ORDER BY created_at, id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let from_file: Vec<(String, String, Vec<String>)> = exported
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["title"].as_str().unwrap().to_string(),
                serde_json::from_value(t["tags"].clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(from_file, in_view);

    let csv_export = submit(
        &app,
        json!({"project_id": 1, "job_type": "export", "parameters": {"format": "csv"}}),
        None,
    )
    .await;
    let job = wait_terminal(&app, &csv_export).await;
    assert_eq!(job["status"], "completed", "{job}");
    let response = app
        .get(&format!("/api/v1/jobs/{csv_export}/artifact"))
        .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(text.as_bytes())),
        job["result"]["sha256"].as_str().unwrap()
    );
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("id,project_id,title,"));
    assert!(text.contains("\"JUCE, the framework\""));
    assert!(text.contains("\"Web \"\"Audio\"\" API\""));

    // Jobs without a file, or whose file is not written yet.
    let noop = app.create_job().await;
    let noop_id = noop["id"].as_str().unwrap();
    assert_problem(
        app.get(&format!("/api/v1/jobs/{noop_id}/artifact")).await,
        404,
        "",
    )
    .await;
    let pending = app
        .post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "export"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let pending_id = pending["id"].as_str().unwrap();
    app.wait_caught_up().await;
    assert_problem(
        app.get(&format!("/api/v1/jobs/{pending_id}/artifact"))
            .await,
        409,
        "",
    )
    .await;
    assert_problem(app.get("/api/v1/jobs/nope/artifact").await, 404, "").await;
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyses_report_on_the_projects_technologies() {
    let app = spawn_app().await;
    let alpha = technology(
        &app,
        json!({"project_id": 1, "title": "Alpha engine", "status": "implementation", "maturity_level": "alpha", "relevance_score": 90, "priority": 5, "domain": "audio-dsp"}),
    )
    .await;
    technology(
        &app,
        json!({"project_id": 1, "title": "Steady", "status": "research", "maturity_level": "stable", "relevance_score": 50, "priority": 2, "domain": "ai-ml"}),
    )
    .await;
    technology(&app, json!({"project_id": 2, "title": "Other project"})).await;
    let retired = technology(
        &app,
        json!({"project_id": 1, "title": "Retired", "relevance_score": 10, "priority": 1}),
    )
    .await;
    let archived = app
        .patch(
            &format!("/api/v1/technologies/{}", retired["id"].as_str().unwrap()),
            &json!({"status": "archived"}),
        )
        .await;
    assert_eq!(archived.status(), 200);
    app.wait_caught_up().await;
    let worker = start_worker(&app, fast_config(&app, "w1")).await;

    let single = submit(
        &app,
        json!({"project_id": 1, "job_type": "analysis", "parameters": {"top": 1}}),
        None,
    )
    .await;
    let job = wait_terminal(&app, &single).await;
    assert_eq!(job["status"], "completed", "{job}");
    let report = &job["result"];
    assert_eq!(report["technologies"], 3);
    assert_eq!(
        report["by_status"],
        json!({"implementation": 1, "research": 1, "archived": 1})
    );
    assert_eq!(report["by_domain"]["audio-dsp"]["total"], 1);
    // The means leave the archived one out, and say so.
    assert_eq!(report["mean_relevance_score"], 70.0);
    assert_eq!(report["mean_priority"], 3.5);
    assert_eq!(
        report["means_over"],
        json!({"technologies": 2, "excluded": {"archived": 1}})
    );
    assert_eq!(report["stale"]["count"], 0);
    assert_eq!(report["top"]["technologies"][0]["id"], alpha["id"]);
    assert_eq!(report["top"]["technologies"][0]["score"], 90.0);
    assert_eq!(report["top"]["technologies"].as_array().unwrap().len(), 1);
    assert_eq!(report["risks"][0]["flag"], "alpha_in_use");
    assert_eq!(report["risks"][0]["id"], alpha["id"]);

    // A job's results stay in its project: a batch over another project is refused,
    // even for a deployment-wide key.
    assert_problem(
        app.post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "batch_analysis", "parameters": {"project_ids": [1, 2]}}),
        )
        .await,
        422,
        "parameters.project_ids",
    )
    .await;
    let batch = submit(
        &app,
        json!({"project_id": 1, "job_type": "batch_analysis", "parameters": {"project_ids": [1]}}),
        None,
    )
    .await;
    let job = wait_terminal(&app, &batch).await;
    assert_eq!(job["status"], "completed", "{job}");
    let projects = job["result"]["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0]["project_id"], 1);
    assert_eq!(projects[0]["technologies"], 3);
    let steps: Vec<String> = job_events(&app, &batch)
        .await
        .iter()
        .filter(|(t, _)| t == "JobProgressReported")
        .map(|(_, p)| {
            body_of(p)["current_step"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.contains("analysed project 1 (1 of 1)")),
        "{steps:?}"
    );

    // A scheduled analysis runs no earlier than its time.
    let response = app
        .post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "scheduled_analysis"}),
        )
        .await;
    let scheduled: Value = response.json().await.unwrap();
    let scheduled_id = scheduled["id"].as_str().unwrap();
    assert_problem(
        app.post(&format!("/api/v1/jobs/{scheduled_id}/dispatch"), &json!({}))
            .await,
        422,
        "delay_seconds",
    )
    .await;
    let dispatched: Value = app
        .post(
            &format!("/api/v1/jobs/{scheduled_id}/dispatch?delay_seconds=1"),
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let job = wait_terminal(&app, scheduled_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let due: DateTime<Utc> = serde_json::from_value(dispatched["scheduled_for"].clone()).unwrap();
    let started: DateTime<Utc> = serde_json::from_value(job["started_at"].clone()).unwrap();
    assert!(started >= due, "started {started} before {due}");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_unfinished_jobs_to_another_worker() {
    let app = spawn_app().await;
    let mut config = fast_config(&app, "leaving");
    config.shutdown_grace = Duration::from_millis(300);
    let leaving = start_worker(&app, config).await;
    let id = submit(
        &app,
        json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 1, "step_ms": 3000}}),
        None,
    )
    .await;
    wait_for(&app, &id, "running", |j| j["status"] == "running").await;
    leaving.stop().await;
    let events = job_events(&app, &id).await;
    let (last, payload) = events.last().unwrap();
    assert_eq!(last, "JobReleased", "{events:?}");
    assert_eq!(body_of(payload)["worker_id"], "leaving");

    let staying = start_worker(&app, fast_config(&app, "staying")).await;
    let job = wait_terminal(&app, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 2);
    assert_eq!(job["worker_id"], "staying");
    staying.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn serve_runs_a_worker_with_the_service() {
    let app = spawn_app_with(|args| {
        args.no_workers = false;
        args.worker.worker_id = Some("in-process".into());
    })
    .await;
    let id = submit(
        &app,
        json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 3, "step_ms": 10}}),
        None,
    )
    .await;
    let job = wait_terminal(&app, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["worker_id"], "in-process");
    assert_eq!(job["result"], json!({"steps": 3}));
}

#[tokio::test]
async fn job_parameters_are_checked_when_the_job_is_created() {
    let app = spawn_app().await;
    for (body, field) in [
        (
            json!({"project_id": 1, "job_type": "transcode"}),
            "job_type",
        ),
        (
            json!({"project_id": 1, "job_type": "export", "parameters": {"format": "xml"}}),
            "parameters.format",
        ),
        (
            json!({"project_id": 1, "job_type": "batch_export", "parameters": {}}),
            "parameters.project_ids",
        ),
        (
            json!({"project_id": 1, "job_type": "webhook_delivery", "parameters": {"url": "file:///etc/passwd"}}),
            "parameters.url",
        ),
        (
            json!({"project_id": 1, "job_type": "analysis", "parameters": {"stale_days": 0}}),
            "parameters.stale_days",
        ),
        (
            json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 0}}),
            "parameters.steps",
        ),
    ] {
        assert_problem(app.post("/api/v1/jobs", &body).await, 422, field).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_noop_job_shows_its_last_step() {
    let app = spawn_app().await;
    let worker = start_worker(&app, fast_config(&app, "w1")).await;
    let id = submit(
        &app,
        json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 5, "step_ms": 20}}),
        None,
    )
    .await;
    let job = wait_terminal(&app, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["current_step"], "step 5 of 5", "{job}");
    assert_eq!(job["progress"], 100, "{job}");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_sweeper_cannot_expire_never_hide_a_lapsed_lease() {
    let app = spawn_app().await;
    let (first, id) = running_on_doomed_worker(&app).await;
    // More phantom `running` rows than one sweep takes, with leases that lapsed long
    // before the real one: the event store knows none of them, so none can be expired.
    sqlx::query(
        "INSERT INTO job_view \
         SELECT (jsonb_populate_record(NULL::job_view, to_jsonb(j) || jsonb_build_object( \
                   'id', 'phantom-' || g, \
                   'lease_until', now() - interval '1 hour', \
                   'created_position', lpad(g::text, 32, '0')))).* \
           FROM job_view j, generate_series(1, 250) g WHERE j.id = $1",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    first.kill().await;

    let second = start_worker(&app, fast_config(&app, "survivor")).await;
    let job = wait_terminal(&app, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 2);
    second.stop().await;
    app.stop().await;
}
