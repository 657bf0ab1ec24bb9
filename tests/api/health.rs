//! Liveness and readiness.

use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn ready_when_postgres_nats_and_migrations_are() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["postgres"]["ok"], true);
    assert_eq!(body["checks"]["nats"]["ok"], true);
}

#[tokio::test]
async fn not_ready_without_nats_and_says_so() {
    // Nothing listens on this port: the service starts, but is not ready.
    let app = spawn_app_with(|args| args.nats.nats_url = "nats://127.0.0.1:1".into()).await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["not_ready"], serde_json::json!(["nats"]));
    // Commands still work: NATS only carries wake-ups on the write path.
    app.create_technology("Offline").await;
}
