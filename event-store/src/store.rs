//! Loading aggregates and appending their events.
//!
//! An append is one multi-row `INSERT` inside a transaction the caller owns, so the
//! caller can put uniqueness claims and idempotency records in the same commit. The
//! events table's trigger computes each hash and pins `tx_id`; the primary key
//! `(aggregate_type, aggregate_id, sequence)` turns a lost race into
//! [`StoreError::Conflict`].

use std::str::FromStr;
use std::time::Duration;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

use crate::error::violated_constraint;
use crate::group::{GroupCommit, Member};
use crate::recent::Recent;
use crate::{AppendSignal, Claim, Position, StoreError};

/// Opens a pool whose sessions end any transaction left idle for more than
/// `idle_tx_timeout`: an idle open transaction would hold back every feed reader.
pub async fn connect(
    database_url: &str,
    max_connections: u32,
    idle_tx_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(session_options(database_url, idle_tx_timeout)?)
        .await
}

/// A session idle in the pool for longer than this is checked (a round trip) before it
/// is handed out; one used more recently is handed out as it is.
pub const CHECK_IDLE_SESSION_AFTER: Duration = Duration::from_millis(250);

/// Pool options shared by [`connect`] and [`connect_replica`]. sqlx checks every session
/// it hands out by default, a round trip before every use of the pool (with its check of
/// every session coming back, 5 % of the service's CPU when writing at 32 clients); a
/// session is checked here only after [`CHECK_IDLE_SESSION_AFTER`] idle, which still finds
/// the sessions a database restart ended before they are used again (a restart takes
/// longer than that), and sqlx still checks each session as it comes back, discarding
/// one that failed.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            // A session that fails its check is refused quietly (closed, another lent): an
            // error here would log a warning for every pooled session after a restart.
            Box::pin(async move {
                Ok(meta.idle_for <= CHECK_IDLE_SESSION_AFTER
                    || sqlx::Connection::ping(conn).await.is_ok())
            })
        })
}

/// Our sessions' settings: the application name, and the idle-in-transaction timeout.
fn session_options(
    database_url: &str,
    idle_tx_timeout: Duration,
) -> Result<PgConnectOptions, sqlx::Error> {
    let timeout_ms = idle_tx_timeout.as_millis().to_string();
    Ok(PgConnectOptions::from_str(database_url)?
        .application_name("commandcenter")
        .options([("idle_in_transaction_session_timeout", timeout_ms.as_str())]))
}

/// A pool on a read replica: like [`connect`], but it connects lazily (the service starts
/// while a replica is down; the read pools' health check finds it) and gives up on a
/// connection after 1 s, since the primary can answer instead.
pub fn connect_replica(
    database_url: &str,
    max_connections: u32,
    idle_tx_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(max_connections)
        .acquire_timeout(REPLICA_ACQUIRE_TIMEOUT)
        .connect_lazy_with(session_options(database_url, idle_tx_timeout)?))
}

/// How long a read waits for a replica's connection before the replica counts as failed.
pub const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// An aggregate rebuilt from its events.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state after every stored event.
    pub aggregate: A,
    /// The sequence of the last event (0 when there is none).
    pub version: i64,
    /// Position of the last event, if any.
    pub position: Option<Position>,
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The aggregate's version after the append.
    pub version: i64,
    /// Position of the last appended event.
    pub position: Position,
}

/// One event to append, already serialized.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `DomainEvent::event_type`.
    pub event_type: String,
    /// `DomainEvent::event_version`.
    pub event_version: String,
    /// The serialized event.
    pub payload: Value,
}

impl NewEvent {
    /// Serializes a domain event.
    pub fn from_domain<E: DomainEvent>(event: &E) -> Result<Self, StoreError> {
        Ok(Self {
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_value(event)?,
        })
    }
}

/// One aggregate's new events, for [`EventStore::append_batch`].
#[derive(Debug, Clone)]
pub struct AggregateEvents {
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// The aggregate's version before these events.
    pub expected_version: i64,
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// Metadata recorded on each.
    pub metadata: Value,
}

/// The event store: a pool, the upcasters applied on load, and the post-commit signal.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    signal: AppendSignal,
    upcasters: std::sync::Arc<Vec<Box<dyn EventUpcaster>>>,
    group: GroupCommit,
    recent: Recent,
}

