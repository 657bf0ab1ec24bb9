//! `Idempotency-Key` replay and mismatch, `If-Match` preconditions.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn same_key_same_body_replays_the_first_response_and_appends_nothing() {
    let app = spawn_app().await;
    let body = json!({"project_id": 1, "title": "Csound"});
    let send = || {
        app.client
            .post(app.url("/api/v1/technologies"))
            .header("idempotency-key", "create-csound-1")
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_position = first.headers()["x-cc-position"].clone();
    let first_body: Value = first.json().await.unwrap();

    let second = send().await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.headers()["x-cc-position"], first_position);
    let second_body: Value = second.json().await.unwrap();
    assert_eq!(first_body, second_body);
    assert_eq!(app.stored_events().await.len(), 1);
}

#[tokio::test]
async fn same_key_with_another_body_is_refused() {
    let app = spawn_app().await;
    let send = |title: &'static str| {
        app.client
            .post(app.url("/api/v1/technologies"))
            .header("idempotency-key", "k-1")
            .json(&json!({"project_id": 1, "title": title}))
            .send()
    };
    assert_eq!(send("One").await.unwrap().status(), 201);
    assert_problem(send("Two").await.unwrap(), 422, "Idempotency-Key").await;
    assert_eq!(app.stored_events().await.len(), 1);
}

#[tokio::test]
async fn concurrent_duplicates_with_one_key_append_once() {
    let app = spawn_app().await;
    let body = json!({"project_id": 1, "title": "Pure Data"});
    let requests = (0..8).map(|_| {
        app.client
            .post(app.url("/api/v1/technologies"))
            .header("idempotency-key", "pd")
            .json(&body)
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut bodies = Vec::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 201);
        bodies.push(response.json::<Value>().await.unwrap());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every duplicate sees the first answer"
    );
    assert_eq!(app.stored_events().await.len(), 1);
}

#[tokio::test]
async fn idempotent_no_op_and_delete_replay_too() {
    let app = spawn_app().await;
    let created = app.create_technology("Max/MSP").await;
    let path = format!("/api/v1/technologies/{}", created["id"].as_str().unwrap());
    let delete = || {
        app.client
            .delete(app.url(&path))
            .header("idempotency-key", "del")
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), 204);
    let replay = delete().await.unwrap();
    assert_eq!(replay.status(), 204, "a retried delete is not a 404");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(app.stored_events().await.len(), 2);
}

#[tokio::test]
async fn malformed_idempotency_key_is_a_bad_request() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/technologies"))
        .header("idempotency-key", "x".repeat(300))
        .json(&json!({"project_id": 1, "title": "A"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "Idempotency-Key").await;
    assert!(app.stored_events().await.is_empty());
}

#[tokio::test]
async fn stale_if_match_is_a_precondition_failure() {
    let app = spawn_app().await;
    let created = app.create_technology("Rust").await;
    let path = format!("/api/v1/technologies/{}", created["id"].as_str().unwrap());
    let patch = |if_match: &'static str, notes: &'static str| {
        app.client
            .patch(app.url(&path))
            .header("if-match", if_match)
            .json(&json!({"notes": notes}))
            .send()
    };
    let ok = patch("\"1\"", "first").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["etag"], "\"2\"");
    let stale = assert_problem(patch("\"1\"", "second").await.unwrap(), 412, "If-Match").await;
    assert_eq!(stale["current_version"], 2);
    assert_problem(patch("banana", "third").await.unwrap(), 400, "If-Match").await;
    assert_eq!(patch("2", "fourth").await.unwrap().status(), 200);
    assert_eq!(app.stored_events().await.len(), 3);
}
