//! `/health/live` (the process answers) and `/health/ready` (PostgreSQL reachable,
//! migrations applied, NATS connected, relay and read models within the lag bound, no read
//! model stopped at a gap it cannot fill),
//! each with a JSON body naming what is not ready.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::database::migrations_applied;

/// What readiness checks need.
#[derive(Clone)]
pub struct HealthState {
    /// The primary pool.
    pub pool: PgPool,
    /// The NATS client.
    pub nats: async_nats::Client,
    /// The event stream, to name the relay's checkpoint.
    pub stream: commandcenter_relay::EventStream,
    /// The most committed events the relay or a read model may lag behind.
    pub max_lag_events: i64,
}

/// The health routes, documented.
pub fn api() -> OpenApiRouter<HealthState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(health))
}

/// The answer of `/health/live` (a schema only: written with `json!`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Liveness {
    /// Always `live`.
    status: String,
}

/// The answer of `/health/ready`, ready or not (a schema only: written with `json!`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(value_type = ReadinessStatus)]
    status: String,
    /// The checks that failed: `postgres`, `nats`, `lag`, `gaps`.
    not_ready: Vec<String>,
    /// Each check's outcome.
    checks: ReadinessChecks,
}

/// Whether the service is ready.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum ReadinessStatus {
    /// Every check passed.
    Ready,
    /// At least one did not.
    NotReady,
}

/// The readiness checks.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ReadinessChecks {
    /// PostgreSQL reachable, migrations applied.
    postgres: Check,
    /// NATS connected.
    nats: Check,
    /// The relay and read models within the lag bound.
    lag: Check,
    /// No read model stopped at a gap.
    gaps: Check,
}

/// One readiness check.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Check {
    /// Whether it passed.
    ok: bool,
    /// Why not, when it did not.
    #[schema(required = false)]
    reason: Option<String>,
}

#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, description = "The process answers", body = Liveness)))]
async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /health`: the previous API's health route, answered as `/health/ready`.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "Ready (as /health/ready)", body = Readiness), (status = 503, description = "Not ready; the body names what is not", body = Readiness)))]
async fn health(state: State<HealthState>) -> Response {
    ready(state).await
}

#[utoipa::path(get, path = "/health/ready", tag = "operations", responses((status = 200, description = "PostgreSQL reachable, migrations applied, NATS connected, lag within bound, no read model stopped at a gap", body = Readiness), (status = 503, description = "Not ready; the body names what is not", body = Readiness)))]
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
    let report = commandcenter_projections::status(&state.pool, &state.stream).await;
    let gaps = match &report {
        Ok(report) => {
            let open: Vec<String> = report
                .projections
                .iter()
                .filter_map(|l| l.open_gap.as_ref().map(|gap| format!("{}: {gap}", l.name)))
                .collect();
            if open.is_empty() {
                Ok(())
            } else {
                Err(open.join("; "))
            }
        }
        Err(err) => Err(format!("cannot read gaps: {err}")),
    };
    let lag = match report {
        Ok(report) => {
            let behind: Vec<String> = std::iter::once(&report.relay)
                .chain(&report.projections)
                .filter(|l| l.lag_events > state.max_lag_events)
                .map(|l| {
                    format!(
                        "{} is {} events ({:.1} s) behind",
                        l.name, l.lag_events, l.lag_seconds
                    )
                })
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind.join("; "))
            }
        }
        Err(err) => Err(format!("cannot read lag: {err}")),
    };
    let check = |r: &Result<(), String>| match r {
        Ok(()) => json!({ "ok": true }),
        Err(reason) => json!({ "ok": false, "reason": reason }),
    };
    let not_ready: Vec<&str> = [
        ("postgres", &postgres),
        ("nats", &nats),
        ("lag", &lag),
        ("gaps", &gaps),
    ]
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
        "checks": {
            "postgres": check(&postgres),
            "nats": check(&nats),
            "lag": check(&lag),
            "gaps": check(&gaps),
        },
    });
    (status, Json(body)).into_response()
}