/// Events between two snapshots of an aggregate written by commands.
pub const SNAPSHOT_EVERY: i64 = 100;

/// The schema tag of `A`'s snapshots: its type and the domain's state schema.
fn snapshot_schema<A: Aggregate>() -> String {
    format!("{}:{}", A::TYPE, commandcenter_domain::STATE_SCHEMA)
}

impl EventStore {
    /// A store over `pool` that wakes readers through `signal`, upcasting old payloads
    /// with the domain's upcasters on load.
    pub fn new(pool: PgPool, signal: AppendSignal) -> Self {
        Self {
            pool,
            signal,
            upcasters: std::sync::Arc::new(commandcenter_domain::upcasters()),
            group: GroupCommit::default(),
            recent: Recent::default(),
        }
    }

    /// The same store, upcasting old payloads with `upcasters` on load.
    pub fn with_upcasters(mut self, upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        self.upcasters = std::sync::Arc::new(upcasters);
        self
    }

    /// The same store with `committers` group-commit tasks instead of
    /// [`crate::COMMITTERS`] (one makes batches deterministic for tests). Call before
    /// the first command.
    pub fn with_committers(mut self, committers: usize) -> Self {
        self.group = self.group.with_committers(committers);
        self
    }

    /// The same store refusing a command ([`StoreError::Busy`]) while `max_waiting`
    /// commands already wait for a committer (default [`crate::MAX_WAITING`]).
    /// Like [`Self::with_committers`], set before the first command.
    pub fn with_queue_limit(mut self, max_waiting: usize) -> Self {
        self.group = self.group.limited(max_waiting);
        self
    }

    /// The same store reading the outcome of a COMMIT that failed to answer back for up
    /// to `wait` (default [`crate::OUTCOME_SOUGHT_FOR`]) before answering it unknown.
    /// Like [`Self::with_committers`], set before the first command.
    pub fn with_commit_outcome_wait(mut self, wait: std::time::Duration) -> Self {
        self.group = self.group.reading_outcomes_for(wait);
        self
    }

    /// The primary pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The post-commit signal.
    pub fn signal(&self) -> &AppendSignal {
        &self.signal
    }

