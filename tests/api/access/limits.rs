//! Per-key limits: request rate, input size, sockets and subscriptions.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite;

use super::{ask, wait_until, OWN};
use crate::helpers::{assert_problem, spawn_app_with};

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|args| {
        args.access.rate_limit_per_second = 2.0;
        args.access.rate_limit_burst = 5;
    })
    .await;
    let key = app.key(Some(OWN), "reader").await;
    let client = app.client_with(&key);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = client.get(app.url("/api/v1/jobs")).send().await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            assert_problem(response, 429, "").await;
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| s.is_success()).count(),
        5,
        "{statuses:?}"
    );
    // Another key has its own bucket.
    let other = app.client_with(&app.key(Some(OWN), "reader").await);
    assert_eq!(
        other
            .get(app.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The first key's bucket refills: admitted again well within a deadline (refused
    // requests take nothing from it). The refill rate itself is specified by the guard's
    // unit tests, on a fake clock.
    wait_until(Duration::from_secs(5), "the bucket refills", || async {
        let status = client
            .get(app.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap()
            .status();
        assert!(matches!(
            status,
            StatusCode::OK | StatusCode::TOO_MANY_REQUESTS
        ));
        status == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn oversized_deep_and_long_input_is_refused_before_anything_is_written() {
    let app = spawn_app_with(|args| {
        args.max_body_bytes = 4096;
        args.access.max_json_depth = 8;
        args.access.max_json_string_chars = 1000;
    })
    .await;
    let big = json!({"project_id": 1, "title": "Big", "description": "x".repeat(5000)});
    assert_problem(app.post("/api/v1/technologies", &big).await, 413, "body").await;
    let mut deep = json!(1);
    for _ in 0..12 {
        deep = json!([deep]);
    }
    let nested = json!({"project_id": 1, "job_type": "noop", "parameters": {"x": deep}});
    let problem = assert_problem(
        app.post("/api/v1/jobs", &nested).await,
        422,
        "parameters.x[0][0][0][0][0][0]",
    )
    .await;
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("nested deeper than 8"));
    let long = json!({"project_id": 1, "job_type": "noop", "tags": ["y".repeat(1001)]});
    assert_problem(app.post("/api/v1/jobs", &long).await, 422, "tags[0]").await;
    for path in [
        "/api/v1/jobs?limit=1001",
        "/api/v1/technologies?limit=5000",
        "/api/v1/events?limit=1001",
    ] {
        let response = app.get(path).await;
        let status = response.status().as_u16();
        assert!(status == 400 || status == 422, "{path}: {status}");
        assert_problem(response, status, "limit").await;
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_key_has_a_bounded_number_of_sockets() {
    let app = spawn_app_with(|args| args.access.max_sockets_per_key = 2).await;
    let key = app.key(Some(OWN), "reader").await;
    let first = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    let _second = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    match tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("third socket: {:?}", other.map(|_| ())),
    }
    drop(first);
    // The slot comes back once the server sees the first socket gone.
    wait_until(Duration::from_secs(5), "the slot comes back", || async {
        tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn socket_subscriptions_are_counted_per_key_across_its_sockets() {
    let app = spawn_app_with(|args| args.access.max_subscriptions_per_key = 3).await;
    let key = app.key(Some(OWN), "reader").await;
    let (mut first, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    let (mut second, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    let jobs = format!("jobs:{OWN}");
    let technologies = format!("technologies:{OWN}");
    let reply = ask(&mut first, json!({"subscribe": [jobs, technologies]})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    // Re-subscribing to what a socket holds costs nothing; swapping a topic for itself
    // frees nothing.
    let reply = ask(
        &mut first,
        json!({"subscribe": [jobs], "unsubscribe": [jobs]}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let job = app.create_job().await;
    let job_topic = format!("job:{}", job["id"].as_str().unwrap());
    let reply = ask(&mut second, json!({"subscribe": [job_topic]})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    // The key's fourth subscription, on either socket, is refused.
    let reply = ask(&mut second, json!({"subscribe": [jobs]})).await;
    assert_eq!(reply["type"], "error", "{reply}");
    let reply = ask(
        &mut first,
        json!({"subscribe": [jobs, technologies, job_topic]}),
    )
    .await;
    assert_eq!(reply["type"], "error", "{reply}");
    // Giving one back makes room; closing a socket gives back all it held.
    let reply = ask(&mut first, json!({"unsubscribe": [technologies]})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let reply = ask(&mut second, json!({"subscribe": [technologies]})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = ask(&mut second, json!({"subscribe": [jobs]})).await;
        if reply["type"] == "subscribed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
