//! Tamper evidence, checkpoints and the export/import of the whole history.
//!
//! - [`verify`] recomputes every hash link: event *n* of an aggregate must hash to
//!   sha256(hash of event *n−1* ‖ canonical form of event *n*), with no sequence missing.
//!   An altered payload breaks its own link; a deleted event leaves a gap.
//! - A [`Checkpoint`] records the head of the store and a hash over every aggregate's
//!   last (sequence, hash) up to it, signed with HMAC-SHA256: events deleted at the tail
//!   of a chain, invisible to the links, change that hash.
//! - [`export`] writes events in the global order as NDJSON; [`import`] loads such a file
//!   into an empty store in one transaction (positions keep the file's order), checking
//!   each recomputed hash against the file's: a bad file leaves the store empty.

use chrono::{DateTime, SubsecRound, Utc};
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::{PgPool, Row};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::feed::{read_feed_filtered, FeedFilter};
use crate::{head, Position, StoreError, StoredEvent};

/// Broken links listed in a report (the count covers all of them).
pub const MAX_LISTED: usize = 1000;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyScope {
    /// Only the aggregates of this project.
    pub project_id: Option<i64>,
    /// Only links from this position on (every chain is still read from its start).
    pub from: Option<Position>,
}

/// One broken link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The event whose link is broken.
    pub sequence: i64,
    /// Its position.
    pub position: Position,
    /// What is wrong.
    pub reason: String,
}

/// How the latest checkpoint held up.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointCheck {
    /// Its id.
    pub id: i64,
    /// The head it recorded.
    pub head: Position,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// Events up to the head then, and now.
    pub events_then: i64,
    /// Events up to the head now.
    pub events_now: i64,
    /// Whether every chain head recorded then is still there, unchanged.
    pub intact: bool,
    /// `valid`, `invalid`, or `unchecked` (no audit key given).
    pub signature: &'static str,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Events whose link was checked.
    pub events_checked: u64,
    /// Aggregates seen.
    pub aggregates: u64,
    /// Broken links found.
    pub broken_count: u64,
    /// The first [`MAX_LISTED`] of them.
    pub broken: Vec<BrokenLink>,
    /// The latest checkpoint's check (whole-store verifications only).
    pub checkpoint: Option<CheckpointCheck>,
}

impl VerifyReport {
    /// True when nothing is broken and the checkpoint (if any) holds.
    pub fn passed(&self) -> bool {
        self.broken_count == 0
            && self
                .checkpoint
                .as_ref()
                .is_none_or(|c| c.intact && c.signature != "invalid")
    }
}

/// Recomputes every hash link in `scope`, and checks the latest checkpoint when the scope
/// is the whole store.
pub async fn verify(
    pool: &PgPool,
    scope: &VerifyScope,
    audit_key: Option<&[u8]>,
) -> Result<VerifyReport, StoreError> {
    let from = scope.from.unwrap_or(Position::ZERO);
    let mut rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, tx_id::text AS tx_text, global_position, \
                prev_sequence, hash = expected AS linked \
           FROM (SELECT aggregate_type, aggregate_id, sequence, tx_id, global_position, hash, \
                        lag(sequence) OVER w AS prev_sequence, \
                        sha256(coalesce(lag(hash) OVER w, cc_genesis_hash()) || cc_event_canonical( \
                            aggregate_type, aggregate_id, sequence, event_type, event_version, \
                            payload, metadata, recorded_at)) AS expected \
                   FROM events \
                  WHERE $1::bigint IS NULL OR metadata->>'project_id' = $1::text \
                 WINDOW w AS (PARTITION BY aggregate_type, aggregate_id ORDER BY sequence)) c \
          WHERE (tx_id, global_position) >= ($2::text::xid8, $3) \
          ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .bind(scope.project_id)
    .bind(from.tx_id_text())
    .bind(from.global_position)
    .fetch(pool);
    let mut report = VerifyReport {
        events_checked: 0,
        aggregates: 0,
        broken_count: 0,
        broken: Vec::new(),
        checkpoint: None,
    };
    let mut last_aggregate: Option<(String, String)> = None;
    while let Some(row) = rows.try_next().await? {
        report.events_checked += 1;
        let aggregate_type: String = row.try_get("aggregate_type")?;
        let aggregate_id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let previous: Option<i64> = row.try_get("prev_sequence")?;
        let linked: bool = row.try_get("linked")?;
        let key = (aggregate_type, aggregate_id);
        if last_aggregate.as_ref() != Some(&key) {
            report.aggregates += 1;
        }
        let reason = match previous {
            None if sequence != 1 => Some(format!("events 1 to {} are missing", sequence - 1)),
            Some(p) if p != sequence - 1 => {
                Some(format!("events {} to {} are missing", p + 1, sequence - 1))
            }
            _ if !linked => Some(
                "hash does not match: this event (or the hash of the one before) was altered"
                    .to_string(),
            ),
            _ => None,
        };
        if let Some(reason) = reason {
            report.broken_count += 1;
            if report.broken.len() < MAX_LISTED {
                let tx: String = row.try_get("tx_text")?;
                report.broken.push(BrokenLink {
                    aggregate_type: key.0.clone(),
                    aggregate_id: key.1.clone(),
                    sequence,
                    position: Position::new(
                        tx.parse().unwrap_or_default(),
                        row.try_get("global_position")?,
                    ),
                    reason,
                });
            }
        }
        last_aggregate = Some(key);
    }
    if scope.project_id.is_none() && scope.from.is_none() {
        report.checkpoint = check_latest_checkpoint(pool, audit_key).await?;
    }
    Ok(report)
}

