//! Metrics, readiness under lag, correlation ids end to end, and the Grafana dashboard
//! against the exported metric names.

use std::time::Duration;

use commandcenter_projections::{Projector, ProjectorConfig, TechnologyView};
use commandcenter_relay::HEADER_CORRELATION_ID;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::helpers::{nats_url, spawn_app, spawn_app_with, TestApp};

/// The value of the sample `name{labels}` in `/metrics` (0 when absent).
pub(crate) async fn sample(app: &TestApp, name_and_labels: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

async fn wait_for_sample(app: &TestApp, name_and_labels: &str, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let value = sample(app, name_and_labels).await;
        if value == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name_and_labels} is {value}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_what_a_scripted_session_did() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.create_technology(&format!("Counted {i}")).await;
    }
    let duplicate = app
        .post(
            "/api/v1/technologies",
            &json!({"project_id": 1, "title": "counted 0"}),
        )
        .await;
    assert_eq!(duplicate.status(), 409);
    let invalid = app
        .post(
            "/api/v1/technologies",
            &json!({"project_id": 1, "title": ""}),
        )
        .await;
    assert_eq!(invalid.status(), 422);
    app.wait_caught_up().await;
    for _ in 0..2 {
        assert_eq!(
            app.get("/api/v1/technologies?project_id=1").await.status(),
            200
        );
    }
    let url = app.ws_url("/api/v1/ws", &app.admin_key);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket
        .send(Message::text(
            json!({"subscribe": ["technologies:1"]}).to_string(),
        ))
        .await
        .unwrap();
    let _subscribed = socket.next().await.unwrap().unwrap();
    wait_for_sample(&app, "websocket_connections_active", 1.0).await;
    app.create_technology("Pushed").await;
    let _change = socket.next().await.unwrap().unwrap();
    socket.close(None).await.unwrap();
    wait_for_sample(&app, "websocket_connections_active", 0.0).await;

    let route = "/api/v1/technologies";
    assert_eq!(
        sample(
            &app,
            &format!("http_requests_total{{method=\"POST\",route=\"{route}\",status=\"201\"}}")
        )
        .await,
        4.0
    );
    assert_eq!(
        sample(
            &app,
            &format!("http_requests_total{{method=\"POST\",route=\"{route}\",status=\"409\"}}")
        )
        .await,
        1.0
    );
    assert_eq!(
        sample(
            &app,
            &format!("http_requests_total{{method=\"POST\",route=\"{route}\",status=\"422\"}}")
        )
        .await,
        1.0
    );
    assert_eq!(
        sample(
            &app,
            &format!("http_requests_total{{method=\"GET\",route=\"{route}\",status=\"200\"}}")
        )
        .await,
        2.0
    );
    assert_eq!(
        sample(
            &app,
            &format!("http_request_duration_seconds_count{{method=\"GET\",route=\"{route}\"}}")
        )
        .await,
        2.0
    );
    assert_eq!(sample(&app, "commands_total{aggregate=\"technology\",command=\"CreateTechnology\",outcome=\"accepted\"}").await, 4.0);
    assert_eq!(sample(&app, "commands_total{aggregate=\"technology\",command=\"CreateTechnology\",outcome=\"conflict\"}").await, 1.0);
    assert_eq!(
        sample(
            &app,
            "events_appended_total{aggregate=\"technology\",event_type=\"TechnologyCreated\"}"
        )
        .await,
        4.0
    );
    assert_eq!(sample(&app, "append_duration_seconds_count").await, 4.0);
    assert_eq!(
        sample(&app, "query_cache_misses_total").await
            + sample(&app, "query_cache_hits_total").await,
        2.0
    );
    assert_eq!(
        sample(&app, "websocket_messages_sent_total").await,
        2.0,
        "subscribed + one change"
    );
    app.wait_caught_up().await;
    wait_for_sample(&app, "relay_published_total", 4.0).await;
    wait_for_sample(
        &app,
        "projection_lag_events{projection=\"technology_view\"}",
        0.0,
    )
    .await;
}

