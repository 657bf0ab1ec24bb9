//! [`AccessError`] as an `application/problem+json` response (RFC 9457), shaped like the
//! rest of the API's problems.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AccessError;

impl AccessError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::UnknownProject { .. } | Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) | Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem type's last segment.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::UnknownProject { .. } | Self::Invalid { .. } => "validation",
            Self::RateLimited { .. } => "rate-limited",
            Self::TooMany(_) => "too-many",
            Self::Timeout(_) => "timeout",
            Self::Database(_) => "unavailable",
        }
    }

    /// The field at fault, if one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::UnknownProject { field, .. } | Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A problem document's body: `type`, `title`, `status`, `detail`, and `field` with
/// `errors` when a field is at fault. The API's one shape for errors.
pub fn problem_body(
    status: StatusCode,
    kind: &str,
    detail: &str,
    field: Option<&str>,
) -> serde_json::Value {
    let mut body = json!({
        "type": format!("urn:commandcenter:problem:{kind}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(field) = field {
        body["field"] = json!(field);
        body["errors"] = json!([{ "field": field, "message": detail }]);
    }
    body
}

/// `body` as an `application/problem+json` response with `status`; a 503 says when to
/// retry (`Retry-After: 1`).
pub fn problem_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl IntoResponse for AccessError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Self::Database(err) => {
                tracing::warn!(%err, "access check could not read the database");
                "the access check could not be completed; try again".to_string()
            }
            Self::Invalid { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let body = problem_body(status, self.kind(), &detail, self.field());
        let mut response = problem_response(status, &body);
        let headers = response.headers_mut();
        match &self {
            Self::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"commandcenter\""),
                );
            }
            Self::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::TooMany(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