/// A signed record of the store's head.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    /// Its id.
    pub id: i64,
    /// The head position it covers.
    pub head: Position,
    /// Events up to the head.
    pub events: i64,
    /// Aggregates up to the head.
    pub aggregates: i64,
    /// Hex sha256 over every aggregate's last (sequence, hash) up to the head.
    pub heads_hash: String,
    /// Hex HMAC-SHA256 of the fields above with the audit key.
    pub signature: String,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
}

struct Heads {
    events: i64,
    aggregates: i64,
    hash: Vec<u8>,
}

async fn heads_upto(pool: &PgPool, upto: Position) -> Result<Heads, StoreError> {
    let row = sqlx::query(
        "WITH upto AS (SELECT aggregate_type, aggregate_id, sequence, hash FROM events \
                        WHERE (tx_id, global_position) <= ($1::text::xid8, $2)), \
              heads AS (SELECT DISTINCT ON (aggregate_type, aggregate_id) \
                               aggregate_type, aggregate_id, sequence, hash \
                          FROM upto ORDER BY aggregate_type, aggregate_id, sequence DESC) \
         SELECT (SELECT count(*) FROM upto) AS events, \
                (SELECT count(*) FROM heads) AS aggregates, \
                sha256(coalesce((SELECT string_agg( \
                    convert_to(aggregate_type || '/' || aggregate_id || '/' || sequence::text || '/', 'UTF8') || hash, \
                    ''::bytea ORDER BY aggregate_type COLLATE \"C\", aggregate_id COLLATE \"C\") \
                  FROM heads), ''::bytea)) AS heads_hash",
    )
    .bind(upto.tx_id_text())
    .bind(upto.global_position)
    .fetch_one(pool)
    .await?;
    Ok(Heads {
        events: row.try_get("events")?,
        aggregates: row.try_get("aggregates")?,
        hash: row.try_get("heads_hash")?,
    })
}

fn sign(key: &[u8], head: Position, heads: &Heads, created_at: DateTime<Utc>) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(
        format!(
            "{head}|{}|{}|{}|{}",
            heads.events,
            heads.aggregates,
            hex::encode(&heads.hash),
            created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
        .as_bytes(),
    );
    mac.finalize().into_bytes().to_vec()
}

/// Records a checkpoint at the current head, signed with `key`.
pub async fn create_checkpoint(pool: &PgPool, key: &[u8]) -> Result<Checkpoint, StoreError> {
    let head = head(pool).await?.ok_or(StoreError::Empty)?;
    let heads = heads_upto(pool, head).await?;
    let created_at = Utc::now().trunc_subsecs(6);
    let signature = sign(key, head, &heads, created_at);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_checkpoints (head, events, aggregates, heads_hash, signature, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(head.to_string())
    .bind(heads.events)
    .bind(heads.aggregates)
    .bind(&heads.hash)
    .bind(&signature)
    .bind(created_at)
    .fetch_one(pool)
    .await?;
    Ok(Checkpoint {
        id,
        head,
        events: heads.events,
        aggregates: heads.aggregates,
        heads_hash: hex::encode(&heads.hash),
        signature: hex::encode(signature),
        created_at,
    })
}

async fn check_latest_checkpoint(
    pool: &PgPool,
    key: Option<&[u8]>,
) -> Result<Option<CheckpointCheck>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT id, head, events, aggregates, heads_hash, signature, created_at \
           FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let head_text: String = row.try_get("head")?;
    let head: Position = head_text
        .parse()
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
    let recorded = Heads {
        events: row.try_get("events")?,
        aggregates: row.try_get("aggregates")?,
        hash: row.try_get("heads_hash")?,
    };
    let signature: Vec<u8> = row.try_get("signature")?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    let now = heads_upto(pool, head).await?;
    let signature_state = match key {
        None => "unchecked",
        Some(key) if sign(key, head, &recorded, created_at) == signature => "valid",
        Some(_) => "invalid",
    };
    Ok(Some(CheckpointCheck {
        id: row.try_get("id")?,
        head,
        created_at,
        events_then: recorded.events,
        events_now: now.events,
        intact: now.events == recorded.events
            && now.aggregates == recorded.aggregates
            && now.hash == recorded.hash,
        signature: signature_state,
    }))
}

/// Which events to export.
#[derive(Debug, Clone, Default)]
pub struct ExportScope {
    /// Only this project's events.
    pub project_id: Option<i64>,
    /// Only events after this position.
    pub after: Option<Position>,
    /// Only events up to and including this position.
    pub until: Option<Position>,
}