    /// Rebuilds aggregate `id` of type `A`: from its latest snapshot, if any, and the
    /// events after it.
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        self.load_upto(id, None).await
    }

    /// Aggregate `id` of type `A` as this process last committed or loaded it, if it
    /// remembers it: true at its version, but possibly behind the store (`recent.rs`
    /// says when a caller may trust it).
    pub fn recent<A: Aggregate + Clone + 'static>(&self, id: &str) -> Option<Loaded<A>> {
        self.recent.get(id)
    }

    /// Remembers `loaded` as aggregate `id`'s state at its version (a committed or
    /// loaded state, never one decided but not yet committed).
    pub fn remember<A: Aggregate + Clone + 'static>(&self, id: &str, loaded: Loaded<A>) {
        self.recent.put(id, loaded);
    }

    /// Forgets what this process remembers of aggregate `id`.
    pub fn forget<A: Aggregate>(&self, id: &str) {
        self.recent.forget::<A>(id);
    }

    /// Aggregate `id` as it was after event `upto` (all events when `None`), from the
    /// latest snapshot at or before it and the events after that.
    pub async fn load_upto<A: Aggregate>(
        &self,
        id: &str,
        upto: Option<i64>,
    ) -> Result<Loaded<A>, StoreError> {
        let snapshot = sqlx::query(
            "SELECT version, position, state FROM snapshots \
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND state_schema = $3 \
                AND ($4::bigint IS NULL OR version <= $4) \
              ORDER BY version DESC LIMIT 1",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(snapshot_schema::<A>())
        .bind(upto)
        .fetch_optional(&self.pool)
        .await?;
        let start = match snapshot {
            Some(row) => {
                let state: Value = row.try_get("state")?;
                let position: String = row.try_get("position")?;
                match (
                    serde_json::from_value::<A>(state),
                    position.parse::<Position>(),
                ) {
                    (Ok(aggregate), Ok(position)) => Some(Loaded {
                        aggregate,
                        version: row.try_get("version")?,
                        position: Some(position),
                    }),
                    // An unreadable snapshot is only a lost shortcut.
                    _ => None,
                }
            }
            None => None,
        };
        self.fold(id, start, upto).await
    }

    /// Aggregate `id` after event `upto` (all when `None`), from its events alone.
    pub async fn replay<A: Aggregate>(
        &self,
        id: &str,
        upto: Option<i64>,
    ) -> Result<Loaded<A>, StoreError> {
        self.fold(id, None, upto).await
    }

    async fn fold<A: Aggregate>(
        &self,
        id: &str,
        start: Option<Loaded<A>>,
        upto: Option<i64>,
    ) -> Result<Loaded<A>, StoreError> {
        let mut loaded = start.unwrap_or(Loaded {
            aggregate: A::default(),
            version: 0,
            position: None,
        });
        let rows = sqlx::query(
            "SELECT sequence, event_type, event_version, payload, metadata, \
                    tx_id::text AS tx_text, global_position \
               FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
                AND sequence > $3 AND ($4::bigint IS NULL OR sequence <= $4) \
              ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(loaded.version)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let sequence: i64 = row.try_get("sequence")?;
            let serialized = SerializedEvent::new(
                id.to_string(),
                usize::try_from(sequence).unwrap_or_default(),
                A::TYPE.to_string(),
                row.try_get("event_type")?,
                row.try_get("event_version")?,
                row.try_get("payload")?,
                row.try_get("metadata")?,
            );
            let upcasted = self.upcast(serialized);
            let event: A::Event =
                serde_json::from_value(upcasted.payload).map_err(|source| StoreError::Corrupt {
                    aggregate_type: A::TYPE.to_string(),
                    aggregate_id: id.to_string(),
                    sequence,
                    source,
                })?;
            loaded.aggregate.apply(event);
            loaded.version = sequence;
            loaded.position = Some(position_from_row(&row)?);
        }
        Ok(loaded)
    }

    /// Saves the state of aggregate `id` after event `version` (at `position`), in the
    /// caller's transaction. A snapshot already there is kept.
    pub async fn save_snapshot<A: Aggregate>(
        &self,
        conn: &mut PgConnection,
        id: &str,
        version: i64,
        position: Position,
        state: &A,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, version, position, state_schema, state) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(A::TYPE)
        .bind(id)
        .bind(version)
        .bind(position.to_string())
        .bind(snapshot_schema::<A>())
        .bind(serde_json::to_value(state)?)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The version aggregate `id` had at time `at` (its last event recorded at or before
    /// it), if it existed then.
    pub async fn version_at_time(
        &self,
        aggregate_type: &str,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT max(sequence) FROM events \
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND recorded_at <= $3",
        )
        .bind(aggregate_type)
        .bind(id)
        .bind(at)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The version aggregate `id` had at `position` of the global order.
    pub async fn version_at_position(
        &self,
        aggregate_type: &str,
        id: &str,
        position: Position,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT max(sequence) FROM events \
              WHERE aggregate_type = $1 AND aggregate_id = $2 \
                AND (tx_id, global_position) <= ($3::text::xid8, $4)",
        )
        .bind(aggregate_type)
        .bind(id)
        .bind(position.tx_id_text())
        .bind(position.global_position)
        .fetch_one(&self.pool)
        .await?)
    }

    fn upcast(&self, event: SerializedEvent) -> SerializedEvent {
        self.upcasters.iter().fold(event, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        })
    }

    /// Starts a write transaction. Keep it short: while it is open, feed readers wait.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Commits `tx`, then wakes tailing readers.
    pub async fn commit(&self, tx: Transaction<'static, Postgres>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.signal.fire().await;
        Ok(())
    }

    /// Hands `member` (one command's writes) to this store's committer, which writes it
    /// with whatever else is queued in one transaction and settles it after the commit
    /// (see [`crate::Member`]).
    pub fn commit_in_group(&self, member: Box<dyn Member>) {
        self.group.submit(&self.pool, &self.signal, member);
    }

    /// How many commands wait for the committer (queued while a batch is being written
    /// or committed); they will share the next batch.
    pub fn commands_waiting(&self) -> usize {
        self.group.waiting()
    }

    /// How many commands were appended together with others of their batch, in one
    /// statement ([`crate::Member::plain`]), since this handle's committers started.
    pub fn commands_appended_together(&self) -> u64 {
        self.group.appended_together()
    }

    /// How many batches had their shared statement undone (their commands then written
    /// one by one), since this handle's committers started.
    pub fn shared_statements_undone(&self) -> u64 {
        self.group.shared_statements_undone()
    }

    /// [`EventStore::append`] of `append` with the aggregate's uniqueness claims in the
    /// same statement: `released` claims held by `aggregate_id` are given up and `taken` ones
    /// taken, and the events are inserted only when every one of `taken` was free (or
    /// already the aggregate's), else [`StoreError::ClaimTaken`] names the first one held
    /// by another aggregate. A claim held by a concurrent transaction makes the statement
    /// wait for it. On an error the caller rolls back (released claims come back).
    pub async fn append_claiming(
        &self,
        conn: &mut PgConnection,
        append: &AggregateEvents,
        released: &[Claim],
        taken: &[Claim],
    ) -> Result<Committed, StoreError> {
        let AggregateEvents {
            aggregate_type,
            aggregate_id,
            expected_version,
            events,
            metadata,
        } = append;
        if released.is_empty() && taken.is_empty() {
            return self
                .append(
                    conn,
                    aggregate_type,
                    aggregate_id,
                    *expected_version,
                    events,
                    metadata,
                )
                .await;
        }
        let columns = Columns::of(*expected_version, events);
        let released_scopes: Vec<&str> = released.iter().map(|c| c.scope.as_str()).collect();
        let released_keys: Vec<&str> = released.iter().map(|c| c.key.as_str()).collect();
        let taken_scopes: Vec<&str> = taken.iter().map(|c| c.scope.as_str()).collect();
        let taken_keys: Vec<&str> = taken.iter().map(|c| c.key.as_str()).collect();
        let statement = if released.is_empty() {
            sqlx::query(APPEND_TAKING)
        } else {
            sqlx::query(APPEND_CLAIMING).persistent(false)
        };
        let result = columns
            .bind(statement, aggregate_type, aggregate_id, metadata)
            .bind(&released_scopes)
            .bind(&released_keys)
            .bind(&taken_scopes)
            .bind(&taken_keys)
            .fetch_all(&mut *conn)
            .await;
        let rows = appended(result, aggregate_type, aggregate_id)?;
        let got: Vec<String> = match rows.first() {
            Some(row) => row
                .try_get::<Option<Vec<String>>, _>("taken")?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if let Some(held) = taken
            .iter()
            .find(|c| !got.contains(&format!("{}\u{1f}{}", c.scope, c.key)))
        {
            return Err(StoreError::ClaimTaken {
                scope: held.scope.clone(),
                key: held.key.clone(),
            });
        }
        last_committed(&rows)
    }

    /// Appends `events` to aggregate `aggregate_type/aggregate_id`, whose current version
    /// must be `expected_version`, with the same `metadata` on each. `events` must not be
    /// empty.
    pub async fn append(
        &self,
        conn: &mut PgConnection,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: i64,
        events: &[NewEvent],
        metadata: &Value,
    ) -> Result<Committed, StoreError> {
        let columns = Columns::of(expected_version, events);
        let result = columns
            .bind(sqlx::query(APPEND), aggregate_type, aggregate_id, metadata)
            .fetch_all(&mut *conn)
            .await;
        let rows = appended(result, aggregate_type, aggregate_id)?;
        last_committed(&rows)
    }
}

