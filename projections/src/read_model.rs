//! What a read model is to the runtime: a name, the aggregate type it follows, the
//! tables it owns, and how a batch of events changes those tables.

use std::collections::HashMap;
use std::future::Future;

use commandcenter_event_store::{read_aggregate_between, CompactEvent, Position, StoredEvent};
use cqrs_es::Aggregate;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;

use crate::{Change, ProjectionError};

/// A read model kept by a projector.
pub trait ReadModel: Send + Sync + 'static {
    /// The read model's name (`technology_view`), also its checkpoint's key.
    const NAME: &'static str;
    /// The aggregate type whose events it follows.
    const AGGREGATE_TYPE: &'static str;
    /// The tables it owns, all rebuilt and swapped together.
    const TABLES: &'static [&'static str];
    /// Triggers its tables depend on, as `CREATE OR REPLACE TRIGGER` statements naming
    /// their tables `{schema}.<table>`: made on every copy a rebuild or a verification
    /// makes (after the live tables' own triggers are copied), so that a copy has them
    /// even where the live tables lost them (a previous release's rebuild, running
    /// across the migration that added them, swapped in a view without them). A rebuild
    /// then restores them, and a verification's fold is what they make it.
    const TRIGGERS: &'static [&'static str] = &[];

    /// Applies `events` (in feed order, all of [`Self::AGGREGATE_TYPE`], none applied
    /// before) inside the caller's transaction. Table names are unqualified, so a
    /// rebuild can point them at its shadow tables with `search_path`. Returns the
    /// changed rows, to be announced after the commit.
    fn apply<E: FoldEvent>(
        &self,
        conn: &mut PgConnection,
        events: &[E],
    ) -> impl Future<Output = Result<Vec<Change>, ProjectionError>> + Send;
}

/// What folding an event into a read model reads of it: a [`StoredEvent`] (the live
/// projector's, from NATS or the store) or a [`CompactEvent`] (a rebuild's).
pub trait FoldEvent: Sync {
    /// Aggregate id.
    fn aggregate_id(&self) -> &str;
    /// The aggregate's version after this event.
    fn sequence(&self) -> i64;
    /// Position in the global order.
    fn position(&self) -> Position;
    /// `metadata.correlation_id`, when it is a string.
    fn correlation_id(&self) -> Option<&str>;
    /// The event decoded in its current form (upcast when stored older).
    fn decode<P: DeserializeOwned>(&self) -> Result<P, serde_json::Error>;
    /// `event_type`, for messages.
    fn event_type(&self) -> &str;
}

impl FoldEvent for StoredEvent {
    fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }
    fn sequence(&self) -> i64 {
        self.sequence
    }
    fn position(&self) -> Position {
        self.position
    }
    fn correlation_id(&self) -> Option<&str> {
        self.metadata["correlation_id"].as_str()
    }
    fn decode<P: DeserializeOwned>(&self) -> Result<P, serde_json::Error> {
        commandcenter_domain::decode_payload(&self.event_type, &self.event_version, &self.payload)
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
}

impl FoldEvent for CompactEvent {
    fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }
    fn sequence(&self) -> i64 {
        self.sequence
    }
    fn position(&self) -> Position {
        self.position
    }
    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
    fn decode<P: DeserializeOwned>(&self) -> Result<P, serde_json::Error> {
        commandcenter_domain::decode_payload_text(
            &self.event_type,
            &self.event_version,
            &self.payload,
        )
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
}

/// The advisory lock every apply transaction of read model `name` takes.
pub fn apply_lock_name(name: &str) -> String {
    format!("apply:{name}")
}

