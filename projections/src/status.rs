//! `projections status`: where the relay and each read model stand against the head of
//! the event store, in events and in seconds.
//!
//! The head and the lag count every *committed* event, including those the gap-safe
//! feed still holds back behind an open transaction: a stall shows as growing lag.
//!
//! Nothing here scans the store: the metrics sampler runs this on every read of
//! `/metrics` (at most once a second) and readiness on every probe, in every process,
//! on stores of millions of events. The head is one step of the
//! `(tx_id, global_position)` index; a lag reads at most [`LAG_WINDOW`] index entries
//! after the consumer's checkpoint (exact below that, extrapolated from the positions
//! beyond it, and flagged `lag_estimated`); the number of events is the planner's
//! estimate (`pg_class.reltuples`), or the head's position before the table was ever
//! analyzed. Idle projectors move their checkpoints up to the head of the feed (see
//! `Projector`), so a read model's window starts near the head even when the newest
//! events are all of another aggregate type.

use commandcenter_event_store::{lock_key, Position};
use commandcenter_relay::{load_relay_checkpoint, EventStream, Relay};
use serde::Serialize;
use sqlx::PgPool;

use crate::{JobView, ProjectionError, Projector, TechnologyView};

/// Most events read to measure one consumer's lag; beyond it the lag is estimated.
pub const LAG_WINDOW: i64 = 10_000;

/// How far one consumer of the event store is behind.
#[derive(Debug, Clone, Serialize)]
pub struct LagStatus {
    /// `relay` or the read model's name.
    pub name: String,
    /// Its position (absent before its first event).
    pub checkpoint: Option<Position>,
    /// Committed events it has not processed yet (exact up to [`LAG_WINDOW`]).
    pub lag_events: i64,
    /// True when `lag_events` is an estimate: more than [`LAG_WINDOW`] events lie after
    /// the checkpoint, or the relay has no checkpoint yet.
    pub lag_estimated: bool,
    /// Age of the oldest of those, in seconds (0 when caught up; when estimated, the age
    /// of the oldest one seen).
    pub lag_seconds: f64,
    /// Gaps this read model met so far (filled from the event store, or open).
    pub gaps_detected: i64,
    /// Events read from the event store to fill those gaps.
    pub gap_events_filled: i64,
    /// The gap that stops the read model now, if one does.
    pub open_gap: Option<String>,
    /// The process that holds this consumer's lock (`pid=… <lock>`), if one does.
    pub active: Option<String>,
    /// Why the figures above may not mean what they seem (e.g. a subject prefix no relay
    /// of this database publishes under).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Position of the newest committed event.
    pub head: Option<Position>,
    /// Committed events in the store, estimated: the planner's row count
    /// (`pg_class.reltuples`, as of the last `ANALYZE` or `VACUUM`), or the head's
    /// `global_position` before the table was first analyzed (an upper bound: rolled-back
    /// inserts use positions too). Counting exactly would scan the whole store.
    pub events: i64,
    /// The relay to `stream`.
    pub relay: LagStatus,
    /// Each read model.
    pub projections: Vec<LagStatus>,
    /// The streaming replicas connected to this server, as it sees them
    /// (`pg_stat_replication`; empty without replicas, or without the right to see them).
    pub replicas: Vec<ReplicaStatus>,
}

/// One streaming replica as the primary sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// Its `application_name` (`cluster_name` or `walreceiver`).
    pub name: String,
    /// Its address.
    pub client: Option<String>,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// WAL written here and not replayed there, in bytes.
    pub lag_bytes: Option<i64>,
    /// The time the last replayed WAL took to be replayed there, in seconds (the server
    /// reports none once the replica has been caught up for a while).
    pub replay_lag_seconds: Option<f64>,
}

/// Name, address, state, lag in bytes and replay lag in seconds.
type ReplicationRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<f64>,
);

/// The streaming replicas of the server `pool` connects to.
pub async fn replication(pool: &PgPool) -> Result<Vec<ReplicaStatus>, ProjectionError> {
    let rows: Vec<ReplicationRow> = sqlx::query_as(
        "SELECT application_name::text, client_addr::text, state::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, \
                    extract(epoch FROM replay_lag)::float8 \
               FROM pg_stat_replication ORDER BY application_name, client_addr::text",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(name, client, state, lag_bytes, replay_lag_seconds)| ReplicaStatus {
                name: name.unwrap_or_default(),
                client,
                state: state.unwrap_or_default(),
                lag_bytes,
                replay_lag_seconds,
            },
        )
        .collect())
}

