//! A complete HTTP answer as data, so that the very response a command produced can be
//! stored with its Idempotency-Key and replayed byte for byte.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use commandcenter_event_store::Committed;
use commandcenter_executor::{Answer, CommandError, SavedReply};
use serde::Serialize;

/// Status, headers and body of a command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON answer carrying the aggregate's version and position in `ETag` and
    /// `X-CC-Position`.
    pub fn json<T: Serialize>(
        status: StatusCode,
        committed: &Committed,
        body: &T,
    ) -> Result<Self, CommandError> {
        let body = serde_json::to_vec(body).map_err(CommandError::Encode)?;
        let mut reply = Self::empty(status, committed);
        reply
            .headers
            .push(("content-type".into(), "application/json".into()));
        reply.body = body;
        Ok(reply)
    }

    /// A body-less answer (`204`) with the version and position headers.
    pub fn empty(status: StatusCode, committed: &Committed) -> Self {
        Self {
            status,
            headers: vec![
                ("etag".into(), format!("\"{}\"", committed.version)),
                ("x-cc-position".into(), committed.position.to_string()),
            ],
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: String) -> Self {
        self.headers.push((name.to_string(), value));
        self
    }
}

/// Saved with the request's `Idempotency-Key`; a replay carries `Idempotent-Replayed`.
impl Answer for Reply {
    fn saved(&self) -> Option<SavedReply> {
        Some(SavedReply {
            status: self.status.as_u16(),
            headers: self.headers.clone(),
            body: self.body.clone(),
        })
    }

    fn replayed(saved: SavedReply) -> Result<Self, CommandError> {
        let status = StatusCode::from_u16(saved.status).map_err(|_| {
            CommandError::CorruptIdempotencyRecord {
                key: String::new(),
                reason: format!("stored status {} is invalid", saved.status),
            }
        })?;
        let reply = Self {
            status,
            headers: saved.headers,
            body: saved.body,
        };
        Ok(reply.with_header("idempotent-replayed", "true".into()))
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        response
    }
}
