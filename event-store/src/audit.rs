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
#[derive(Debug, Clone)]
pub struct VerifyScope {
    /// Only the aggregates of this project.
    pub project_id: Option<i64>,
    /// Only links from this position on (every chain is still read from its start).
    pub from: Option<Position>,
    /// How far `recorded_at` may go backwards (clocks and transaction start times
    /// differ) before it is reported.
    pub clock_tolerance: std::time::Duration,
}

/// The default [`VerifyScope::clock_tolerance`]: the longest a write transaction may sit
/// idle (`CC_IDLE_TX_TIMEOUT_MS`), since `recorded_at` is its start time.
pub const CLOCK_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(10);

/// One broken link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckpointCheck {
    /// Its id.
    pub id: i64,
    /// The head it recorded.
    pub head: Position,
    /// When it was taken.
    #[serde(serialize_with = "commandcenter_domain::serde_helpers::time")]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// The checkpoints' own chain (whole-store verifications only).
    pub checkpoint_chain: Option<ChainCheck>,
    /// The comparison with the witnessed checkpoints, when asked for.
    pub witness: Option<WitnessCheck>,
}

impl Default for VerifyScope {
    fn default() -> Self {
        Self {
            project_id: None,
            from: None,
            clock_tolerance: CLOCK_TOLERANCE,
        }
    }
}

impl VerifyReport {
    /// True when nothing is broken, the checkpoints hold and the witness agrees.
    pub fn passed(&self) -> bool {
        self.broken_count == 0
            && self
                .checkpoint
                .as_ref()
                .is_none_or(|c| c.intact && c.signature != "invalid")
            && self
                .checkpoint_chain
                .as_ref()
                .is_none_or(|c| c.problems.is_empty())
            && self.witness.as_ref().is_none_or(|w| w.problems.is_empty())
    }
}

/// Recomputes every hash link in `scope` and checks that `recorded_at` never goes back
/// (along a chain, or against the global order) by more than the scope's tolerance. For
/// the whole store it also checks the checkpoints' chain and the latest checkpoint, and,
/// given `witnessed` checkpoints, compares the store with them.
pub async fn verify(
    pool: &PgPool,
    scope: &VerifyScope,
    audit_key: Option<&[u8]>,
    witnessed: Option<&[Checkpoint]>,
) -> Result<VerifyReport, StoreError> {
    let from = scope.from.unwrap_or(Position::ZERO);
    let tolerance = chrono::Duration::from_std(scope.clock_tolerance)
        .unwrap_or_else(|_| chrono::Duration::seconds(10));
    let mut rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, tx_id::text AS tx_text, global_position, \
                prev_sequence, hash = expected AS linked, recorded_at, prev_recorded_at, \
                latest_before \
           FROM (SELECT aggregate_type, aggregate_id, sequence, tx_id, global_position, hash, \
                        recorded_at, \
                        lag(sequence) OVER w AS prev_sequence, \
                        lag(recorded_at) OVER w AS prev_recorded_at, \
                        max(recorded_at) OVER g AS latest_before, \
                        sha256(coalesce(lag(hash) OVER w, cc_genesis_hash()) || cc_event_canonical( \
                            aggregate_type, aggregate_id, sequence, event_type, event_version, \
                            payload, metadata, recorded_at)) AS expected \
                   FROM events \
                  WHERE $1::bigint IS NULL OR metadata->>'project_id' = $1::text \
                 WINDOW w AS (PARTITION BY aggregate_type, aggregate_id ORDER BY sequence), \
                        g AS (ORDER BY tx_id, global_position \
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) c \
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
        checkpoint_chain: None,
        witness: None,
    };
    let mut last_aggregate: Option<(String, String)> = None;
    while let Some(row) = rows.try_next().await? {
        report.events_checked += 1;
        let aggregate_type: String = row.try_get("aggregate_type")?;
        let aggregate_id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let previous: Option<i64> = row.try_get("prev_sequence")?;
        let linked: bool = row.try_get("linked")?;
        let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
        let prev_recorded: Option<DateTime<Utc>> = row.try_get("prev_recorded_at")?;
        let latest_before: Option<DateTime<Utc>> = row.try_get("latest_before")?;
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
            _ => match (prev_recorded, latest_before) {
                (Some(before), _) if recorded_at < before - tolerance => Some(format!(
                    "recorded_at {recorded_at} goes backwards along the chain: {} before event \
                     {}'s (tolerance {} s)",
                    before - recorded_at,
                    sequence - 1,
                    tolerance.num_seconds()
                )),
                (_, Some(latest)) if recorded_at < latest - tolerance => Some(format!(
                    "recorded_at {recorded_at} goes backwards against the global order: {} \
                     before an event committed earlier (tolerance {} s)",
                    latest - recorded_at,
                    tolerance.num_seconds()
                )),
                _ => None,
            },
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
        let all = checkpoints(pool).await?;
        report.checkpoint = check_latest_checkpoint(pool, audit_key, &all).await?;
        report.checkpoint_chain = Some(check_chain(pool, audit_key, &all).await?);
        if let Some(witnessed) = witnessed {
            report.witness = Some(check_witness(pool, &all, witnessed).await?);
        }
    }
    Ok(report)
}