/// Opens a transaction holding read model `name`'s apply lock (until it ends).
pub(crate) async fn begin_applying(
    pool: &sqlx::PgPool,
    name: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(commandcenter_event_store::lock_key(&apply_lock_name(name)))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// A batch's new rows for its upsert: their documents, as one JSON array the columns are
/// read from (`$1`), and again as the text each row stores, in the same order (`$2`, a
/// `text[]`: a stored document never travels inside the JSON, where it would be escaped
/// here and parsed again by the database).
#[derive(Default)]
pub(crate) struct Upserts {
    json: String,
    documents: Vec<String>,
}

impl Upserts {
    /// Adds a row's document, which is also the row's JSON the upsert reads the columns
    /// from (`jsonb_populate_recordset`, which leaves out keys that are not columns).
    pub(crate) fn push(&mut self, document: String) {
        self.json
            .push(if self.documents.is_empty() { '[' } else { ',' });
        self.json.push_str(&document);
        self.documents.push(document);
    }
}

/// Writes a batch's new rows — one upsert statement taking their JSON array as `$1` and
/// their documents as `$2` — and its deletions.
pub(crate) async fn write_rows(
    conn: &mut PgConnection,
    upsert: &str,
    delete: &str,
    upserts: Upserts,
    deletes: &[String],
) -> Result<(), sqlx::Error> {
    if !upserts.documents.is_empty() {
        let mut json = upserts.json;
        json.push(']');
        sqlx::query(upsert)
            .bind(json)
            .bind(upserts.documents)
            .execute(&mut *conn)
            .await?;
    }
    delete_rows(conn, delete, deletes).await
}

/// Deletes a batch's deleted rows with `delete`, which takes their ids as `$1`.
pub(crate) async fn delete_rows(
    conn: &mut PgConnection,
    delete: &str,
    deletes: &[String],
) -> Result<(), sqlx::Error> {
    if !deletes.is_empty() {
        sqlx::query(delete).bind(deletes).execute(conn).await?;
    }
    Ok(())
}

/// One aggregate while a batch is folded into its row.
pub(crate) struct Folded<A, E> {
    /// The state as stored before the batch (`A::default()` for a new aggregate).
    pub before: A,
    /// The state after the batch's events, applied with the domain's own `apply`.
    pub state: A,
    /// What the read model keeps of the row beyond the state (e.g. a cursor key).
    pub extra: E,
    /// The aggregate's version after the batch.
    pub version: i64,
    /// Position of its last event.
    pub position: Position,
    /// Correlation id of its last event.
    pub correlation_id: Option<String>,
}

/// Loads the rows of the batch's aggregates (`select` takes the ids as `$1` and returns
/// `(id, row as JSON)` with `version` and `position` among the row's fields), decodes
/// each with `load`, starts unknown aggregates with `new`, and folds `events` into them.
///
/// Versions must continue each row: an event at or below the row's version was applied
/// already and is skipped; an event beyond the next version means the read model missed
/// some of the aggregate's events, which are read from the event store (the source of
/// truth) and applied first, and the gap is recorded in `projection_gaps` for `view`. If
/// the store cannot fill it either, the batch fails with [`ProjectionError::Gap`].
pub(crate) async fn fold<A, E, Ev: FoldEvent>(
    conn: &mut PgConnection,
    view: &str,
    select: &str,
    events: &[Ev],
    load: impl Fn(&str, Value) -> Result<(A, E), ProjectionError>,
    new: impl Fn(Position) -> E,
) -> Result<HashMap<String, Folded<A, E>>, ProjectionError>
where
    A: Aggregate + Clone,
{
    let mut ids: Vec<&str> = events.iter().map(FoldEvent::aggregate_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let stored: Vec<(String, Value)> = sqlx::query_as(select)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
    let mut folded = HashMap::with_capacity(ids.len());
    for (id, row) in stored {
        let version = row["version"].as_i64().unwrap_or_default();
        let position = row["position"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or(Position::ZERO);
        let (state, extra) = load(&id, row)?;
        let entry = Folded {
            before: state.clone(),
            state,
            extra,
            version,
            position,
            correlation_id: None,
        };
        folded.insert(id, entry);
    }
    let mut gaps = Vec::new();
    for event in events {
        let (id, sequence) = (event.aggregate_id(), event.sequence());
        let current = folded
            .get(id)
            .map_or(0, |entry: &Folded<A, E>| entry.version);
        if sequence <= current {
            continue;
        }
        if sequence > current + 1 {
            let missing = read_aggregate_between(conn, A::TYPE, id, current, sequence).await?;
            let detail = format!(
                "{} {id}: version {current} followed by event {sequence} (position {})",
                A::TYPE,
                event.position()
            );
            if missing.len() as i64 != sequence - current - 1 {
                return Err(ProjectionError::Gap {
                    view: view.to_string(),
                    detail: format!(
                        "{detail}; the event store has only {} of the events between",
                        missing.len()
                    ),
                });
            }
            for earlier in &missing {
                fold_one(&mut folded, earlier, &new)?;
            }
            gaps.push((detail, missing.len() as i64));
        }
        fold_one(&mut folded, event, &new)?;
    }
    for (detail, filled) in gaps {
        tracing::warn!(view, %detail, filled, "gap in an aggregate's versions filled from the event store");
        record_gap(&mut *conn, view, "aggregate", &detail, filled, true).await?;
    }
    Ok(folded)
}

/// Applies one event to its aggregate's entry (created with `new` if absent).
fn fold_one<A, E>(
    folded: &mut HashMap<String, Folded<A, E>>,
    event: &impl FoldEvent,
    new: &impl Fn(Position) -> E,
) -> Result<(), ProjectionError>
where
    A: Aggregate + Clone,
{
    let payload: A::Event = event.decode().map_err(|source| ProjectionError::Decode {
        what: format!(
            "event {} ({}) of {} {}",
            event.sequence(),
            event.event_type(),
            A::TYPE,
            event.aggregate_id()
        ),
        source,
    })?;
    let entry = folded
        .entry(event.aggregate_id().to_string())
        .or_insert_with(|| Folded {
            before: A::default(),
            state: A::default(),
            extra: new(event.position()),
            version: 0,
            position: Position::ZERO,
            correlation_id: None,
        });
    entry.state.apply(payload);
    entry.version = event.sequence();
    entry.position = event.position();
    entry.correlation_id = event.correlation_id().map(str::to_string);
    Ok(())
}

/// Records a gap of read model `view` in `projection_gaps` (see the migration):
/// `resolved` when it was filled in the transaction that records it.
pub(crate) async fn record_gap(
    conn: &mut PgConnection,
    view: &str,
    kind: &str,
    detail: &str,
    events_filled: i64,
    resolved: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO public.projection_gaps (projection, kind, detail, events_filled, resolved_at) \
         VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END)",
    )
    .bind(view)
    .bind(kind)
    .bind(detail)
    .bind(events_filled)
    .bind(resolved)
    .execute(conn)
    .await?;
    Ok(())
}
