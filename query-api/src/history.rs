//! Read endpoints on the event store itself, for auditors: one aggregate's annotated
//! history, and the gap-safe global feed (JSON pages or streamed NDJSON).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use commandcenter_domain::job::Job;
use commandcenter_domain::technology::Technology;
use commandcenter_event_store::{
    read_feed_filtered, read_history, read_history_after, wait_for_feed, FeedFilter, Position,
    StoredEvent, FALLBACK_POLL,
};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgPool;

use crate::AuditState;
use commandcenter_api_error::ApiError;
use commandcenter_domain::values::AggregateId;

/// Default page size of the feed and of histories.
pub const FEED_DEFAULT_LIMIT: i64 = 100;
/// Largest page size of the feed and of histories (JSON).
pub const FEED_MAX_LIMIT: i64 = 1000;
/// Largest number of events one NDJSON response streams.
pub const NDJSON_MAX_LIMIT: i64 = 1_000_000;
/// Longest long-poll wait of the feed, in milliseconds.
pub const FEED_MAX_WAIT_MS: u64 = 30_000;
/// The media type of streamed feeds.
pub const NDJSON: &str = "application/x-ndjson";

/// One field that an event changed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldChange {
    /// The field (top-level field of the aggregate's state; `state` for its lifecycle:
    /// `NotCreated`, `Live`, `Deleted`).
    pub field: String,
    /// Its value before the event (null when absent).
    pub from: Value,
    /// Its value after.
    pub to: Value,
}

/// An event with who, when, why and what it changed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The event as stored.
    #[serde(flatten)]
    pub event: StoredEvent,
    /// Who: the acting key or worker (`metadata.actor`).
    pub actor: Option<String>,
    /// Why: the business flow (`metadata.correlation_id`).
    pub correlation_id: Option<String>,
    /// Why: the message that caused it (`metadata.causation_id`).
    pub causation_id: Option<String>,
    /// What: the fields it changed, against the state before it (`updated_at` left out).
    pub changes: Vec<FieldChange>,
}

/// The lifecycle variant (`NotCreated`, `Live`, `Deleted`) and fields of a serialized
/// aggregate state.
pub fn state_fields(state: &Value) -> (String, Map<String, Value>) {
    match state {
        Value::Object(map) if map.len() == 1 => {
            let (variant, inner) = map
                .iter()
                .next()
                .map_or(("", &Value::Null), |(k, v)| (k, v));
            let fields = inner.as_object().cloned().unwrap_or_default();
            (variant.to_string(), fields)
        }
        Value::String(variant) => (variant.clone(), Map::new()),
        _ => (String::new(), Map::new()),
    }
}

/// What changed from `before` to `after` (serialized aggregate states).
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let (from_variant, from) = state_fields(before);
    let (to_variant, to) = state_fields(after);
    let mut changes = Vec::new();
    if from_variant != to_variant {
        changes.push(FieldChange {
            field: "state".into(),
            from: json!(from_variant),
            to: json!(to_variant),
        });
    }
    let keys: BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    for key in keys {
        if key == "updated_at" {
            continue;
        }
        let (old, new) = (
            from.get(key).unwrap_or(&Value::Null),
            to.get(key).unwrap_or(&Value::Null),
        );
        if old != new {
            changes.push(FieldChange {
                field: key.clone(),
                from: old.clone(),
                to: new.clone(),
            });
        }
    }
    changes
}

/// Every event of aggregate `id` of type `A`, oldest first, each with its metadata and
/// the fields it changed (folded with the domain's `apply`, old payloads upcast).
pub async fn annotated_history<A: Aggregate>(
    pool: &PgPool,
    id: &str,
) -> Result<Vec<HistoryEntry>, ApiError> {
    let events = read_history(pool, A::TYPE, id).await?;
    let mut state = A::default();
    let mut before = serde_json::to_value(&state).map_err(ApiError::internal)?;
    events
        .into_iter()
        .map(|event| annotate::<A>(&mut state, &mut before, event, id))
        .collect()
}

/// Most events read per query while a history page is folded.
const HISTORY_CHUNK: i64 = 1000;