impl EventStore {
    /// Appends the events of many aggregates in one statement (bulk loads, demo data):
    /// the same rows, hash chain and concurrency check as [`EventStore::append`].
    /// Returns how many events were written.
    pub async fn append_batch(
        &self,
        conn: &mut PgConnection,
        batch: &[AggregateEvents],
    ) -> Result<u64, StoreError> {
        let rows = EventRows::of(batch.iter());
        let result = rows
            .bind(sqlx::query(
                "INSERT INTO events \
                     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata \
                   FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[]) \
                        WITH ORDINALITY AS e(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, n) \
                  ORDER BY e.n",
            ))
        .execute(&mut *conn)
        .await;
        match result {
            Ok(done) => Ok(done.rows_affected()),
            Err(err) if violated_constraint(&err) == Some("events_pkey") => {
                Err(StoreError::Conflict {
                    aggregate_type: "(batch)".into(),
                    aggregate_id: "(batch)".into(),
                })
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// One command's writes in a batch's shared append: its aggregate's events and the
/// uniqueness claims it gives up and takes, as [`EventStore::append_claiming`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct PlainAppend<'a> {
    /// The events, after the version the command was decided on (not empty).
    pub append: &'a AggregateEvents,
    /// Claims the aggregate gives up.
    pub released: &'a [Claim],
    /// Claims the aggregate takes.
    pub taken: &'a [Claim],
}

/// The writes of several commands of a batch in one statement ([`APPEND_TOGETHER`]):
/// each one's released claims given up, its taken claims taken and its events appended,
/// as [`EventStore::append_claiming`] would one after another. `appends` must be
/// [`disjoint`]: no two touch one aggregate or one claim, so their order cannot matter
/// (and the order in which PostgreSQL runs the statement's release and take is not
/// specified). Returns the version and position of each one's last event, in the order
/// of `appends`, or `Ok(None)` when a claim is held by an aggregate outside the
/// statement: no event was appended then, but claims may have been released and taken.
/// The caller runs it under a savepoint and, on `Ok(None)` or an error (a conflict with
/// another transaction, a lock not obtained), rolls back to it and writes the commands
/// one by one: the statement only stands when it is what those writes would have done.
pub(crate) async fn append_claiming_together(
    conn: &mut PgConnection,
    appends: &[PlainAppend<'_>],
) -> Result<Option<Vec<Committed>>, StoreError> {
    let events = EventRows::of(appends.iter().map(|plain| plain.append));
    let (mut released, mut taken) = (Claims::default(), Claims::default());
    for plain in appends {
        released.push(plain.released, &plain.append.aggregate_id);
        taken.push(plain.taken, &plain.append.aggregate_id);
    }
    let statement = if released.scopes.is_empty() {
        sqlx::query(APPEND_TAKING_TOGETHER)
    } else {
        sqlx::query(APPEND_TOGETHER).persistent(false)
    };
    let rows = events
        .bind(statement)
        .bind(&released.scopes)
        .bind(&released.keys)
        .bind(&released.owners)
        .bind(&taken.scopes)
        .bind(&taken.keys)
        .bind(&taken.owners)
        .fetch_all(&mut *conn)
        .await?;
    let all_taken = match rows.first() {
        Some(row) => row.try_get::<bool, _>("all_taken")?,
        None => false,
    };
    if !all_taken {
        return Ok(None);
    }
    let mut stored = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let key: (String, String, i64) = (
            row.try_get("aggregate_type")?,
            row.try_get("aggregate_id")?,
            row.try_get("sequence")?,
        );
        stored.insert(key, position_from_row(row)?);
    }
    appends
        .iter()
        .map(|plain| {
            let append = plain.append;
            let version = append.expected_version + append.events.len() as i64;
            let key = (
                append.aggregate_type.clone(),
                append.aggregate_id.clone(),
                version,
            );
            let position = stored
                .get(&key)
                .copied()
                .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
            Ok(Committed { version, position })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// For each of `footprints` (one command's aggregate and the claims it gives up and
/// takes; `None` for a command that writes neither), whether no other one touches its
/// aggregate or any of its claims: the writes of such a command cannot depend on the
/// others' or on their order.
pub(crate) fn disjoint<'a>(footprints: &[Option<PlainAppend<'a>>]) -> Vec<bool> {
    // Borrowed, not copied: this runs for every batch.
    let keys = |plain: &PlainAppend<'a>| -> Vec<(&'a str, &'a str, bool)> {
        let aggregate = (
            plain.append.aggregate_type.as_str(),
            plain.append.aggregate_id.as_str(),
            false,
        );
        let claims = plain
            .released
            .iter()
            .chain(plain.taken)
            .map(|claim| (claim.scope.as_str(), claim.key.as_str(), true));
        std::iter::once(aggregate).chain(claims).collect()
    };
    let mut touched = std::collections::HashMap::<_, usize>::new();
    let keyed: Vec<Vec<_>> = footprints
        .iter()
        .map(|footprint| footprint.as_ref().map(keys).unwrap_or_default())
        .collect();
    for command in &keyed {
        // A command touching one key twice still counts once.
        let mut own: Vec<_> = command.iter().collect();
        own.sort();
        own.dedup();
        for key in own {
            *touched.entry(key).or_default() += 1;
        }
    }
    keyed
        .iter()
        .map(|command| command.iter().all(|key| touched[key] == 1))
        .collect()
}

/// The events of several aggregates, as the arrays `$1`–`$7` of [`APPEND_TOGETHER`] and
/// [`EventStore::append_batch`] unnest: aggregate type and id, sequence, type, version,
/// payload and metadata of each.
struct EventRows<'a> {
    types: Vec<&'a str>,
    ids: Vec<&'a str>,
    sequences: Vec<i64>,
    event_types: Vec<&'a str>,
    versions: Vec<&'a str>,
    payloads: Vec<&'a Value>,
    metadata: Vec<&'a Value>,
}

impl<'a> EventRows<'a> {
    fn of(aggregates: impl Iterator<Item = &'a AggregateEvents> + Clone) -> Self {
        let total: usize = aggregates.clone().map(|a| a.events.len()).sum();
        let mut rows = Self {
            types: Vec::with_capacity(total),
            ids: Vec::with_capacity(total),
            sequences: Vec::with_capacity(total),
            event_types: Vec::with_capacity(total),
            versions: Vec::with_capacity(total),
            payloads: Vec::with_capacity(total),
            metadata: Vec::with_capacity(total),
        };
        for aggregate in aggregates {
            for (i, event) in aggregate.events.iter().enumerate() {
                rows.types.push(&aggregate.aggregate_type);
                rows.ids.push(&aggregate.aggregate_id);
                rows.sequences
                    .push(aggregate.expected_version + i as i64 + 1);
                rows.event_types.push(&event.event_type);
                rows.versions.push(&event.event_version);
                rows.payloads.push(&event.payload);
                rows.metadata.push(&aggregate.metadata);
            }
        }
        rows
    }

    fn bind(
        &'a self,
        query: sqlx::query::Query<'a, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'a, Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.types)
            .bind(&self.ids)
            .bind(&self.sequences)
            .bind(&self.event_types)
            .bind(&self.versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
    }
}

/// Claims of several aggregates, as the arrays [`APPEND_TOGETHER`] unnests.
#[derive(Default)]
struct Claims<'a> {
    scopes: Vec<&'a str>,
    keys: Vec<&'a str>,
    owners: Vec<&'a str>,
}

impl<'a> Claims<'a> {
    fn push(&mut self, claims: &'a [Claim], owner: &'a str) {
        for claim in claims {
            self.scopes.push(&claim.scope);
            self.keys.push(&claim.key);
            self.owners.push(owner);
        }
    }
}

/// Appends an aggregate's events: `$1` type, `$2` id, `$3`–`$6` the events' sequences,
/// types, versions and payloads, `$7` the metadata.
const APPEND: &str = "INSERT INTO events \
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload, $7 \
               FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::jsonb[]) \
                    WITH ORDINALITY AS e(sequence, event_type, event_version, payload, n) \
              ORDER BY e.n \
             RETURNING sequence, tx_id::text AS tx_text, global_position";

/// [`APPEND`] with claims: `$8`/`$9` the scopes and keys released, `$10`/`$11` those
/// taken. Data-modifying CTEs all run; the events' INSERT reads how many claims were
/// taken, so it writes nothing when one is held by another aggregate. The outer query
/// always returns one row: the claims taken, and the events (if any).
///
/// Sent only when a claim is released, and planned for its values each time
/// (`persistent(false)`): a plan cached on a connection is made once, and one made while
/// `unique_claims` had no page yet (a fresh store, before autovacuum analyzed it) read the
/// whole table on every execution, releasing or not, though the release names both key
/// columns with `= ANY` (measured in one 18 s run of the write benchmark: 2,146 such
/// scans over 40,776 creates, `HeapTupleSatisfiesVisibility` the database's first
/// function, a cost growing with the table). Appends that release nothing (creates) send [`APPEND_TAKING`].
const APPEND_CLAIMING: &str = concat!(
    "WITH released AS ( \
         DELETE FROM unique_claims u \
          USING UNNEST($8::text[], $9::text[]) AS r(scope, key) \
          WHERE u.scope = ANY($8::text[]) AND u.key = ANY($9::text[]) \
            AND u.scope = r.scope AND u.key = r.key AND u.owner_id = $2), ",
    take_and_append!()
);

/// [`APPEND_CLAIMING`] without a release (`$8`/`$9` are bound and not read): the claims'
/// primary key is its only way to `unique_claims`, whatever plan is cached.
const APPEND_TAKING: &str = concat!("WITH ", take_and_append!());

/// The take and the append of [`APPEND_CLAIMING`] and [`APPEND_TAKING`].
macro_rules! take_and_append {
    () => {
        "taken AS ( \
             INSERT INTO unique_claims (scope, key, owner_id) \
             SELECT t.scope, t.key, $2 FROM UNNEST($10::text[], $11::text[]) AS t(scope, key) \
             ON CONFLICT (scope, key) DO UPDATE SET owner_id = EXCLUDED.owner_id \
                 WHERE unique_claims.owner_id = EXCLUDED.owner_id \
             RETURNING scope, key), \
         appended AS ( \
             INSERT INTO events \
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload, $7 \
               FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::jsonb[]) \
                    WITH ORDINALITY AS e(sequence, event_type, event_version, payload, n) \
              WHERE (SELECT count(*) FROM taken) = cardinality($10::text[]) \
              ORDER BY e.n \
             RETURNING sequence, tx_id, global_position) \
         SELECT (SELECT array_agg(scope || chr(31) || key) FROM taken) AS taken, \
                a.sequence, a.tx_id::text AS tx_text, a.global_position \
           FROM (SELECT 1) one LEFT JOIN appended a ON true"
    };
}
use take_and_append;

/// [`APPEND_CLAIMING`] for several aggregates at once ([`append_claiming_together`]):
/// `$1`–`$7` every event's aggregate type and id, sequence, type, version, payload and
/// metadata; `$8`–`$10` the claims released (scope, key, the aggregate giving it up),
/// `$11`–`$13` those taken (scope, key, the aggregate taking it). The events are inserted
/// only when every claim was taken; the query returns one row per event, each saying so,
/// or a single row without an event when a claim was held. Sent only for aggregates that
/// share no claim ([`disjoint`]): the order in which PostgreSQL runs the release and the
/// take is not specified. Like [`APPEND_CLAIMING`], sent only when a claim is released
/// and then planned each time; [`APPEND_TAKING_TOGETHER`] otherwise.
const APPEND_TOGETHER: &str = concat!(
    "WITH released AS ( \
         DELETE FROM unique_claims u \
          USING UNNEST($8::text[], $9::text[], $10::text[]) AS r(scope, key, owner_id) \
          WHERE u.scope = ANY($8::text[]) AND u.key = ANY($9::text[]) \
            AND u.scope = r.scope AND u.key = r.key AND u.owner_id = r.owner_id), ",
    take_and_append_together!()
);

/// [`APPEND_TOGETHER`] without a release (`$8`–`$10` are bound and not read).
const APPEND_TAKING_TOGETHER: &str = concat!("WITH ", take_and_append_together!());

/// The take and the append of [`APPEND_TOGETHER`] and [`APPEND_TAKING_TOGETHER`].
macro_rules! take_and_append_together {
    () => {
        "taken AS ( \
             INSERT INTO unique_claims (scope, key, owner_id) \
             SELECT t.scope, t.key, t.owner_id \
               FROM UNNEST($11::text[], $12::text[], $13::text[]) AS t(scope, key, owner_id) \
             ON CONFLICT (scope, key) DO UPDATE SET owner_id = EXCLUDED.owner_id \
                 WHERE unique_claims.owner_id = EXCLUDED.owner_id \
             RETURNING scope), \
         all_taken AS ( \
             SELECT count(*) = cardinality($11::text[]) AS all_taken FROM taken), \
         appended AS ( \
             INSERT INTO events \
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, \
                    e.payload, e.metadata \
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                           $6::jsonb[], $7::jsonb[]) \
                    WITH ORDINALITY AS e(aggregate_type, aggregate_id, sequence, event_type, \
                                         event_version, payload, metadata, n) \
              WHERE (SELECT all_taken FROM all_taken) \
              ORDER BY e.n \
             RETURNING aggregate_type, aggregate_id, sequence, tx_id, global_position) \
         SELECT t.all_taken, a.aggregate_type, a.aggregate_id, a.sequence, \
                a.tx_id::text AS tx_text, a.global_position \
           FROM all_taken t LEFT JOIN appended a ON true"
    };
}
use take_and_append_together;

/// An append's events as the arrays its `INSERT` unnests.
struct Columns<'a> {
    sequences: Vec<i64>,
    types: Vec<&'a str>,
    versions: Vec<&'a str>,
    payloads: Vec<&'a Value>,
}

