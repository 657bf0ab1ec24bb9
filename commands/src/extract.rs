//! Request extractors that turn HTTP input into validated values or a problem document:
//! the JSON body (with the raw bytes kept for idempotency hashing), `If-Match`,
//! `Idempotency-Key` and the request's tracing ids.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use commandcenter_auth::Caller;
use commandcenter_domain::values::ProjectId;

use commandcenter_executor::{IdempotentRequest, RequestMeta};

use crate::ApiError;

/// A JSON body parsed into `T`, with its raw bytes.
pub struct JsonBody<T> {
    /// The parsed body.
    pub value: T,
    /// The bytes as received.
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(DEFAULT_BODY_LIMIT);
        let shape = req
            .extensions()
            .get::<JsonLimits>()
            .copied()
            .unwrap_or_default();
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
        if raw.iter().all(u8::is_ascii_whitespace) {
            // An empty body is an empty object, so optional bodies may be left out.
            let value = parse_json(b"{}", shape)?;
            return Ok(Self { value, raw });
        }
        if declared_json == Some(false) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let value = parse_json(&raw, shape)?;
        Ok(Self { value, raw })
    }
}

/// The body limit in force, put in request extensions by the router so that errors can
/// state it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The body limit when none is configured.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Limits on the shape of any JSON body, whatever its fields: nesting depth and string
/// length (in characters, keys included). Put in request extensions by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of arrays and objects.
    pub max_depth: usize,
    /// Longest string.
    pub max_string_chars: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_string_chars: 65_536,
        }
    }
}

/// The first place where `value` breaks `limits`: its path and what is wrong.
fn check_shape(value: &serde_json::Value, limits: JsonLimits) -> Option<(String, String)> {
    fn walk(
        value: &serde_json::Value,
        path: &mut String,
        depth: usize,
        limits: JsonLimits,
    ) -> Option<(String, String)> {
        let too_long = |s: &str| s.chars().count() > limits.max_string_chars;
        let long = || format!("longer than {} characters", limits.max_string_chars);
        let nested = || format!("nested deeper than {} levels", limits.max_depth);
        // PostgreSQL's jsonb, where events are stored, cannot hold U+0000.
        let nul = || "contains the character U+0000, which cannot be stored".to_string();
        match value {
            serde_json::Value::String(s) if too_long(s) => Some((path.clone(), long())),
            serde_json::Value::String(s) if s.contains('\0') => Some((path.clone(), nul())),
            serde_json::Value::Array(items) => {
                if depth >= limits.max_depth {
                    return Some((path.clone(), nested()));
                }
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    let found = walk(item, path, depth + 1, limits);
                    path.truncate(len);
                    if found.is_some() {
                        return found;
                    }
                }
                None
            }
            serde_json::Value::Object(fields) => {
                if depth >= limits.max_depth {
                    return Some((path.clone(), nested()));
                }
                for (name, item) in fields {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    if too_long(name) {
                        path.push_str("<key>");
                        return Some((path.clone(), long()));
                    }
                    if name.contains('\0') {
                        path.push_str("<key>");
                        return Some((path.clone(), nul()));
                    }
                    path.push_str(name);
                    let found = walk(item, path, depth + 1, limits);
                    path.truncate(len);
                    if found.is_some() {
                        return found;
                    }
                }
                None
            }
            _ => None,
        }
    }
    walk(value, &mut String::new(), 0, limits)
        .map(|(path, message)| (if path.is_empty() { "body".into() } else { path }, message))
}

/// Parses JSON into `T`: text that is not JSON is a 400; JSON beyond `limits` or of the
/// wrong shape is a 422 naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], limits: JsonLimits) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedJson(strip_location(&e.to_string())))?;
    if let Some((field, message)) = check_shape(&value, limits) {
        return Err(ApiError::Validation(
            commandcenter_domain::ValidationError::new(field, message),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = strip_location(&err.into_inner().to_string());
        let field = if path == "." || path.is_empty() {
            named_field(&message).unwrap_or_else(|| "body".to_string())
        } else {
            path
        };
        ApiError::Validation(commandcenter_domain::ValidationError::new(field, message))
    })
}

/// `"missing field `title` at line 1 column 2"` → `"missing field `title`"`.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The field named between backticks in a serde message (`missing field `title``).
fn named_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The `If-Match` precondition: the version the client last saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let bad = || ApiError::BadParameter {
            name: "If-Match".into(),
            message: "must be a version number as returned in ETag, e.g. \"3\"".into(),
        };
        let text = value.to_str().map_err(|_| bad())?.trim();
        if text == "*" {
            return Ok(Self(None));
        }
        let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
        text.parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .map(|v| Self(Some(v)))
            .ok_or_else(bad)
    }
}

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

