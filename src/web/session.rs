//! `GET /api/v1/session`: who the calling key is (id, role, project, expiry), so the
//! dashboard shows only the controls the key may use. It tells a key nothing it could
//! not learn by trying; the secret is never echoed.

use axum::Json;
use commandcenter_auth::Caller;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The calling key, as the page needs it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    /// The key's public id (recorded as `actor` on its events).
    pub key_id: String,
    /// `reader`, `writer`, `auditor` or `admin`.
    #[schema(value_type = commandcenter_auth::Role)]
    pub role: String,
    /// The key's project; `null` for a deployment-wide admin key.
    pub project_id: Option<i64>,
    /// When the key stops working (RFC 3339), if ever.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// May send commands (writer, admin).
    pub can_write: bool,
    /// May read histories, the event feed, time travel and verification (auditor, admin).
    pub can_audit: bool,
}

/// The session route, documented.
pub fn api<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(session))
}

/// `GET /api/v1/session`.
#[utoipa::path(get, path = "/api/v1/session", tag = "access", responses((status = 200, description = "The calling key: id, role, project, expiry and what it may do", body = Session), (status = 401, description = "Missing or invalid key (problem+json)")))]
async fn session(caller: Caller) -> Json<Session> {
    use commandcenter_auth::Role;
    let principal = caller.principal();
    Json(Session {
        key_id: principal.key_id.clone(),
        role: principal.role.to_string(),
        project_id: principal.project,
        expires_at: principal
            .expires_at
            .as_ref()
            .map(commandcenter_domain::serde_helpers::api_time),
        can_write: matches!(principal.role, Role::Writer | Role::Admin),
        can_audit: matches!(principal.role, Role::Auditor | Role::Admin),
    })
}
