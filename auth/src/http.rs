//! Projects and keys over HTTP. Listing projects is open to every key (each sees its
//! own); keys are managed by admin keys (a project's admin manages that project's keys);
//! projects are registered by deployment-wide admin keys.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::keys::parse_expiry;
use crate::{AccessError, Caller, Guard, Role};

/// What the management routes need.
#[derive(Clone)]
pub struct AuthState {
    /// The guard (keys, projects, revocation).
    pub guard: Guard,
    /// Where revocations are announced.
    pub nats: async_nats::Client,
    /// The NATS subject prefix.
    pub prefix: String,
}

/// The management routes, with request bodies limited to `max_body_bytes`.
pub fn api(max_body_bytes: usize) -> OpenApiRouter<AuthState> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, AccessError> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &body[..]
    };
    serde_json::from_slice(text).map_err(|err| {
        let message = err.to_string();
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field"))
            .unwrap_or("body")
            .to_string();
        AccessError::Invalid {
            field,
            message: match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            },
        }
    })
}

/// The body of `POST /api/v1/projects`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectBody {
    /// 1 to 200 characters once trimmed, no control characters, unique ignoring case.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    name: String,
}

/// The answer of `GET /api/v1/projects` (a schema only: the handler writes it with `json!`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ProjectList {
    /// The projects the key can see.
    projects: Vec<crate::projects::Project>,
}

/// The answer of `GET /api/v1/keys` (a schema only: the handler writes it with `json!`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct KeyList {
    /// The keys the admin key manages, never with their secrets.
    keys: Vec<crate::keys::ApiKey>,
}

/// `GET /api/v1/projects`: the projects the key can see.
#[utoipa::path(get, path = "/api/v1/projects", tag = "access", responses((status = 200, description = "{projects: [...]}: every project for a deployment-wide key, else the key's own", body = ProjectList), (status = 401, description = "Missing or invalid key (problem+json)")))]
async fn list_projects(
    State(state): State<AuthState>,
    caller: Caller,
) -> Result<Response, AccessError> {
    let projects = state
        .guard
        .projects()
        .list(caller.principal().project)
        .await?;
    Ok(Json(serde_json::json!({ "projects": projects })).into_response())
}

/// `POST /api/v1/projects` → 201 with the project.
#[utoipa::path(post, path = "/api/v1/projects", tag = "access", request_body = CreateProjectBody, responses((status = 201, description = "The registered project", body = crate::projects::Project), (status = 403, description = "Not a deployment-wide admin key (problem+json)"), (status = 422, description = "Missing, invalid or taken name (problem+json naming it)")))]
async fn create_project(
    State(state): State<AuthState>,
    body: Bytes,
) -> Result<Response, AccessError> {
    let body: CreateProjectBody = parse(&body)?;
    let project = state.guard.projects().create(&body.name).await?;
    Ok((StatusCode::CREATED, Json(project)).into_response())
}

/// The body of `POST /api/v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// reader, writer, auditor or admin.
    #[schema(value_type = Role)]
    role: String,
    /// The project; defaults to the calling key's. Omitted by a deployment-wide admin
    /// creating another deployment-wide admin key.
    #[schema(minimum = 1)]
    project_id: Option<i64>,
    /// A label (at most 200 characters, no control characters).
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    name: String,
    /// RFC 3339 time, or a span such as `90d`, `12h`, `30m`.
    expires_at: Option<String>,
}

/// `GET /api/v1/keys`: the keys an admin key manages (never their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "access", responses((status = 200, description = "{keys: [...]}: a project admin sees its project's keys, a deployment-wide admin every key", body = KeyList), (status = 403, description = "Not an admin key (problem+json)")))]
async fn list_keys(
    State(state): State<AuthState>,
    caller: Caller,
) -> Result<Response, AccessError> {
    let keys = state.guard.keys().list(caller.principal().project).await?;
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

/// `POST /api/v1/keys` → 201 with the key's token, shown this once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "access", request_body = CreateKeyBody, responses((status = 201, description = "The key, with `token` (shown once)", body = crate::keys::NewKey), (status = 403, description = "Not an admin key (problem+json)"), (status = 404, description = "Another project than the admin key's (problem+json)"), (status = 422, description = "Invalid field (problem+json naming it)")))]
async fn create_key(
    State(state): State<AuthState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, AccessError> {
    let body: CreateKeyBody = parse(&body)?;
    let role: Role = body.role.parse().map_err(|message| AccessError::Invalid {
        field: "role".into(),
        message,
    })?;
    let project = match (caller.principal().project, body.project_id) {
        // A deployment-wide admin may make another deployment-wide admin key.
        (None, None) => None,
        (_, requested) => Some(caller.project_for(requested).await?),
    };
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|text| parse_expiry(text, Utc::now()))
        .transpose()
        .map_err(|message| AccessError::Invalid {
            field: "expires_at".into(),
            message,
        })?;
    let key = state
        .guard
        .keys()
        .create(project, role, body.name.trim(), expires_at)
        .await?;
    tracing::info!(key_id = %key.key.id, role = %role, project = ?project, by = %caller.key_id(), "API key created");
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

/// `DELETE /api/v1/keys/{id}` → 200 with the revoked key; its sockets close at once.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "access", params(("id" = String, Path, description = "Key id")), responses((status = 200, description = "The revoked key", body = crate::keys::ApiKey), (status = 403, description = "Not an admin key (problem+json)"), (status = 404, description = "No such key for this admin (problem+json)")))]
async fn revoke_key(
    State(state): State<AuthState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AccessError> {
    let Some(key) = state.guard.keys().get(&id).await? else {
        return Err(AccessError::NotFound("key"));
    };
    if let Some(own) = caller.principal().project {
        if key.project_id != Some(own) {
            return Err(AccessError::NotFound("key"));
        }
    }
    let revoked = state
        .guard
        .revoke(&id, Some((&state.nats, &state.prefix)))
        .await?
        .ok_or(AccessError::NotFound("key"))?;
    tracing::info!(key_id = %id, by = %caller.key_id(), "API key revoked");
    Ok(Json(revoked).into_response())
}