/// The optional `Idempotency-Key` header.
#[derive(Debug, Clone, Default)]
pub struct MaybeIdempotencyKey(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeIdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let bad = || ApiError::BadParameter {
            name: "Idempotency-Key".into(),
            message: "must be 1 to 255 visible ASCII characters".into(),
        };
        let text = value.to_str().map_err(|_| bad())?;
        if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        Ok(Self(Some(IdempotencyKey(text.to_string()))))
    }
}

/// Tracing ids are labels, not secrets; keep them short and printable.
fn tracing_id(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
}

/// The request's tracing ids and acting key, for the events' metadata.
pub fn request_meta(parts: &Parts) -> RequestMeta {
    let request_id =
        tracing_id(&parts.headers, "x-request-id").unwrap_or_else(|| Uuid::now_v7().to_string());
    // W3C trace context: the trace id of `traceparent` (version-traceid-parent-flags)
    // follows the request when no X-Correlation-Id is given.
    let trace_id = tracing_id(&parts.headers, "traceparent")
        .and_then(|t| t.split('-').nth(1).map(str::to_string))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    let correlation_id = tracing_id(&parts.headers, "x-correlation-id")
        .or(trace_id)
        .unwrap_or_else(|| request_id.clone());
    RequestMeta {
        causation_id: tracing_id(&parts.headers, "x-causation-id"),
        request_id,
        correlation_id,
        actor: parts
            .extensions
            .get::<Caller>()
            .map_or_else(|| "anonymous".to_string(), |c| c.key_id().to_string()),
    }
}

/// Everything a command takes from the request besides its path and body: the calling
/// key, tracing ids, `If-Match`, `Idempotency-Key`, and the method and URI the
/// idempotency hash covers. Without a key (a route the guard does not cover) it is a 401,
/// so every command route is closed by default.
#[derive(Clone)]
pub struct CommandContext {
    /// The calling key.
    pub caller: Caller,
    /// Tracing ids and actor.
    pub meta: RequestMeta,
    /// The version the client requires.
    pub if_match: Option<i64>,
    key: Option<IdempotencyKey>,
    project_header: Option<String>,
    method: Method,
    uri: String,
}

impl CommandContext {
    /// The project a create command writes to (see [`Caller::project_for`]): the body's
    /// `project_id`, else the `X-Project-ID` header (the previous API's way), else the
    /// key's own project. A header that names another project than the body is a 422.
    pub async fn project_for(&self, requested: Option<i64>) -> Result<ProjectId, ApiError> {
        let header = match &self.project_header {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|project| *project >= 1)
                    .ok_or_else(|| ApiError::BadParameter {
                        name: "X-Project-ID".into(),
                        message: format!("{text:?} is not a project id (a positive integer)"),
                    })?,
            ),
        };
        if let (Some(body), Some(header)) = (requested, header) {
            if body != header {
                return Err(ApiError::Validation(
                    commandcenter_domain::ValidationError::new(
                        "X-Project-ID",
                        format!("names project {header} but the body's project_id is {body}"),
                    ),
                ));
            }
        }
        let project = self.caller.project_for(requested.or(header)).await?;
        Ok(ProjectId::parse("project_id", project)?)
    }

    /// The idempotency record of this request with `body`, when it carries a key.
    pub fn idempotent(&self, body: &[u8]) -> Option<IdempotentRequest> {
        self.key.clone().map(|key| {
            IdempotentRequest::new(
                key.0,
                &self.meta.actor,
                self.method.as_str(),
                &self.uri,
                body,
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let meta = request_meta(parts);
        let IfMatch(if_match) = IfMatch::from_request_parts(parts, state).await?;
        let MaybeIdempotencyKey(key) =
            MaybeIdempotencyKey::from_request_parts(parts, state).await?;
        Ok(Self {
            caller,
            meta,
            if_match,
            key,
            project_header: parts
                .headers
                .get("x-project-id")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            method: parts.method.clone(),
            uri: parts.uri.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIGHT: JsonLimits = JsonLimits {
        max_depth: 3,
        max_string_chars: 5,
    };

    #[test]
    fn shape_limits_name_the_field() {
        let ok = serde_json::json!({"a": {"b": ["12345"]}});
        assert_eq!(check_shape(&ok, TIGHT), None);
        let deep = serde_json::json!({"a": {"b": [[1]]}});
        assert_eq!(check_shape(&deep, TIGHT).unwrap().0, "a.b[0]");
        let long = serde_json::json!({"a": ["x", "123456"]});
        assert_eq!(check_shape(&long, TIGHT).unwrap().0, "a[1]");
        let long_key = serde_json::json!({"abcdef": 1});
        assert_eq!(check_shape(&long_key, TIGHT).unwrap().0, "<key>");
        assert_eq!(
            check_shape(&serde_json::json!("123456"), TIGHT).unwrap().0,
            "body"
        );
    }
}