/// Applies `event` to `state` and annotates it with its metadata and the fields it
/// changed against `before` (the state's JSON before it), which it then moves on.
fn annotate<A: Aggregate>(
    state: &mut A,
    before: &mut Value,
    event: StoredEvent,
    id: &str,
) -> Result<HistoryEntry, ApiError> {
    let payload = commandcenter_domain::upcast_payload(
        &event.event_type,
        &event.event_version,
        event.payload.clone(),
    );
    let decoded: A::Event = serde_json::from_value(payload).map_err(|e| {
        ApiError::internal(format!(
            "event {} of {}/{id} cannot be read: {e}",
            event.sequence,
            A::TYPE
        ))
    })?;
    state.apply(decoded);
    let after = serde_json::to_value(&*state).map_err(ApiError::internal)?;
    let text = |key: &str| event.metadata[key].as_str().map(str::to_string);
    let entry = HistoryEntry {
        actor: text("actor"),
        correlation_id: text("correlation_id"),
        causation_id: text("causation_id"),
        changes: diff(before, &after),
        event,
    };
    *before = after;
    Ok(entry)
}

/// The query of the history endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after_version: Option<String>,
    limit: Option<String>,
}

/// One page of an aggregate's history.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HistoryBody {
    /// `technology` or `job`.
    aggregate_type: &'static str,
    /// The aggregate's id.
    aggregate_id: String,
    /// The aggregate's current version.
    version: i64,
    /// The page's events, oldest first.
    events: Vec<HistoryEntry>,
    /// Pass as `after_version` for the next page; null on the last one.
    next_cursor: Option<i64>,
}

fn time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .filter(|t| !t.is_empty())
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::BadParameter {
                    name: name.into(),
                    message: "must be an RFC 3339 time, e.g. 2026-11-29T12:00:00Z".into(),
                })
        })
        .transpose()
}

pub(crate) fn position(name: &str, value: Option<&str>) -> Result<Option<Position>, ApiError> {
    value
        .filter(|t| !t.is_empty())
        .map(|text| {
            text.parse::<Position>()
                .map_err(|e| ApiError::BadParameter {
                    name: name.into(),
                    message: e.to_string(),
                })
        })
        .transpose()
}

fn label(name: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
    value
        .filter(|t| !t.is_empty())
        .map(|text| {
            if text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                Ok(text.to_string())
            } else {
                Err(ApiError::BadParameter {
                    name: name.into(),
                    message: "must be a name of letters, digits and '_'".into(),
                })
            }
        })
        .transpose()
}

async fn history<A: Aggregate>(
    state: &AuditState,
    what: &'static str,
    id: String,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let event_type = label("event_type", query.event_type.as_deref())?;
    let since = time("since", query.since.as_deref())?;
    let until = time("until", query.until.as_deref())?;
    let after_version = number(
        "after_version",
        query.after_version.as_deref(),
        0,
        0,
        i64::MAX,
    )?;
    let limit = page_limit(query.limit.as_deref())?;
    if AggregateId::parse(&id).is_none() {
        return Err(ApiError::NotFound(what));
    }
    // The page starts from the state after `after_version`, loaded from the nearest
    // snapshot at or below it: a page costs the same at version 10 and at 1,000,000.
    let pool = state.store.pool();
    let head: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT sequence, tx_id::text, global_position FROM events \
          WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence DESC LIMIT 1",
    )
    .bind(A::TYPE)
    .bind(&id)
    .fetch_optional(pool)
    .await?;
    let Some((version, head_tx, head_position)) = head else {
        return Err(ApiError::NotFound(what));
    };
    let head = Position::new(head_tx.parse().unwrap_or_default(), head_position);
    let start = after_version.min(version);
    let loaded = state.store.load_upto::<A>(&id, Some(start)).await?;
    let mut aggregate = loaded.aggregate;
    let mut before = serde_json::to_value(&aggregate).map_err(ApiError::internal)?;
    let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut page: Vec<HistoryEntry> = Vec::new();
    let mut more = false;
    let mut cursor = start;
    // A page and the one event that says whether another follows; more per read only
    // when filters skip events.
    let mut chunk = (limit + 1).min(HISTORY_CHUNK);
    'chunks: loop {
        // Up to the version (and position) the answer reports, whatever commits meanwhile.
        let events = read_history_after(pool, A::TYPE, &id, cursor, version, chunk).await?;
        chunk = HISTORY_CHUNK;
        let Some(last) = events.last() else { break };
        cursor = last.sequence;
        for event in events {
            let entry = annotate::<A>(&mut aggregate, &mut before, event, &id)?;
            let matches = event_type
                .as_ref()
                .is_none_or(|t| &entry.event.event_type == t)
                && since.is_none_or(|s| entry.event.recorded_at >= s)
                && until.is_none_or(|u| entry.event.recorded_at < u);
            if !matches {
                continue;
            }
            if page.len() == wanted {
                more = true;
                break 'chunks;
            }
            page.push(entry);
        }
    }
    let next_cursor = if more {
        page.last().map(|e| e.event.sequence)
    } else {
        None
    };
    let mut response = Json(HistoryBody {
        aggregate_type: A::TYPE,
        aggregate_id: id,
        version,
        events: page,
        next_cursor,
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&head.to_string()) {
        response.headers_mut().insert("x-cc-position", value);
    }
    Ok(response)
}

