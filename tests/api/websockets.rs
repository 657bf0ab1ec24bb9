//! WebSocket push: the job socket's contract, the multiplexed socket with replay, and a
//! slow reader told it lagged.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(app: &TestApp, path: &str) -> Socket {
    tokio_tungstenite::connect_async(app.ws_url(path, &app.admin_key))
        .await
        .expect("socket opens")
        .0
}

/// The next JSON message, skipping pings.
pub(crate) async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")?
            .ok()?;
        match message {
            Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn the_job_socket_follows_a_job_from_connected_to_completed() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let id = job["id"].as_str().unwrap().to_string();
    app.wait_caught_up().await;
    let mut socket = connect(&app, &format!("/api/v1/jobs/ws/{id}")).await;
    let connected = next_json(&mut socket).await.unwrap();
    assert_eq!(
        connected,
        json!({"type": "connected", "job_id": id, "status": "pending", "progress": 0, "current_step": null})
    );

    let path = format!("/api/v1/jobs/{id}");
    app.post(&format!("{path}/dispatch"), &json!({})).await;
    app.patch(&path, &json!({"status": "running"})).await;
    for progress in [10, 50, 90] {
        app.patch(
            &path,
            &json!({"progress": progress, "current_step": format!("at {progress}")}),
        )
        .await;
    }
    app.patch(
        &path,
        &json!({"status": "completed", "result": {"ok": true}}),
    )
    .await;

    let mut progress_seen = Vec::new();
    let completed = loop {
        let message = next_json(&mut socket)
            .await
            .expect("messages until completed");
        match message["type"].as_str().unwrap() {
            "progress" => {
                assert_eq!(message["job_id"], id.as_str());
                progress_seen.push(message["progress"].as_i64().unwrap());
            }
            "job_update" => assert_eq!(message["job"]["id"], id.as_str()),
            "job_dispatched" => assert_eq!(message["job_id"], id.as_str()),
            "completed" => break message,
            other => panic!("unexpected {other}: {message}"),
        }
    };
    assert_eq!(
        completed,
        json!({"type": "completed", "job_id": id, "status": "completed", "result": {"ok": true}, "error": null})
    );
    assert!(
        progress_seen.windows(2).all(|w| w[0] <= w[1]),
        "progress in order: {progress_seen:?}"
    );
    assert_eq!(progress_seen.last(), Some(&100));
    assert!(
        next_json(&mut socket).await.is_none(),
        "the socket closes after completed"
    );
}