/// A signed record of the store's head.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// Hex HMAC-SHA256 of the fields above (and, from format 2, the previous
    /// checkpoint's hash and the schedule) with the audit key.
    pub signature: String,
    /// When it was taken.
    #[serde(serialize_with = "commandcenter_domain::serde_helpers::time")]
    pub created_at: DateTime<Utc>,
    /// Hex hash of the checkpoint before it (zeros for the first).
    pub previous_hash: String,
    /// Hex sha256(previous hash ‖ this checkpoint's canonical form), computed by the
    /// database: the checkpoints' own chain.
    pub hash: String,
    /// 1: signed without the previous hash (taken before the chain); 2: signed with it.
    pub format: i16,
    /// The schedule it was taken on (`serve --checkpoint-every`), if any.
    pub every_seconds: Option<i32>,
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

/// What a checkpoint's signature covers.
struct Signed<'a> {
    head: Position,
    heads: &'a Heads,
    created_at: DateTime<Utc>,
    previous_hash: &'a [u8],
    format: i16,
    every_seconds: Option<i32>,
}

fn sign(key: &[u8], signed: &Signed<'_>) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    let mut text = format!(
        "{}|{}|{}|{}|{}",
        signed.head,
        signed.heads.events,
        signed.heads.aggregates,
        hex::encode(&signed.heads.hash),
        signed
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    if signed.format >= 2 {
        text.push_str(&format!(
            "|{}|{}",
            hex::encode(signed.previous_hash),
            signed
                .every_seconds
                .map_or(String::new(), |e| e.to_string())
        ));
    }
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The advisory lock that orders checkpoint appends (the insert trigger takes it too).
const CHAIN_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('cc_audit_checkpoint_chain'))";

/// Records a checkpoint at the current head, chained to the latest one and signed with
/// `key`; `every` names the schedule it is taken on.
pub async fn create_checkpoint(
    pool: &PgPool,
    key: &[u8],
    every: Option<std::time::Duration>,
) -> Result<Checkpoint, StoreError> {
    let head = head(pool).await?.ok_or(StoreError::Empty)?;
    let heads = heads_upto(pool, head).await?;
    let every_seconds = every.map(|e| i32::try_from(e.as_secs().max(1)).unwrap_or(i32::MAX));
    let mut tx = pool.begin().await?;
    sqlx::query(CHAIN_LOCK).execute(&mut *tx).await?;
    let previous_hash: Vec<u8> = sqlx::query_scalar(
        "SELECT coalesce((SELECT hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1), cc_genesis_hash())",
    )
    .fetch_one(&mut *tx)
    .await?;
    let created_at = Utc::now().trunc_subsecs(6);
    let format = 2;
    let signature = sign(
        key,
        &Signed {
            head,
            heads: &heads,
            created_at,
            previous_hash: &previous_hash,
            format,
            every_seconds,
        },
    );
    let (id, hash): (i64, Vec<u8>) = sqlx::query_as(
        "INSERT INTO audit_checkpoints (head, events, aggregates, heads_hash, signature, created_at, \
                                        previous_hash, format, every_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, hash",
    )
    .bind(head.to_string())
    .bind(heads.events)
    .bind(heads.aggregates)
    .bind(&heads.hash)
    .bind(&signature)
    .bind(created_at)
    .bind(&previous_hash)
    .bind(format)
    .bind(every_seconds)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Checkpoint {
        id,
        head,
        events: heads.events,
        aggregates: heads.aggregates,
        heads_hash: hex::encode(&heads.hash),
        signature: hex::encode(signature),
        created_at,
        previous_hash: hex::encode(previous_hash),
        hash: hex::encode(hash),
        format,
        every_seconds,
    })
}