/// Writes the events of `scope` up to the current head to `out`, one JSON object per
/// line in the global order; calls `progress` with the running count. Returns the count.
pub async fn export(
    pool: &PgPool,
    scope: &ExportScope,
    out: &mut (impl AsyncWrite + Unpin),
    mut progress: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let Some(head) = head(pool).await? else {
        return Ok(0);
    };
    let until = scope.until.map_or(head, |u| u.min(head));
    let filter = FeedFilter {
        project_id: scope.project_id,
        ..FeedFilter::default()
    };
    let mut after = scope.after.unwrap_or(Position::ZERO);
    let mut written = 0;
    'pages: loop {
        let (events, next) = read_feed_filtered(pool, after, 5000, &filter).await?;
        for event in &events {
            if event.position > until {
                break 'pages;
            }
            let mut line = serde_json::to_vec(event)?;
            line.push(b'\n');
            out.write_all(&line).await.map_err(StoreError::Io)?;
            written += 1;
        }
        progress(written);
        if next <= after || next >= until {
            break;
        }
        after = next;
    }
    out.flush().await.map_err(StoreError::Io)?;
    Ok(written)
}

/// What [`import`] loaded.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ImportReport {
    /// Events written.
    pub events: u64,
    /// Groups inserted (one per original transaction, split past 5,000 events).
    pub transactions: u64,
}

/// Events written per transaction at most when one original transaction was larger.
const IMPORT_BATCH: usize = 5000;

/// Loads an [`export`] into an empty store, checking every hash; calls `progress` with
/// the running count.
pub async fn import(
    pool: &PgPool,
    input: &mut (impl AsyncBufRead + Unpin),
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, StoreError> {
    // One transaction for the whole file: a file that fails half-way leaves the store
    // empty, so the import can be fixed and run again. Positions still keep the file's
    // order (identity values rise within a transaction).
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1) e")
        .fetch_one(&mut *tx)
        .await?;
    if existing > 0 {
        return Err(StoreError::NotEmpty);
    }
    let mut report = ImportReport {
        events: 0,
        transactions: 0,
    };
    let mut group: Vec<StoredEvent> = Vec::new();
    let mut lines = input.lines();
    let mut number = 0_u64;
    while let Some(line) = lines.next_line().await.map_err(StoreError::Io)? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let event: StoredEvent = serde_json::from_str(&line).map_err(|source| {
            StoreError::BadImport(format!("line {number} is not an exported event: {source}"))
        })?;
        let same_tx = group
            .last()
            .is_none_or(|e| e.position.tx_id == event.position.tx_id);
        if !same_tx || group.len() >= IMPORT_BATCH {
            write_group(&mut tx, &group).await?;
            report.transactions += 1;
            report.events += group.len() as u64;
            progress(report.events);
            group.clear();
        }
        group.push(event);
    }
    if !group.is_empty() {
        write_group(&mut tx, &group).await?;
        report.transactions += 1;
        report.events += group.len() as u64;
        progress(report.events);
    }
    tx.commit().await?;
    Ok(report)
}

async fn write_group(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    group: &[StoredEvent],
) -> Result<(), StoreError> {
    let column = |f: fn(&StoredEvent) -> String| group.iter().map(f).collect::<Vec<_>>();
    let rows = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, recorded_at) \
         SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, \
                e.payload, e.metadata, e.recorded_at \
           FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], \
                       $7::jsonb[], $8::timestamptz[]) WITH ORDINALITY \
                AS e(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
                     metadata, recorded_at, n) \
          ORDER BY e.n \
         RETURNING aggregate_type, aggregate_id, sequence, hash",
    )
    .bind(column(|e| e.aggregate_type.clone()))
    .bind(column(|e| e.aggregate_id.clone()))
    .bind(group.iter().map(|e| e.sequence).collect::<Vec<_>>())
    .bind(column(|e| e.event_type.clone()))
    .bind(column(|e| e.event_version.clone()))
    .bind(group.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
    .bind(group.iter().map(|e| e.metadata.clone()).collect::<Vec<_>>())
    .bind(group.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await
    .map_err(|err| StoreError::BadImport(format!("cannot insert: {err}")))?;
    for row in rows {
        let (aggregate_type, aggregate_id, sequence): (String, String, i64) = (
            row.try_get("aggregate_type")?,
            row.try_get("aggregate_id")?,
            row.try_get("sequence")?,
        );
        let hash: Vec<u8> = row.try_get("hash")?;
        let expected = group
            .iter()
            .find(|e| {
                e.sequence == sequence
                    && e.aggregate_id == aggregate_id
                    && e.aggregate_type == aggregate_type
            })
            .map(|e| e.hash.as_str());
        if expected != Some(hex::encode(&hash).as_str()) {
            return Err(StoreError::BadImport(format!(
                "event {sequence} of {aggregate_type}/{aggregate_id} hashes differently than \
                 exported: the file was altered"
            )));
        }
    }
    Ok(())
}
