//! `/health/live` (the process answers) and `/health/ready` (PostgreSQL reachable,
//! migrations applied, NATS connected), each with a JSON body naming what is not ready.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;

use crate::database::migrations_applied;

/// What readiness checks need.
#[derive(Clone)]
pub struct HealthState {
    /// The primary pool.
    pub pool: PgPool,
    /// The NATS client.
    pub nats: async_nats::Client,
}

/// The health routes.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(state)
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

async fn ready(State(state): State<HealthState>) -> Response {
    let postgres = match migrations_applied(&state.pool).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("migrations pending".to_string()),
        Err(err) => Err(format!("unreachable: {err}")),
    };
    let nats = match state.nats.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        other => Err(format!("not connected ({other:?})")),
    };
    let check = |r: &Result<(), String>| match r {
        Ok(()) => json!({ "ok": true }),
        Err(reason) => json!({ "ok": false, "reason": reason }),
    };
    let not_ready: Vec<&str> = [("postgres", &postgres), ("nats", &nats)]
        .into_iter()
        .filter(|(_, r)| r.is_err())
        .map(|(name, _)| name)
        .collect();
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if not_ready.is_empty() { "ready" } else { "not_ready" },
        "not_ready": not_ready,
        "checks": { "postgres": check(&postgres), "nats": check(&nats) },
    });
    (status, Json(body)).into_response()
}