/// Every checkpoint, oldest first.
pub async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, head, events, aggregates, heads_hash, signature, created_at, previous_hash, \
                hash, format, every_seconds FROM audit_checkpoints ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(checkpoint_from_row).collect()
}

fn checkpoint_from_row(row: &sqlx::postgres::PgRow) -> Result<Checkpoint, StoreError> {
    let head_text: String = row.try_get("head")?;
    let head: Position = head_text
        .parse()
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
    Ok(Checkpoint {
        id: row.try_get("id")?,
        head,
        events: row.try_get("events")?,
        aggregates: row.try_get("aggregates")?,
        heads_hash: hex::encode(row.try_get::<Vec<u8>, _>("heads_hash")?),
        signature: hex::encode(row.try_get::<Vec<u8>, _>("signature")?),
        created_at: row.try_get("created_at")?,
        previous_hash: hex::encode(row.try_get::<Vec<u8>, _>("previous_hash")?),
        hash: hex::encode(row.try_get::<Vec<u8>, _>("hash")?),
        format: row.try_get("format")?,
        every_seconds: row.try_get("every_seconds")?,
    })
}

async fn check_latest_checkpoint(
    pool: &PgPool,
    key: Option<&[u8]>,
    all: &[Checkpoint],
) -> Result<Option<CheckpointCheck>, StoreError> {
    let Some(latest) = all.last() else {
        return Ok(None);
    };
    let recorded = Heads {
        events: latest.events,
        aggregates: latest.aggregates,
        hash: hex::decode(&latest.heads_hash).unwrap_or_default(),
    };
    let now = heads_upto(pool, latest.head).await?;
    Ok(Some(CheckpointCheck {
        id: latest.id,
        head: latest.head,
        created_at: latest.created_at,
        events_then: recorded.events,
        events_now: now.events,
        intact: now.events == recorded.events
            && now.aggregates == recorded.aggregates
            && now.hash == recorded.hash,
        signature: signature_state(key, latest),
    }))
}

/// `valid`, `invalid` or `unchecked` (no key) for `checkpoint`'s signature.
fn signature_state(key: Option<&[u8]>, checkpoint: &Checkpoint) -> &'static str {
    let Some(key) = key else { return "unchecked" };
    let heads = Heads {
        events: checkpoint.events,
        aggregates: checkpoint.aggregates,
        hash: hex::decode(&checkpoint.heads_hash).unwrap_or_default(),
    };
    let expected = sign(
        key,
        &Signed {
            head: checkpoint.head,
            heads: &heads,
            created_at: checkpoint.created_at,
            previous_hash: &hex::decode(&checkpoint.previous_hash).unwrap_or_default(),
            format: checkpoint.format,
            every_seconds: checkpoint.every_seconds,
        },
    );
    if hex::encode(expected) == checkpoint.signature {
        "valid"
    } else {
        "invalid"
    }
}

/// How the checkpoints' own chain held up.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ChainCheck {
    /// Checkpoints in the store.
    pub checkpoints: u64,
    /// What is wrong with the chain, in words (empty when it holds).
    pub problems: Vec<String>,
    /// What deserves a look without proving tampering (a schedule that stopped for a
    /// while: maintenance, or removed checkpoints the witness would name).
    pub warnings: Vec<String>,
}

