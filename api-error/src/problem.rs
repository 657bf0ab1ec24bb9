//! The API's one error format: an `application/problem+json` document (RFC 9457), and
//! the [`Refusal`] trait through which other layers' errors (the access guard's) answer in
//! it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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

/// An error of another layer that answers as a problem document of its own (the access
/// guard's refusals, which carry their own headers such as `WWW-Authenticate`).
pub trait Refusal: std::error::Error + Send + Sync + 'static {
    /// The HTTP status.
    fn status(&self) -> StatusCode;
    /// The problem type's last segment.
    fn kind(&self) -> &'static str;
    /// The field at fault, if one is.
    fn field(&self) -> Option<&str>;
    /// The complete response, headers included.
    fn to_response(&self) -> Response;
}
