//! `GET /api/v1/audit/verify`: recomputes the hash chains (of one project, or of the
//! whole store with the latest checkpoint) and reports every broken link.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use commandcenter_event_store::audit::{verify, VerifyScope};
use serde::Deserialize;
use serde_json::json;

use crate::history::{number, position};
use crate::AuditState;
use commandcenter_api_error::ApiError;

/// The query of `GET /api/v1/audit/verify`.
#[derive(Debug, Deserialize)]
pub struct VerifyQuery {
    project_id: Option<String>,
    from_position: Option<String>,
}

/// `GET /api/v1/audit/verify?project_id=P&from_position=T` → 200 with the report
/// (`passed`, events checked, broken links with aggregate, sequence, position and
/// reason, and the latest checkpoint's check when the whole store was verified).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", params(("project_id" = Option<i64>, Query, minimum = 1, description = "Only this project's aggregates (without it: the whole store and the latest checkpoint)"), ("from_position" = Option<String>, Query, pattern = "^[0-9a-fA-F]{16}[0-7][0-9a-fA-F]{15}$", description = "Only links from this position on")), responses((status = 200, description = "{passed, events_checked, aggregates, broken_count, broken: [{aggregate_type, aggregate_id, sequence, position, reason}], checkpoint}", body = crate::schema::Verification), (status = 400, description = "Malformed parameter (problem+json)")))]
pub async fn verify_chains(
    State(state): State<AuditState>,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let project_id = query
        .project_id
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| number("project_id", Some(t), 0, 1, i64::MAX))
        .transpose()?;
    let from = position("from_position", query.from_position.as_deref())?;
    let scope = VerifyScope {
        project_id,
        from,
        ..VerifyScope::default()
    };
    let report = verify(
        state.store.pool(),
        &scope,
        state.audit_key.as_deref().map(Vec::as_slice),
        None,
    )
    .await?;
    let mut body = serde_json::to_value(&report).map_err(ApiError::internal)?;
    body["passed"] = json!(report.passed());
    Ok(Json(body).into_response())
}
