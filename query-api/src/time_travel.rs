//! `?as_of=<RFC 3339>`, `?as_of_position=<token>` or `?as_of_version=V` on a detail
//! route: the aggregate as it was then, rebuilt from its events in the event store (from
//! the latest snapshot at or before that version), never from the read model.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use commandcenter_api_error::ApiError;
use commandcenter_event_store::{AppendSignal, EventStore, Position};
use cqrs_es::Aggregate;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

/// The time-travel parameters of a detail route.
#[derive(Debug, Default, Deserialize)]
pub struct AsOf {
    as_of: Option<String>,
    as_of_position: Option<String>,
    as_of_version: Option<String>,
}

enum Target {
    Time(DateTime<Utc>),
    Position(Position),
    Version(i64),
}

impl AsOf {
    fn target(&self) -> Result<Option<Target>, ApiError> {
        fn given(value: &Option<String>) -> Option<&str> {
            value.as_deref().filter(|t| !t.is_empty())
        }
        let bad = |name: &str, message: &str| ApiError::BadParameter {
            name: name.into(),
            message: message.into(),
        };
        match (
            given(&self.as_of),
            given(&self.as_of_position),
            given(&self.as_of_version),
        ) {
            (None, None, None) => Ok(None),
            (Some(t), None, None) => DateTime::parse_from_rfc3339(t)
                .map(|t| Some(Target::Time(t.with_timezone(&Utc))))
                .map_err(|_| {
                    bad(
                        "as_of",
                        "must be an RFC 3339 time, e.g. 2026-11-29T12:00:00Z",
                    )
                }),
            (None, Some(p), None) => p
                .parse::<Position>()
                .map(|p| Some(Target::Position(p)))
                .map_err(|e| bad("as_of_position", &e.to_string())),
            (None, None, Some(v)) => v
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 1)
                .map(|v| Some(Target::Version(v)))
                .ok_or_else(|| bad("as_of_version", "must be a version, 1 or more")),
            _ => Err(bad(
                "as_of",
                "give one of as_of, as_of_position and as_of_version",
            )),
        }
    }
}

/// The answer to a detail request with time-travel parameters, or `None` when it has
/// none (the caller serves the read model).
pub async fn as_of<A: Aggregate>(
    primary: &PgPool,
    id: &str,
    params: &AsOf,
    what: &'static str,
) -> Result<Option<Response>, ApiError> {
    let Some(target) = params.target()? else {
        return Ok(None);
    };
    let store = EventStore::new(primary.clone(), AppendSignal::local());
    let version = match target {
        Target::Version(v) => Some(v),
        Target::Time(t) => store.version_at_time(A::TYPE, id, t).await?,
        Target::Position(p) => store.version_at_position(A::TYPE, id, p).await?,
    };
    // Before its creation, or a version it never reached.
    let version = version.ok_or(ApiError::NotFound(what))?;
    let loaded = store.load_upto::<A>(id, Some(version)).await?;
    if loaded.version != version {
        return Err(ApiError::NotFound(what));
    }
    let state = serde_json::to_value(&loaded.aggregate)
        .map_err(|e| ApiError::internal(format!("cannot serialize the state: {e}")))?;
    let (variant, fields) = crate::history::state_fields(&state);
    if variant.is_empty() || variant == "NotCreated" {
        return Err(ApiError::NotFound(what));
    }
    let lifecycle = variant.to_lowercase();
    let position = loaded.position.unwrap_or(Position::ZERO);
    let mut body = Value::Object(fields);
    body["version"] = json!(loaded.version);
    body["position"] = json!(position.to_string());
    body["as_of"] = json!({
        "version": loaded.version,
        "position": position.to_string(),
        "lifecycle": lifecycle,
        "source": "event-store",
    });
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&position.to_string()) {
        headers.insert("x-cc-position", value);
    }
    headers.insert("x-cc-source", HeaderValue::from_static("event-store"));
    Ok(Some(response))
}
