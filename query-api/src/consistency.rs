//! Read-your-writes. Every read answers with `X-CC-Position`: the checkpoint of the read
//! model(s) it read, taken in the same statement as the data. A request carrying
//! `X-CC-Min-Position: P` (a position a command returned) first waits, up to a bound,
//! until the read model has applied everything of its kind up to P *on the pool that
//! will serve it* ([`pool_for`]): a replica that has not got there within the bound (its
//! replay is behind, paused, or it stopped answering) hands the read to the primary,
//! which answers if it has reached P; only when no pool has, the answer is 503 with
//! `Retry-After`.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use commandcenter_api_error::ApiError;
use commandcenter_event_store::Position;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::bad_parameter;
use crate::pools::{ChosenPool, ReadPools};

/// The header a client sends to read its own writes.
pub const MIN_POSITION_HEADER: &str = "x-cc-min-position";

/// The position a request requires, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinPosition(pub Option<Position>);

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(MIN_POSITION_HEADER) else {
            return Ok(Self(None));
        };
        let text = value
            .to_str()
            .map_err(|_| bad_parameter("X-CC-Min-Position", "must be a position token"))?;
        let position = text
            .trim()
            .parse::<Position>()
            .map_err(|e| bad_parameter("X-CC-Min-Position", e.to_string()))?;
        Ok(Self(Some(position)))
    }
}

/// True when read model `view` (following `aggregate_type`) on `pool` has applied every
/// event of its kind at or before `min`. The event at `min` itself must be on this pool
/// already: a replica that has not replayed it yet must not answer "nothing pending".
async fn reached(
    pool: &PgPool,
    view: &str,
    aggregate_type: &str,
    min: Position,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "WITH cp AS ( \
            SELECT coalesce((SELECT tx_id FROM projection_checkpoints WHERE projection = $1), 0) AS tx, \
                   coalesce((SELECT global_position FROM projection_checkpoints WHERE projection = $1), 0) AS pos) \
         SELECT EXISTS (SELECT 1 FROM events WHERE global_position = $3 AND tx_id = $2::text::xid8) \
            AND NOT EXISTS ( \
            SELECT 1 FROM events, cp \
             WHERE (events.tx_id, events.global_position) > (cp.tx::text::xid8, cp.pos) \
               AND (events.tx_id, events.global_position) <= ($2::text::xid8, $3) \
               AND events.aggregate_type = $4)",
    )
    .bind(view)
    .bind(min.tx_id_text())
    .bind(min.global_position)
    .bind(aggregate_type)
    .fetch_one(pool)
    .await
}

/// Waits until every `(view, aggregate_type)` in `views` has reached `min` on `pool`,
/// re-checking on each change announcement (`changes`) and at least every 10 ms.
pub async fn wait_until_reached(
    pool: &PgPool,
    views: &[(&str, &str)],
    min: Option<Position>,
    bound: Duration,
    changes: &mut watch::Receiver<u64>,
) -> Result<(), ApiError> {
    // The zero position (before every event) is reached by every read model: nothing
    // to wait for, though no event sits at it.
    let Some(min) = min.filter(|min| *min != Position::ZERO) else {
        return Ok(());
    };
    let deadline = Instant::now() + bound;
    loop {
        changes.mark_unchanged();
        let mut all = true;
        for (view, aggregate_type) in views {
            if !reached(pool, view, aggregate_type, min).await? {
                all = false;
                break;
            }
        }
        if all {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ApiError::NotCaughtUp(format!(
                "the read model has not reached position {min} within {} ms; retry",
                bound.as_millis()
            )));
        }
        let nap = (deadline - now).min(Duration::from_millis(10));
        let _ = tokio::time::timeout(nap, changes.changed()).await;
    }
}

/// The pool that serves a read needing `min` over `views`. Without `min`, the next
/// replica in rotation (or the primary): stale but fast. With it: that replica once it
/// has reached `min`, waiting up to `bound`; past the bound, or when the replica fails,
/// the primary if it has reached `min` (waiting for the rest of the bound when the
/// replica failed early). 503 (`NotCaughtUp`) only when no pool has reached `min`.
pub async fn pool_for(
    pools: &ReadPools,
    views: &[(&str, &str)],
    min: Option<Position>,
    bound: Duration,
    changes: &mut watch::Receiver<u64>,
) -> Result<ChosenPool, ApiError> {
    let chosen = pools.choose();
    let Some(min) = min.filter(|min| *min != Position::ZERO) else {
        return Ok(chosen);
    };
    let deadline = Instant::now() + bound;
    if !chosen.is_replica() {
        wait_until_reached(&chosen.pool, views, Some(min), bound, changes).await?;
        return Ok(chosen);
    }
    match wait_until_reached(&chosen.pool, views, Some(min), bound, changes).await {
        Ok(()) => return Ok(chosen),
        Err(ApiError::NotCaughtUp(_)) => {
            tracing::debug!(replica = %chosen.name, %min, "replica behind past the bound; asking the primary");
        }
        Err(err @ ApiError::Unavailable(_)) => pools.note_failure(&chosen, &err),
        Err(err) => return Err(err),
    }
    let primary = pools.primary();
    let rest = deadline.saturating_duration_since(Instant::now());
    wait_until_reached(&primary.pool, views, Some(min), rest, changes).await?;
    Ok(primary)
}