#[tokio::test]
async fn job_outcomes_are_counted() {
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
    app.patch(&path, &json!({"status": "failed", "error": "boom"}))
        .await;
    let done = app.create_job().await;
    let done_path = format!("/api/v1/jobs/{}", done["id"].as_str().unwrap());
    app.post(&format!("{done_path}/dispatch"), &json!({})).await;
    app.patch(&done_path, &json!({"status": "running"})).await;
    app.patch(&done_path, &json!({"status": "completed"})).await;
    assert_eq!(
        sample(&app, "jobs_total{job_type=\"noop\",outcome=\"failed\"}").await,
        1.0
    );
    assert_eq!(
        sample(&app, "jobs_total{job_type=\"noop\",outcome=\"completed\"}").await,
        1.0
    );
    assert_eq!(
        sample(&app, "job_duration_seconds_count{job_type=\"noop\"}").await,
        2.0
    );
}

#[tokio::test]
async fn a_stopped_projector_shows_as_lag_and_unreadiness_until_it_returns() {
    let app = spawn_app_with(|args| {
        args.no_projectors = true;
        args.ready_max_lag_events = 2;
    })
    .await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    for i in 0..5 {
        app.create_technology(&format!("Unprojected {i}")).await;
    }
    wait_for_sample(
        &app,
        "projection_lag_events{projection=\"technology_view\"}",
        5.0,
    )
    .await;
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["not_ready"], json!(["lag"]));
    assert!(body["checks"]["lag"]["reason"]
        .as_str()
        .unwrap()
        .contains("technology_view is 5 events"));

    let client = async_nats::connect(nats_url()).await.unwrap();
    let token = CancellationToken::new();
    let projector = Projector::new(
        TechnologyView,
        app.pool.clone(),
        client,
        app.nats.stream(),
        ProjectorConfig::default(),
    );
    let handle = tokio::spawn(projector.run(token.clone()));
    wait_for_sample(
        &app,
        "projection_lag_events{projection=\"technology_view\"}",
        0.0,
    )
    .await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_correlation_id_follows_a_command_to_its_events_stream_and_push() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    app.post(&format!("{path}/dispatch"), &json!({})).await;
    app.patch(&path, &json!({"status": "running"})).await;
    app.wait_caught_up().await;
    let url = app.ws_url(
        &format!("/api/v1/jobs/ws/{}", job["id"].as_str().unwrap()),
        &app.admin_key,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let _connected = socket.next().await.unwrap().unwrap();

    let response = app
        .client
        .patch(app.url(&path))
        .header("x-correlation-id", "corr-42")
        .json(&json!({"progress": 40}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let history: Value = app
        .get(&format!("{path}/history"))
        .await
        .json()
        .await
        .unwrap();
    let last = history["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["metadata"]["correlation_id"], "corr-42");

    let pushed = loop {
        let Message::Text(text) = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "progress" && message["progress"] == 40 {
            break message;
        }
    };
    assert_eq!(pushed["correlation_id"], "corr-42");

    app.wait_caught_up().await;
    let client = async_nats::connect(nats_url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream(app.nats.stream().name())
        .await
        .unwrap();
    let last_sequence = stream.get_info().await.unwrap().state.last_sequence;
    let message = stream.get_raw_message(last_sequence).await.unwrap();
    assert_eq!(
        message.headers.get(HEADER_CORRELATION_ID).unwrap().as_str(),
        "corr-42"
    );

    // A W3C traceparent's trace id stands in when no X-Correlation-Id is given.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    app.client
        .patch(app.url(&path))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"progress": 60}))
        .send()
        .await
        .unwrap();
    let history: Value = app
        .get(&format!("{path}/history"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        history["events"].as_array().unwrap().last().unwrap()["metadata"]["correlation_id"],
        trace
    );
}

/// Metric names a PromQL expression selects: identifiers followed by `{`, with the
/// histogram suffixes taken off.
fn selected_metrics(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut start = None;
    for (i, b) in bytes.iter().enumerate() {
        let ident = b.is_ascii_alphanumeric() || *b == b'_';
        match (ident, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if *b == b'{' {
                    names.push(expr[s..i].to_string());
                }
                start = None;
            }
            _ => {}
        }
    }
    names
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/commandcenter.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let exported = commandcenter_metrics::Metrics::new().names();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = selected_metrics(expr);
            assert!(!names.is_empty(), "{expr} selects a metric");
            for name in names {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix)
                            .filter(|b| exported.iter().any(|e| e == b))
                    })
                    .unwrap_or(&name);
                assert!(
                    exported.iter().any(|e| e == base),
                    "{name} in {expr:?} is exported"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 20);
    // And the dashboard covers every metric the service exports.
    for name in &exported {
        let covered = dashboard.to_string().contains(name.as_str());
        assert!(covered, "{name} has a panel");
    }
}
