//! Read endpoints on the event store itself, for auditors and tests: one aggregate's
//! history, and the gap-safe global feed.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use commandcenter_event_store::{read_history, wait_for_feed, Position, StoredEvent};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::technologies::MAX_ID_LEN;
use crate::CommandState;

/// Default page size of the feed.
pub const FEED_DEFAULT_LIMIT: i64 = 100;
/// Largest page size of the feed.
pub const FEED_MAX_LIMIT: i64 = 1000;
/// Longest long-poll wait of the feed, in milliseconds.
pub const FEED_MAX_WAIT_MS: u64 = 30_000;

/// One aggregate's history.
#[derive(Serialize)]
struct HistoryBody {
    aggregate_type: &'static str,
    aggregate_id: String,
    version: i64,
    events: Vec<StoredEvent>,
}

async fn history(
    state: &CommandState,
    aggregate_type: &'static str,
    id: String,
) -> Result<Response, ApiError> {
    let what = if aggregate_type == "job" {
        "job"
    } else {
        "technology"
    };
    if id.len() > MAX_ID_LEN {
        return Err(ApiError::NotFound(what));
    }
    let events = read_history(state.store.pool(), aggregate_type, &id).await?;
    let Some(last) = events.last() else {
        return Err(ApiError::NotFound(what));
    };
    let (version, position) = (last.sequence, last.position);
    let mut response = Json(HistoryBody {
        aggregate_type,
        aggregate_id: id,
        version,
        events,
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&position.to_string()) {
        response.headers_mut().insert("x-cc-position", value);
    }
    Ok(response)
}

/// `GET /api/v1/technologies/{id}/history`: every event, oldest first.
#[utoipa::path(get, path = "/api/v1/technologies/{id}/history", tag = "audit", params(("id" = String, Path, description = "Technology id")), responses((status = 200, description = "Every event of the technology, oldest first"), (status = 404, description = "Unknown technology (problem+json)")))]
pub async fn technology_history(
    State(state): State<CommandState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    history(&state, "technology", id).await
}

/// `GET /api/v1/jobs/{id}/history`: every event, oldest first.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/history", tag = "audit", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "Every event of the job, oldest first"), (status = 404, description = "Unknown job (problem+json)")))]
pub async fn job_history(
    State(state): State<CommandState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    history(&state, "job", id).await
}

/// The query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
    wait_ms: Option<String>,
}

/// A page of the global feed.
#[derive(Serialize)]
struct FeedBody {
    events: Vec<StoredEvent>,
    /// Pass as `after` to read on; equals the request's `after` when the page is empty.
    next_after: Position,
}

fn number<T: std::str::FromStr + PartialOrd>(
    name: &str,
    value: Option<&str>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ApiError> {
    let Some(text) = value.filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    text.parse::<T>()
        .ok()
        .filter(|v| *v >= min && *v <= max)
        .ok_or_else(|| ApiError::BadParameter {
            name: name.into(),
            message: "must be a whole number within the documented bounds".into(),
        })
}

/// `GET /api/v1/events?after=<position>&limit=N&wait_ms=W`: events after `after` in the
/// gap-safe global order. With `wait_ms`, an empty page waits (long poll) until events
/// commit or the time is up.
#[utoipa::path(get, path = "/api/v1/events", tag = "audit", params(("after" = Option<String>, Query, description = "Position token to read after"), ("limit" = Option<i64>, Query, description = "1-1000, default 100"), ("wait_ms" = Option<u64>, Query, description = "Long-poll up to this many milliseconds when nothing is there yet (at most 30000)")), responses((status = 200, description = "Events in the gap-safe global order, and next_after"), (status = 400, description = "Malformed parameter (problem+json)")))]
pub async fn events_feed(
    State(state): State<CommandState>,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadParameter {
        name: "query".into(),
        message: e.body_text(),
    })?;
    let after = match query.after.as_deref().filter(|t| !t.is_empty()) {
        None => Position::ZERO,
        Some(text) => text
            .parse::<Position>()
            .map_err(|e| ApiError::BadParameter {
                name: "after".into(),
                message: e.to_string(),
            })?,
    };
    let limit = number(
        "limit",
        query.limit.as_deref(),
        FEED_DEFAULT_LIMIT,
        1,
        FEED_MAX_LIMIT,
    )?;
    let wait_ms = number("wait_ms", query.wait_ms.as_deref(), 0, 0, FEED_MAX_WAIT_MS)?;
    let events = wait_for_feed(
        state.store.pool(),
        state.store.signal(),
        after,
        limit,
        Duration::from_millis(wait_ms),
    )
    .await?;
    let next_after = events.last().map_or(after, |e| e.position);
    let mut response = Json(FeedBody { events, next_after }).into_response();
    if let Ok(value) = HeaderValue::from_str(&next_after.to_string()) {
        response.headers_mut().insert("x-cc-position", value);
    }
    Ok(response)
}
