//! Request extractors that turn HTTP input into validated values or a problem document:
//! the JSON body (with the raw bytes kept for idempotency hashing), `If-Match`,
//! `Idempotency-Key` and the request's tracing ids.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;
use crate::idempotency::IdempotentRequest;

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
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
        if raw.iter().all(u8::is_ascii_whitespace) {
            // An empty body is an empty object, so optional bodies may be left out.
            let value = parse_json(b"{}")?;
            return Ok(Self { value, raw });
        }
        if declared_json == Some(false) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let value = parse_json(&raw)?;
        Ok(Self { value, raw })
    }
}

/// The body limit in force, put in request extensions by the router so that errors can
/// state it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The body limit when none is configured.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Parses JSON into `T`: text that is not JSON is a 400; JSON of the wrong shape is a
/// 422 naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedJson(strip_location(&e.to_string())))?;
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

/// Who asked, and which request chain this is, recorded in every event's metadata.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// This request (from `X-Request-Id`, or generated).
    pub request_id: String,
    /// The business flow it belongs to (from `X-Correlation-Id`, else the trace id of
    /// `traceparent`, else the request id).
    pub correlation_id: String,
    /// The message that caused it (from `X-Causation-Id`), if any.
    pub causation_id: Option<String>,
    /// The acting key's id (`anonymous` until API keys exist).
    pub actor: String,
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

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request_id = tracing_id(&parts.headers, "x-request-id")
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        // W3C trace context: the trace id of `traceparent` (version-traceid-parent-flags)
        // follows the request when no X-Correlation-Id is given.
        let trace_id = tracing_id(&parts.headers, "traceparent")
            .and_then(|t| t.split('-').nth(1).map(str::to_string))
            .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        let correlation_id = tracing_id(&parts.headers, "x-correlation-id")
            .or(trace_id)
            .unwrap_or_else(|| request_id.clone());
        Ok(Self {
            causation_id: tracing_id(&parts.headers, "x-causation-id"),
            request_id,
            correlation_id,
            actor: "anonymous".into(),
        })
    }
}

/// Everything a command takes from the request besides its path and body: tracing ids,
/// `If-Match`, `Idempotency-Key`, and the method and URI the idempotency hash covers.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Tracing ids and actor.
    pub meta: RequestMeta,
    /// The version the client requires.
    pub if_match: Option<i64>,
    key: Option<IdempotencyKey>,
    method: Method,
    uri: String,
}

impl CommandContext {
    /// The idempotency record of this request with `body`, when it carries a key.
    pub fn idempotent(&self, body: &[u8]) -> Option<IdempotentRequest> {
        self.key.clone().map(|key| {
            IdempotentRequest::new(key, &self.meta.actor, self.method.as_str(), &self.uri, body)
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(meta) = RequestMeta::from_request_parts(parts, state).await;
        let IfMatch(if_match) = IfMatch::from_request_parts(parts, state).await?;
        let MaybeIdempotencyKey(key) =
            MaybeIdempotencyKey::from_request_parts(parts, state).await?;
        Ok(Self {
            meta,
            if_match,
            key,
            method: parts.method.clone(),
            uri: parts.uri.to_string(),
        })
    }
}