#[tokio::test]
async fn an_unknown_job_closes_the_socket_with_1008() {
    let app = spawn_app().await;
    let mut socket = connect(&app, &format!("/api/v1/jobs/ws/{}", uuid::Uuid::now_v7())).await;
    let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match message {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn the_multiplexed_socket_pushes_subscribed_topics_and_replays_since_a_position() {
    let app = spawn_app().await;
    let before = app.create_technology("Before").await;
    app.wait_caught_up().await;
    let mut socket = connect(&app, "/api/v1/ws").await;
    socket
        .send(Message::text(
            json!({"subscribe": ["technologies:1", "jobs:2"]}).to_string(),
        ))
        .await
        .unwrap();
    let subscribed = next_json(&mut socket).await.unwrap();
    assert_eq!(subscribed["type"], "subscribed");

    app.create_technology("Pushed").await;
    app.post(
        "/api/v1/technologies",
        &json!({"project_id": 3, "title": "Elsewhere"}),
    )
    .await;
    let job: Value = app
        .post(
            "/api/v1/jobs",
            &json!({"project_id": 2, "job_type": "noop"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let mut topics = Vec::new();
    while topics.len() < 2 {
        let message = next_json(&mut socket).await.unwrap();
        assert_eq!(message["type"], "change");
        topics.push((
            message["topic"].as_str().unwrap().to_string(),
            message["row"]["id"].clone(),
        ));
    }
    assert!(topics.contains(&("jobs:2".to_string(), job["id"].clone())));
    assert!(topics.iter().any(|(t, _)| t == "technologies:1"));
    assert!(
        topics.iter().all(|(t, _)| t != "technologies:3"),
        "no other project's rows"
    );

    // A client that was away replays what changed after its last position.
    let mut late = connect(&app, "/api/v1/ws").await;
    late.send(Message::text(
        json!({"subscribe": ["technologies:1"], "since_position": before["position"]}).to_string(),
    ))
    .await
    .unwrap();
    let replayed = next_json(&mut late).await.unwrap();
    assert_eq!(replayed["replayed"], true);
    assert_eq!(replayed["row"]["title"], "Pushed");
    assert_eq!(next_json(&mut late).await.unwrap()["type"], "subscribed");

    late.send(Message::text(
        json!({"subscribe": ["planets:1"]}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut late).await.unwrap()["type"], "error");
}

#[tokio::test]
async fn a_slow_reader_is_told_it_lagged_and_can_resume() {
    let app = spawn_app_with(|args| args.query.socket_queue = 4).await;
    let mut socket = connect(&app, "/api/v1/ws").await;
    socket
        .send(Message::text(
            json!({"subscribe": ["technologies:1"]}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "subscribed");
    // The reader stops reading while far more changes than its queue holds arrive, each
    // a row of ~57 KB, so the socket's own buffers (several MB on loopback) fill too.
    let padding = "x".repeat(19_000);
    for i in 0..300 {
        app.post(
            "/api/v1/technologies",
            &json!({"project_id": 1, "title": format!("Flood {i}"), "description": padding,
                    "notes": padding, "use_cases": padding}),
        )
        .await;
    }
    app.wait_caught_up().await;
    let mut changes = 0;
    let lagged = loop {
        let message = next_json(&mut socket).await.expect("messages until lagged");
        match message["type"].as_str().unwrap() {
            "change" => changes += 1,
            "lagged" => break message,
            other => panic!("unexpected {other}"),
        }
    };
    assert!(
        changes < 300,
        "some changes were dropped rather than buffered: {changes}"
    );
    // Resuming from the lagged position replays what was missed.
    socket
        .send(Message::text(
            json!({"subscribe": ["technologies:1"], "since_position": lagged["position"]})
                .to_string(),
        ))
        .await
        .unwrap();
    let mut replayed = 0;
    loop {
        let message = next_json(&mut socket).await.unwrap();
        if message["type"] == "subscribed" {
            break;
        }
        if message["replayed"] == true {
            replayed += 1;
        }
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM technology_view WHERE position > $1")
        .bind(lagged["position"].as_str().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(replayed as i64, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_socket_opened_before_the_job_is_projected_gets_connected_and_every_change() {
    // No projector yet: the job is in the event store, its row is not.
    let app = spawn_app_with(|args| args.no_projectors = true).await;
    let job = app.create_job().await;
    let id = job["id"].as_str().unwrap().to_string();
    let mut socket = connect(&app, &format!("/api/v1/jobs/ws/{id}")).await;
    let mut multiplexed = connect(&app, "/api/v1/ws").await;
    multiplexed
        .send(Message::Text(
            json!({"subscribe": [format!("job:{id}")]})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let subscribed = next_json(&mut multiplexed).await.unwrap();
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");

    // Now the row is projected: the socket that waited says connected, then follows.
    let client = async_nats::connect(crate::helpers::nats_url())
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let projector = tokio::spawn(
        commandcenter_projections::Projector::new(
            commandcenter_projections::JobView,
            app.pool.clone(),
            client,
            app.nats.stream(),
            commandcenter_projections::ProjectorConfig::default(),
        )
        .run(stop.clone()),
    );
    let connected = next_json(&mut socket)
        .await
        .expect("connected, not refused");
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(connected["status"], "pending");
    let change = next_json(&mut multiplexed).await.unwrap();
    assert_eq!(change["topic"], format!("job:{id}"), "{change}");

    let path = format!("/api/v1/jobs/{id}");
    app.post(&format!("{path}/dispatch"), &json!({})).await;
    app.patch(&path, &json!({"status": "running", "progress": 40}))
        .await;
    loop {
        let message = next_json(&mut socket).await.expect("progress");
        if message["type"] != "progress" {
            assert!(
                ["job_update", "job_dispatched"].contains(&message["type"].as_str().unwrap()),
                "{message}"
            );
            continue;
        }
        if message["progress"] == 40 {
            break;
        }
    }
    stop.cancel();
    projector.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_job_socket_for_a_deleted_job_closes_1008() {
    let app = spawn_app().await;
    let job = app.create_job().await;
    let id = job["id"].as_str().unwrap().to_string();
    app.wait_caught_up().await;
    let deleted = app.delete(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(deleted.status(), 204);
    app.wait_caught_up().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(
        app.ws_url(&format!("/api/v1/jobs/ws/{id}"), &app.admin_key),
    )
    .await
    .expect("socket opens");
    let closed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("closed at once");
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a 1008 close, got {other:?}"),
    }
}