impl<'a> Columns<'a> {
    /// Binds `$1`–`$7` of an append statement: aggregate type and id, the four arrays,
    /// the metadata.
    fn bind(
        &'a self,
        query: sqlx::query::Query<'a, Postgres, sqlx::postgres::PgArguments>,
        aggregate_type: &'a str,
        aggregate_id: &'a str,
        metadata: &'a Value,
    ) -> sqlx::query::Query<'a, Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(&self.sequences)
            .bind(&self.types)
            .bind(&self.versions)
            .bind(&self.payloads)
            .bind(metadata)
    }

    fn of(expected_version: i64, events: &'a [NewEvent]) -> Self {
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        Self {
            sequences: (1..=count).map(|i| expected_version + i).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            versions: events.iter().map(|e| e.event_version.as_str()).collect(),
            payloads: events.iter().map(|e| &e.payload).collect(),
        }
    }
}

/// An append's rows, or [`StoreError::Conflict`] when another writer holds a sequence.
fn appended(
    result: Result<Vec<sqlx::postgres::PgRow>, sqlx::Error>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
    match result {
        Ok(rows) => Ok(rows),
        Err(err) if violated_constraint(&err) == Some("events_pkey") => Err(StoreError::Conflict {
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: aggregate_id.to_string(),
        }),
        Err(err) => Err(err.into()),
    }
}