/// How many committed events follow `checkpoint` (of `aggregate_type`, or of any type),
/// reading at most [`LAG_WINDOW`] of them.
async fn lag(
    pool: &PgPool,
    name: &str,
    checkpoint: Option<Position>,
    aggregate_type: Option<&str>,
    head: Option<Position>,
    events: i64,
) -> Result<LagStatus, ProjectionError> {
    let (gaps_detected, gap_events_filled, open_gap): (i64, i64, Option<String>) =
        sqlx::query_as(
            "SELECT count(*), coalesce(sum(events_filled), 0)::bigint, \
                    (SELECT detail FROM projection_gaps WHERE projection = $1 AND resolved_at IS NULL \
                      ORDER BY id DESC LIMIT 1) \
               FROM projection_gaps WHERE projection = $1",
        )
        .bind(name)
        .fetch_one(pool)
        .await?;
    let mut status = LagStatus {
        name: name.to_string(),
        checkpoint,
        lag_events: 0,
        lag_estimated: false,
        lag_seconds: 0.0,
        gaps_detected,
        gap_events_filled,
        open_gap,
        active: None,
        note: None,
    };
    if checkpoint.is_none() && aggregate_type.is_none() {
        // Nothing processed yet by a consumer of every event: the whole store is its lag
        // (a relay that never ran, or `status` asked with another prefix).
        let oldest: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - recorded_at)::float8 FROM events \
              ORDER BY tx_id, global_position LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        status.lag_events = if oldest.is_some() { events.max(1) } else { 0 };
        status.lag_estimated = oldest.is_some();
        status.lag_seconds = oldest.unwrap_or(0.0).max(0.0);
        return Ok(status);
    }
    let from = checkpoint.unwrap_or(Position::ZERO);
    let (scanned, matched, oldest_age, newest_age, last_seen): (
        i64,
        i64,
        Option<f64>,
        Option<f64>,
        Option<i64>,
    ) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE $3::text IS NULL OR aggregate_type = $3), \
                extract(epoch FROM now() - min(recorded_at) \
                    FILTER (WHERE $3::text IS NULL OR aggregate_type = $3))::float8, \
                extract(epoch FROM now() - max(recorded_at))::float8, \
                max(global_position) \
           FROM (SELECT aggregate_type, recorded_at, global_position FROM events \
                  WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
                  ORDER BY tx_id, global_position LIMIT $4) AS w",
    )
    .bind(from.tx_id_text())
    .bind(from.global_position)
    .bind(aggregate_type)
    .bind(LAG_WINDOW)
    .fetch_one(pool)
    .await?;
    let estimated = scanned >= LAG_WINDOW;
    let (lag_events, age) = if estimated {
        // The events beyond the window, from the positions drawn since its last one, in
        // the proportion of this consumer's type seen in the window.
        let beyond = head.map_or(0, |h| h.global_position) - last_seen.unwrap_or(0);
        let beyond = beyond.max(0) as f64 * matched as f64 / scanned as f64;
        (matched + beyond.round() as i64, oldest_age.or(newest_age))
    } else {
        (matched, oldest_age)
    };
    status.lag_events = lag_events;
    status.lag_estimated = estimated;
    status.lag_seconds = age.unwrap_or(0.0).max(0.0);
    Ok(status)
}

/// The `application_name` of the session holding advisory lock `name`, if any.
async fn lock_holder(pool: &PgPool, name: &str) -> Result<Option<String>, ProjectionError> {
    let key = lock_key(name);
    Ok(sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.locktype = 'advisory' AND l.granted AND l.database = \
                (SELECT oid FROM pg_database WHERE datname = current_database()) \
            AND l.classid = (($1 >> 32) & 4294967295)::bigint::oid \
            AND l.objid = ($1 & 4294967295)::bigint::oid AND l.objsubid = 1 \
          LIMIT 1",
    )
    .bind(key)
    .fetch_optional(pool)
    .await?)
}

async fn projection_checkpoint(
    pool: &PgPool,
    name: &str,
) -> Result<Option<Position>, ProjectionError> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT tx_id, global_position FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(tx, pos)| Position::new(tx as u64, pos)))
}

/// Reads the status of the relay to `stream` and of every read model.
pub async fn status(pool: &PgPool, stream: &EventStream) -> Result<StatusReport, ProjectionError> {
    let head: Option<(String, i64)> = sqlx::query_as(
        "SELECT tx_id::text AS tx_text, global_position FROM events \
           ORDER BY tx_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let head = head.and_then(|(tx, pos)| tx.parse().ok().map(|tx| Position::new(tx, pos)));
    // `reltuples` is -1 before the table's first ANALYZE (PostgreSQL 14 and later).
    let reltuples: Option<f64> =
        sqlx::query_scalar("SELECT reltuples::float8 FROM pg_class WHERE oid = 'events'::regclass")
            .fetch_optional(pool)
            .await?;
    let events = match (head, reltuples) {
        (None, _) => 0,
        (Some(_), Some(n)) if n > 0.0 => n.round() as i64,
        (Some(head), _) => head.global_position,
    };
    let relay_checkpoint = load_relay_checkpoint(pool, &stream.name()).await?;
    let mut relay = lag(pool, "relay", relay_checkpoint, None, head, events).await?;
    relay.active = lock_holder(pool, &Relay::lock_name(stream)).await?;
    if relay_checkpoint.is_none() && head.is_some() {
        let known: Vec<String> =
            sqlx::query_scalar("SELECT stream FROM relay_checkpoints ORDER BY stream")
                .fetch_all(pool)
                .await?;
        relay.note = Some(if known.is_empty() {
            format!(
                "no relay has published this database's events to stream {} (prefix {:?}) yet",
                stream.name(),
                stream.prefix()
            )
        } else {
            format!(
                "no stream for prefix {:?} in this database's deployment: its relay publishes \
                 to {}; set CC_NATS_PREFIX to the servers' prefix (the relay lag above is \
                 every event, estimated)",
                stream.prefix(),
                known.join(", ")
            )
        });
    }
    let mut projections = Vec::new();
    for (name, aggregate_type) in [(TechnologyView::NAME, "technology"), (JobView::NAME, "job")] {
        let checkpoint = projection_checkpoint(pool, name).await?;
        let mut status = lag(pool, name, checkpoint, Some(aggregate_type), head, events).await?;
        status.active =
            lock_holder(pool, &Projector::<TechnologyView>::lock_name(stream, name)).await?;
        projections.push(status);
    }
    Ok(StatusReport {
        head,
        events,
        relay,
        projections,
        replicas: replication(pool).await?,
    })
}