/// `GET /api/v1/technologies/{id}/history`: the technology's events, oldest first, with
/// actor, correlation and causation ids and a field-level diff.
#[utoipa::path(get, path = "/api/v1/technologies/{id}/history", tag = "audit", params(("id" = String, Path, description = "Technology id"), ("event_type" = Option<String>, Query, max_length = 64, pattern = "^[A-Za-z0-9_]*$", description = "Only this event type"), ("since" = Option<String>, Query, format = DateTime, description = "Only events recorded at or after this RFC 3339 time"), ("until" = Option<String>, Query, format = DateTime, description = "Only events recorded before this RFC 3339 time"), ("after_version" = Option<i64>, Query, minimum = 0, description = "Cursor: events after this version (next_cursor of the previous page)"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1-1000, default 100")), responses((status = 200, description = "A page of the technology's annotated history, oldest first, and next_cursor", body = HistoryBody), (status = 400, description = "Malformed parameter (problem+json)"), (status = 404, description = "Unknown technology (problem+json)")))]
pub async fn technology_history(
    State(state): State<AuditState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    history::<Technology>(&state, "technology", id, query).await
}

/// `GET /api/v1/jobs/{id}/history`: the job's events, oldest first, annotated.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/history", tag = "audit", params(("id" = String, Path, description = "Job id"), ("event_type" = Option<String>, Query, max_length = 64, pattern = "^[A-Za-z0-9_]*$", description = "Only this event type"), ("since" = Option<String>, Query, format = DateTime, description = "Only events recorded at or after this RFC 3339 time"), ("until" = Option<String>, Query, format = DateTime, description = "Only events recorded before this RFC 3339 time"), ("after_version" = Option<i64>, Query, minimum = 0, description = "Cursor: events after this version (next_cursor of the previous page)"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1-1000, default 100")), responses((status = 200, description = "A page of the job's annotated history, oldest first, and next_cursor", body = HistoryBody), (status = 400, description = "Malformed parameter (problem+json)"), (status = 404, description = "Unknown job (problem+json)")))]
pub async fn job_history(
    State(state): State<AuditState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    history::<Job>(&state, "job", id, query).await
}

/// The query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
    wait_ms: Option<String>,
    aggregate_type: Option<String>,
    event_type: Option<String>,
    project_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// A page of the global feed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FeedBody {
    /// The page's events, in the global order.
    events: Vec<StoredEvent>,
    /// Pass as `after` to read on. With filters it may lie past the last event returned:
    /// every event up to it was read.
    next_after: Position,
}

pub(crate) fn number<T: std::str::FromStr + PartialOrd>(
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

/// A JSON page's `limit`: 1 to [`FEED_MAX_LIMIT`], default [`FEED_DEFAULT_LIMIT`].
fn page_limit(value: Option<&str>) -> Result<i64, ApiError> {
    number("limit", value, FEED_DEFAULT_LIMIT, 1, FEED_MAX_LIMIT)
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|m| m.trim().starts_with(NDJSON)))
}