/// Checks every checkpoint: each follows the one before it, its hash matches its
/// fields, its signature holds (with a key), scheduled ones leave no gap longer than
/// twice their schedule, and no issued checkpoint id is missing at the end.
async fn check_chain(
    pool: &PgPool,
    key: Option<&[u8]>,
    all: &[Checkpoint],
) -> Result<ChainCheck, StoreError> {
    let mut check = ChainCheck {
        checkpoints: all.len() as u64,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let altered: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM audit_checkpoints \
          WHERE hash <> sha256(previous_hash || cc_checkpoint_canonical(id, head, events, \
                aggregates, heads_hash, signature, created_at, format, every_seconds)) \
          ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    for id in altered {
        check.problems.push(format!(
            "checkpoint {id} was altered: its hash does not match its fields"
        ));
    }
    let genesis = hex::encode([0_u8; 32]);
    let mut before: Option<&Checkpoint> = None;
    for checkpoint in all {
        let expected = before.map_or(genesis.as_str(), |b| b.hash.as_str());
        if checkpoint.previous_hash != expected {
            check.problems.push(match before {
                Some(b) => format!(
                    "checkpoint {} does not follow checkpoint {}: one between them was removed \
                     or altered",
                    checkpoint.id, b.id
                ),
                None => format!(
                    "checkpoint {} is the oldest but follows another: older checkpoints were removed",
                    checkpoint.id
                ),
            });
        }
        if signature_state(key, checkpoint) == "invalid" {
            check.problems.push(format!(
                "checkpoint {}: the signature does not match (forged, or another audit key)",
                checkpoint.id
            ));
        }
        if let Some(b) = before {
            if checkpoint.created_at < b.created_at {
                check.problems.push(format!(
                    "checkpoint {} was taken before checkpoint {} that it follows",
                    checkpoint.id, b.id
                ));
            }
            if checkpoint.format < b.format {
                check.problems.push(format!(
                    "checkpoint {} has an older signature format than checkpoint {} before it",
                    checkpoint.id, b.id
                ));
            }
            // Only between two checkpoints of one schedule: the first scheduled one after
            // a manual one, or after the servers were down, is no gap of the schedule.
            if let (Some(every), Some(previous)) = (checkpoint.every_seconds, b.every_seconds) {
                let gap = checkpoint.created_at - b.created_at;
                if every == previous && gap > chrono::Duration::seconds(2 * i64::from(every) + 60) {
                    check.warnings.push(format!(
                        "no checkpoint between {} ({}) and {} ({}) although one is taken every \
                         {every} s: the schedule stopped (servers down?) or checkpoints were \
                         removed; verify against the witness to tell",
                        b.id, b.created_at, checkpoint.id, checkpoint.created_at
                    ));
                }
            }
        }
        before = Some(checkpoint);
    }
    let issued: Option<i64> = sqlx::query_scalar(
        "SELECT pg_sequence_last_value(pg_get_serial_sequence('audit_checkpoints', 'id')::regclass)",
    )
    .fetch_one(pool)
    .await?;
    let newest = all.last().map_or(0, |c| c.id);
    if let Some(issued) = issued.filter(|issued| *issued > newest) {
        check.problems.push(format!(
            "checkpoint ids up to {issued} were issued but the newest checkpoint is {newest}: \
             newer checkpoints were removed (or a checkpoint write crashed); verify against the \
             witness"
        ));
    }
    Ok(check)
}

/// How the store held up against the checkpoints witnessed outside it.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct WitnessCheck {
    /// Checkpoints the witness holds.
    pub witnessed: u64,
    /// What is wrong, in words (empty when the store agrees with the witness).
    pub problems: Vec<String>,
}

