//! API keys, roles and project isolation (issue 8), by theme: `routes` (a matrix over
//! every route of the router, for each key role and project), `projects` (cross-project
//! isolation by any path), `keys` (management, revocation, the first admin key) and
//! `limits` (rate, input size, socket and subscription budgets). Shared here: the two
//! projects and the helpers that create data, read sockets and wait for a condition.

use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use crate::helpers::TestApp;

mod keys;
mod limits;
mod projects;
mod routes;

/// The project the scoped keys belong to, and another one.
const OWN: i64 = 1;
const FOREIGN: i64 = 2;

/// Checks `condition` every 50 ms until it holds; fails, naming `what`, after `within`.
async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(app: &TestApp, path: &str, body: Value) -> String {
    let response = app.post(path, &body).await;
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

async fn technology(app: &TestApp, project: i64) -> String {
    let title = format!("matrix {}", uuid::Uuid::now_v7());
    create(
        app,
        "/api/v1/technologies",
        json!({"project_id": project, "title": title}),
    )
    .await
}

async fn job(app: &TestApp, project: i64, job_type: &str) -> String {
    let parameters = if job_type == "export" {
        json!({"format": "json"})
    } else {
        json!({})
    };
    create(
        app,
        "/api/v1/jobs",
        json!({"project_id": project, "job_type": job_type, "parameters": parameters}),
    )
    .await
}

/// The next JSON text message, skipping pings.
async fn next_json<S>(socket: &mut S) -> Value
where
    S: futures::Stream<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin,
{
    let deadline = Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout(deadline, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("message");
        if let tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn ask(socket: &mut Socket, request: Value) -> Value {
    socket
        .send(tungstenite::Message::Text(request.to_string().into()))
        .await
        .unwrap();
    next_json(socket).await
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