/// Version and position of the last event among an append's rows (rows without a
/// `sequence` carry none).
fn last_committed(rows: &[sqlx::postgres::PgRow]) -> Result<Committed, StoreError> {
    let mut last: Option<(i64, Position)> = None;
    for row in rows {
        let Some(sequence) = row.try_get::<Option<i64>, _>("sequence")? else {
            continue;
        };
        let position = position_from_row(row)?;
        if last.is_none_or(|(s, _)| sequence > s) {
            last = Some((sequence, position));
        }
    }
    let (version, position) = last.ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
    Ok(Committed { version, position })
}

/// Reads the `tx_id` (as text) and `global_position` columns of a row.
pub(crate) fn position_from_row(row: &sqlx::postgres::PgRow) -> Result<Position, sqlx::Error> {
    let tx_text: String = row.try_get("tx_text")?;
    let tx_id = tx_text
        .parse::<u64>()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: "tx_text".into(),
            source: Box::new(e),
        })?;
    Ok(Position::new(tx_id, row.try_get("global_position")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(aggregate_id: &str) -> AggregateEvents {
        AggregateEvents {
            aggregate_type: "technology".into(),
            aggregate_id: aggregate_id.into(),
            expected_version: 0,
            events: vec![NewEvent {
                event_type: "Created".into(),
                event_version: "1".into(),
                payload: Value::Null,
            }],
            metadata: Value::Null,
        }
    }

    fn claim(key: &str) -> Claim {
        Claim {
            scope: "title:technology:1".into(),
            key: key.into(),
        }
    }

    #[test]
    fn a_command_is_disjoint_when_no_other_touches_its_aggregate_or_claims() {
        let (a, b, c) = (events("a"), events("b"), events("c"));
        let (x, y) = ([claim("x")], [claim("y")]);
        let plain = |append, released, taken| {
            Some(PlainAppend {
                append,
                released,
                taken,
            })
        };
        // A command that writes nothing touches nothing; a claim shared by two commands
        // leaves both out, the third alone; one aggregate twice leaves both out.
        let footprints = [
            None,
            plain(&a, &[], &x),
            plain(&b, &x, &[]),
            plain(&c, &y, &y),
        ];
        assert_eq!(disjoint(&footprints), [true, false, false, true]);
        let footprints = [plain(&a, &[], &[]), plain(&b, &[], &[]), plain(&a, &[], &y)];
        assert_eq!(disjoint(&footprints), [false, true, false]);
    }
}