/// Compares the store with `witnessed` checkpoints: each must be in the store unchanged,
/// and the events the newest one covers must all still be there.
async fn check_witness(
    pool: &PgPool,
    all: &[Checkpoint],
    witnessed: &[Checkpoint],
) -> Result<WitnessCheck, StoreError> {
    let mut check = WitnessCheck {
        witnessed: witnessed.len() as u64,
        problems: Vec::new(),
    };
    let stored: std::collections::HashMap<i64, &Checkpoint> =
        all.iter().map(|c| (c.id, c)).collect();
    for seen in witnessed {
        match stored.get(&seen.id) {
            None => check.problems.push(format!(
                "checkpoint {} (head {}, {} events) was witnessed but is missing from the store",
                seen.id, seen.head, seen.events
            )),
            Some(ours) if ours.hash != seen.hash => check.problems.push(format!(
                "checkpoint {} differs from the witnessed one: it was rewritten",
                seen.id
            )),
            Some(_) => {}
        }
    }
    if let Some(newest) = witnessed.iter().max_by_key(|c| c.id) {
        let now = heads_upto(pool, newest.head).await?;
        if now.events != newest.events
            || now.aggregates != newest.aggregates
            || hex::encode(&now.hash) != newest.heads_hash
        {
            check.problems.push(format!(
                "events covered by witnessed checkpoint {} are missing or changed: {} events up \
                 to its head then, {} now",
                newest.id, newest.events, now.events
            ));
        }
    }
    Ok(check)
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

/// The last line of every export: how many events it holds, where it ends, a digest of
/// every exported event's chain link, and an HMAC of those under the audit key when one
/// was given. A file cut anywhere lacks it, or disagrees with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Trailer {
    /// Trailer format.
    pub format: u32,
    /// Events in the file.
    pub events: u64,
    /// Position of the last one.
    pub last_position: Option<Position>,
    /// Hex sha256 over `type/id/sequence/hash\n` of every event, in file order.
    pub digest: String,
    /// Hex HMAC-SHA256 of the fields above under the audit key, if one was given.
    pub hmac: Option<String>,
}

impl Trailer {
    fn signed_text(&self) -> String {
        format!(
            "commandcenter-export|{}|{}|{}|{}",
            self.format,
            self.events,
            self.last_position.map_or(String::new(), |p| p.to_string()),
            self.digest
        )
    }