/// `GET /api/v1/events`: events after `after` in the gap-safe global order, optionally
/// filtered. With `wait_ms`, an empty page waits (long poll) until events commit or the
/// time is up. With `Accept: application/x-ndjson`, streams up to `limit` events (at
/// most 1,000,000; default all up to the head) as one JSON object per line.
#[utoipa::path(get, path = "/api/v1/events", tag = "audit", params(("after" = Option<String>, Query, pattern = "^[0-9a-fA-F]{16}[0-7][0-9a-fA-F]{15}$", description = "Position token to read after"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1-1000, default 100 (NDJSON: up to 1000000, default all)"), ("wait_ms" = Option<u64>, Query, minimum = 0, maximum = 30000, description = "Long-poll up to this many milliseconds when nothing is there yet (at most 30000)"), ("aggregate_type" = Option<String>, Query, max_length = 64, pattern = "^[A-Za-z0-9_]*$", description = "technology or job"), ("event_type" = Option<String>, Query, max_length = 64, pattern = "^[A-Za-z0-9_]*$", description = "Only this event type"), ("project_id" = Option<i64>, Query, minimum = 1, description = "Only this project's events"), ("since" = Option<String>, Query, format = DateTime, description = "Only events recorded at or after this RFC 3339 time"), ("until" = Option<String>, Query, format = DateTime, description = "Only events recorded before this RFC 3339 time")), responses((status = 200, description = "Events in the gap-safe global order, and next_after (or NDJSON lines)", body = FeedBody), (status = 400, description = "Malformed parameter (problem+json)")))]
pub async fn events_feed(
    State(state): State<AuditState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let after = position("after", query.after.as_deref())?.unwrap_or(Position::ZERO);
    let filter = FeedFilter {
        aggregate_type: label("aggregate_type", query.aggregate_type.as_deref())?,
        event_type: label("event_type", query.event_type.as_deref())?,
        project_id: query
            .project_id
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| number("project_id", Some(t), 0, 1, i64::MAX))
            .transpose()?,
        since: time("since", query.since.as_deref())?,
        until: time("until", query.until.as_deref())?,
    };
    if wants_ndjson(&headers) {
        let limit = number(
            "limit",
            query.limit.as_deref(),
            NDJSON_MAX_LIMIT,
            1,
            NDJSON_MAX_LIMIT,
        )?;
        return Ok(stream_ndjson(
            state.store.pool().clone(),
            after,
            limit,
            filter,
        ));
    }
    let limit = page_limit(query.limit.as_deref())?;
    let wait_ms = number("wait_ms", query.wait_ms.as_deref(), 0, 0, FEED_MAX_WAIT_MS)?;
    let (events, next_after) = wait_for_feed(
        state.store.pool(),
        state.store.signal(),
        after,
        limit,
        &filter,
        Duration::from_millis(wait_ms),
        FALLBACK_POLL,
    )
    .await?;
    let mut response = Json(FeedBody { events, next_after }).into_response();
    if let Ok(value) = HeaderValue::from_str(&next_after.to_string()) {
        response.headers_mut().insert("x-cc-position", value);
    }
    Ok(response)
}

/// Streams up to `limit` events after `after` as NDJSON, page by page, up to the head,
/// then one last line `{"end": {"events", "truncated", "next_after"}}`: whether the
/// stream stopped at `limit` with more events left, and where to resume. A stream that
/// ends without it was cut.
fn stream_ndjson(pool: PgPool, after: Position, limit: i64, filter: FeedFilter) -> Response {
    const PAGE: i64 = 1000;
    // (cursor, sent, reached the head, end line written)
    let lines = futures::stream::try_unfold(
        (after, 0_i64, false, false),
        move |(cursor, sent, done, ended)| {
            let (pool, filter) = (pool.clone(), filter.clone());
            async move {
                if ended {
                    return Ok::<_, std::io::Error>(None);
                }
                if done || sent >= limit {
                    let end = json!({"end": {
                        "events": sent,
                        "truncated": !done,
                        "next_after": cursor,
                    }});
                    let mut line = serde_json::to_vec(&end).map_err(std::io::Error::other)?;
                    line.push(b'\n');
                    return Ok(Some((bytes::Bytes::from(line), (cursor, sent, done, true))));
                }
                let requested = PAGE.min(limit - sent);
                let (events, next) = read_feed_filtered(&pool, cursor, requested, &filter)
                    .await
                    .map_err(std::io::Error::other)?;
                let mut chunk = Vec::new();
                for event in &events {
                    serde_json::to_writer(&mut chunk, event).map_err(std::io::Error::other)?;
                    chunk.push(b'\n');
                }
                let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
                // A page short of what was asked reached the head.
                let finished = count < requested || next <= cursor;
                let sent = sent + count;
                Ok(Some((
                    bytes::Bytes::from(chunk),
                    (next, sent, finished, false),
                )))
            }
        },
    );
    let mut response = Body::from_stream(lines).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}