    fn mac(&self, key: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(self.signed_text().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The running digest of a file's events.
#[derive(Default)]
struct Digest(Sha256, u64, Option<Position>);

impl Digest {
    fn add(&mut self, event: &StoredEvent) {
        use sha2::Digest as _;
        self.0.update(
            format!(
                "{}/{}/{}/{}\n",
                event.aggregate_type, event.aggregate_id, event.sequence, event.hash
            )
            .as_bytes(),
        );
        self.1 += 1;
        self.2 = Some(event.position);
    }

    fn trailer(self, key: Option<&[u8]>) -> Trailer {
        use sha2::Digest as _;
        let mut trailer = Trailer {
            format: 1,
            events: self.1,
            last_position: self.2,
            digest: hex::encode(self.0.finalize()),
            hmac: None,
        };
        trailer.hmac = key.map(|key| trailer.mac(key));
        trailer
    }
}

/// Writes the events of `scope` up to the current head to `out`, one JSON object per
/// line in the global order, then the [`Trailer`] (signed with `audit_key` when given);
/// calls `progress` with the running count. Returns the count.
pub async fn export(
    pool: &PgPool,
    scope: &ExportScope,
    audit_key: Option<&[u8]>,
    out: &mut (impl AsyncWrite + Unpin),
    mut progress: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let mut digest = Digest::default();
    if let Some(head) = head(pool).await? {
        let until = scope.until.map_or(head, |u| u.min(head));
        let filter = FeedFilter {
            project_id: scope.project_id,
            ..FeedFilter::default()
        };
        let mut after = scope.after.unwrap_or(Position::ZERO);
        'pages: loop {
            let (events, next) = read_feed_filtered(pool, after, 5000, &filter).await?;
            for event in &events {
                if event.position > until {
                    break 'pages;
                }
                let mut line = serde_json::to_vec(event)?;
                line.push(b'\n');
                out.write_all(&line).await.map_err(StoreError::Io)?;
                digest.add(event);
            }
            progress(digest.1);
            if next <= after || next >= until {
                break;
            }
            after = next;
        }
    }
    let written = digest.1;
    let mut line =
        serde_json::to_vec(&serde_json::json!({ "trailer": digest.trailer(audit_key) }))?;
    line.push(b'\n');
    out.write_all(&line).await.map_err(StoreError::Io)?;
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
    /// Derived rows rebuilt (uniqueness claims).
    pub derived: u64,
}

/// Events written per transaction at most when one original transaction was larger.
const IMPORT_BATCH: usize = 5000;

/// Derived state that is not a read model (uniqueness claims), rebuilt from the events
/// inside the import's transaction; returns how many rows it wrote.
pub type Derive = Box<
    dyn for<'c> FnOnce(
            &'c mut sqlx::PgConnection,
        ) -> futures::future::BoxFuture<'c, Result<u64, StoreError>>
        + Send,
>;

/// Loads an [`export`] into an empty store in one transaction: every recomputed hash
/// must equal the file's, the file must end with its [`Trailer`] and agree with it (and
/// its HMAC must hold under `audit_key` when one is given), and `derive` rebuilds what
/// the events imply beyond themselves. Recorded times are kept as exported (the
/// database's restore mode, for an empty store only). Anything wrong leaves the store
/// empty. Calls `progress` with the running count.
pub async fn import(
    pool: &PgPool,
    input: &mut (impl AsyncBufRead + Unpin),
    audit_key: Option<&[u8]>,
    derive: Derive,
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
    sqlx::query("SELECT set_config('cc.restoring', 'on', true)")
        .execute(&mut *tx)
        .await?;
    let mut report = ImportReport {
        events: 0,
        transactions: 0,
        derived: 0,
    };
    let mut group: Vec<StoredEvent> = Vec::new();
    let mut digest = Digest::default();
    let mut trailer: Option<Trailer> = None;
    let mut lines = input.lines();
    let mut number = 0_u64;
    while let Some(line) = lines.next_line().await.map_err(StoreError::Io)? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        if trailer.is_some() {
            return Err(StoreError::BadImport(format!(
                "line {number} follows the trailer: the file was altered"
            )));
        }
        if line.starts_with("{\"trailer\"") {
            #[derive(serde::Deserialize)]
            struct Last {
                trailer: Trailer,
            }
            let last: Last = serde_json::from_str(&line).map_err(|source| {
                StoreError::BadImport(format!("line {number} is not a valid trailer: {source}"))
            })?;
            trailer = Some(last.trailer);
            continue;
        }
        let event: StoredEvent = serde_json::from_str(&line).map_err(|source| {
            StoreError::BadImport(format!("line {number} is not an exported event: {source}"))
        })?;
        digest.add(&event);
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
    let Some(trailer) = trailer else {
        return Err(StoreError::BadImport(
            "the file ends without its trailer: it was cut short (or is not an export)".into(),
        ));
    };
    let ours = digest.trailer(None);
    if (ours.events, ours.last_position, &ours.digest)
        != (trailer.events, trailer.last_position, &trailer.digest)
    {
        return Err(StoreError::BadImport(format!(
            "the file disagrees with its trailer ({} events up to {:?} read, the trailer says {} \
             up to {:?}): it was cut or altered",
            ours.events, ours.last_position, trailer.events, trailer.last_position
        )));
    }
    match (audit_key, &trailer.hmac) {
        (Some(key), Some(hmac)) if &trailer.mac(key) == hmac => {}
        (Some(_), Some(_)) => {
            return Err(StoreError::BadImport(
                "the trailer's signature does not hold under this CC_AUDIT_KEY: the file was \
                 altered, or exported with another key"
                    .into(),
            ))
        }
        (Some(_), None) => {
            return Err(StoreError::BadImport(
                "the export is not signed although CC_AUDIT_KEY is set: export it with the key"
                    .into(),
            ))
        }
        (None, Some(_)) => {
            return Err(StoreError::BadImport(
                "the export is signed: give its CC_AUDIT_KEY to import it".into(),
            ))
        }
        (None, None) => {}
    }
    if !group.is_empty() {
        write_group(&mut tx, &group).await?;
        report.transactions += 1;
        report.events += group.len() as u64;
        progress(report.events);
    }
    report.derived = derive(&mut tx).await?;
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
