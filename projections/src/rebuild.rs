//! `projections rebuild NAME`: replays a read model from the event store (not NATS) into
//! shadow tables, then swaps them in — readers never see a half-built view.
//!
//! 1. Shadow tables are created in schema `cc_rebuild_<name>` as copies of the live
//!    tables' definitions (`LIKE … INCLUDING ALL`, and their triggers).
//! 2. Events are read from the gap-safe feed in large batches; each batch is split by
//!    aggregate into parts applied at once, each in its own short transaction with
//!    `search_path` pointing at the shadow schema (a long write transaction would hold
//!    back the relay for everyone). Secondary indexes are dropped from the shadow tables
//!    during the load and built once afterwards.
//! 3. Once the read model's last event committed when the rebuild started is applied
//!    (events committed since are the live projector's), one transaction takes the read
//!    model's apply lock
//!    (pausing its live projector between batches), applies the events the live
//!    projector had already applied beyond the rebuild's position, replaces the live
//!    tables with the shadow ones and sets the checkpoint. The live projector resumes
//!    from there, skipping what the rebuild applied.

use std::hash::{Hash, Hasher};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use commandcenter_event_store::{
    last_committed_of, lock_key, read_feed_of_upto, read_range, CompactEvent, Position,
};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{Connection, PgConnection, PgPool};

use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::read_model::begin_applying;
use crate::{statistics, ProjectionError, ReadModel};

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    /// The read model.
    pub name: &'static str,
    /// Events applied.
    pub events: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The checkpoint after the swap.
    pub position: Position,
}

impl RebuildReport {
    /// Events applied per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Quotes an identifier for DDL. Names come from the read models' constants, never
/// from input; quoting keeps even those honest.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn shadow_schema<M: ReadModel>() -> String {
    format!("cc_rebuild_{}", M::NAME)
}

async fn use_shadow<M: ReadModel>(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    use_schema(conn, &shadow_schema::<M>()).await
}

/// Points this transaction's unqualified table names at `schema` (then `public`).
pub(crate) async fn use_schema(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    // SET LOCAL cannot take a bind parameter; set_config can.
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(format!("{}, public", ident(schema)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies, to the copy of `model` in `schema`, the events of its type after `position`
/// up to `live` (what the live projector applied meanwhile), inside `tx`; returns how
/// many. `search_path` stays on `schema` for the rest of the transaction when any were.
pub(crate) async fn apply_behind<M: ReadModel>(
    tx: &mut PgConnection,
    model: &M,
    schema: &str,
    position: Position,
    live: Position,
) -> Result<u64, ProjectionError> {
    if live <= position {
        return Ok(0);
    }
    let behind = read_range(&mut *tx, M::AGGREGATE_TYPE, position, live).await?;
    if behind.is_empty() {
        return Ok(0);
    }
    use_schema(&mut *tx, schema).await?;
    model.apply(&mut *tx, &behind).await?;
    Ok(behind.len() as u64)
}

/// (Re)creates schema `schema` (quoted) with empty copies of `tables`' definitions and
/// triggers, then makes `triggers` on them (a read model's own, `ReadModel::TRIGGERS`).
pub(crate) async fn create_shadow_tables(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[&str],
    triggers: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *conn)
        .await?;
    for name in tables {
        let table = ident(name);
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *conn)
        .await?;
        // `LIKE` copies no triggers; the live tables' (e.g. the one forgetting a stored
        // document an older release's write outgrew) must stay with the swapped-in ones.
        let triggers: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t \
              WHERE t.tgrelid = ('public.' || quote_ident($1))::regclass AND NOT t.tgisinternal",
        )
        .bind(*name)
        .fetch_all(&mut *conn)
        .await?;
        for definition in triggers {
            let retargeted = retarget_trigger(&definition, &format!("{schema}.{table}"))
                .ok_or_else(|| {
                    sqlx::Error::Protocol(format!(
                        "cannot copy a trigger to the shadow table: {definition}"
                    ))
                })?;
            sqlx::query(&retargeted).execute(&mut *conn).await?;
        }
    }
    for trigger in triggers {
        sqlx::query(&trigger.replace("{schema}", schema))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A trigger's definition as `pg_get_triggerdef` prints it, on `table` instead: the table
/// name after ` ON ` is replaced, and everything else (events, `REFERENCING` transition
/// tables, `FOR EACH`, `WHEN`, the function) kept.
fn retarget_trigger(definition: &str, table: &str) -> Option<String> {
    let on = definition.find(" ON ")? + " ON ".len();
    let rest = &definition[on..];
    let name_ends = rest.find(' ')?;
    Some(format!(
        "{}{table}{}",
        &definition[..on],
        &rest[name_ends..]
    ))
}

fn progress_bar(total: u64) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    }
}

/// How many transactions apply each batch read by a rebuild, its events split between
/// them by aggregate. With two, the database writes one part while this process folds
/// and renders the other, and both of a 2-core machine's cores stay busy.
const PARTS: usize = 2;

/// Splits `events` (in feed order) into at most `parts` non-empty parts by aggregate: all
/// of an aggregate's events go to one part, in their order. The parts' aggregates are
/// disjoint, so they can be applied by concurrent transactions (the read models take
/// their shared count rows in key order, which keeps those from deadlocking).
fn split_by_aggregate(events: Vec<CompactEvent>, parts: usize) -> Vec<Vec<CompactEvent>> {
    let mut split: Vec<Vec<CompactEvent>> = (0..parts)
        .map(|_| Vec::with_capacity(events.len() / parts + 1))
        .collect();
    for event in events {
        let mut hasher = std::hash::DefaultHasher::new();
        event.aggregate_id.hash(&mut hasher);
        let part = (hasher.finish() % parts as u64) as usize;
        split[part].push(event);
    }
    split.retain(|part| !part.is_empty());
    split
}

/// Applies `events` to `model`'s shadow tables in a transaction of its own.
async fn apply_to_shadow<M: ReadModel>(
    pool: &PgPool,
    model: &M,
    events: &[CompactEvent],
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    use_shadow::<M>(&mut tx).await?;
    // A crash loses nothing that matters: a rebuild starts over from scratch.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    model.apply(&mut tx, events).await?;
    tx.commit().await?;
    Ok(())
}

/// About how many events of `aggregate_type` the store holds, from the planner's
/// statistics of `events` (its row estimate times the type's share among the most common
/// values); counted when the type is not among them.
async fn estimated_events_of(pool: &PgPool, aggregate_type: &str) -> Result<u64, sqlx::Error> {
    let estimate: Option<f64> = sqlx::query_scalar(
        "SELECT greatest(c.reltuples, 0)::float8 * s.most_common_freqs[ \
                    array_position(s.most_common_vals::text::text[], $1)]::float8 \
           FROM pg_class c JOIN pg_stats s \
             ON s.schemaname = 'public' AND s.tablename = 'events' AND s.attname = 'aggregate_type' \
          WHERE c.oid = 'public.events'::regclass",
    )
    .bind(aggregate_type)
    .fetch_optional(pool)
    .await?
    .flatten();
    let events = match estimate {
        Some(estimate) => estimate.round() as i64,
        None => {
            sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
                .bind(aggregate_type)
                .fetch_one(pool)
                .await?
        }
    };
    Ok(u64::try_from(events).unwrap_or_default())
}

/// Rebuilds read model `model` from the event store, reading `batch_size` events at a
/// time.
pub async fn rebuild<M: ReadModel + Clone>(
    pool: &PgPool,
    model: &M,
    batch_size: i64,
) -> Result<RebuildReport, ProjectionError> {
    let started = Instant::now();
    // One rebuild per read model at a time: both would share the shadow schema. The
    // lock lives as long as this connection, so a crashed rebuild releases it.
    let mut guard = pool.acquire().await?.detach();
    let key = lock_key(&format!("rebuild:{}", M::NAME));
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut guard)
        .await?;
    if !locked {
        return Err(ProjectionError::RebuildRunning(M::NAME));
    }
    let rebuilt = rebuild_locked(pool, model, batch_size, started).await;
    // Released here, not by dropping the connection: the server releases a dropped
    // connection's locks only once it has noticed, and a rebuild of the same view started
    // right after this one (a retry, a second in a row) was refused as already running.
    let released = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(&mut guard)
        .await;
    match released {
        Ok(_) => {
            if let Err(err) = guard.close().await {
                tracing::warn!(%err, read_model = M::NAME, "closing the rebuild's lock connection failed");
            }
        }
        // Dropped, the connection still releases the lock when the server notices.
        Err(err) => {
            tracing::warn!(%err, read_model = M::NAME, "releasing the rebuild's lock failed")
        }
    }
    rebuilt
}

/// [`rebuild`] under its lock.
async fn rebuild_locked<M: ReadModel + Clone>(
    pool: &PgPool,
    model: &M,
    batch_size: i64,
    started: Instant,
) -> Result<RebuildReport, ProjectionError> {
    let schema = ident(&shadow_schema::<M>());
    // The batched feed reads and the read models' own statements are planned on these
    // statistics: after a bulk load they describe a table a fraction of its size.
    // Analyzed only when never taken or stale by the projectors' rule (the second view's
    // rebuild after a load finds the first one's analysis).
    if statistics::is_stale(pool, "events").await? {
        sqlx::query("ANALYZE events").execute(pool).await?;
    }
    // For the progress bar and the log only: counting 2.6 million events took a quarter
    // of a second per rebuild.
    let total = estimated_events_of(pool, M::AGGREGATE_TYPE).await?;
    let bar = progress_bar(total);
    bar.set_message(format!("rebuilding {}", M::NAME));
    tracing::info!(
        read_model = M::NAME,
        estimated_events = total,
        "rebuild started"
    );

    let mut ddl = pool.begin().await?;
    create_shadow_tables(&mut ddl, &schema, M::TABLES, M::TRIGGERS).await?;
    // Secondary indexes are cheaper to build once over the loaded rows than to maintain
    // row by row: drop them from the shadow tables now, recreate them before the swap.
    // Unique ones stay, the upserts need them.
    let deferred: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
           JOIN pg_class c ON c.oid = i.indexrelid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 AND NOT i.indisunique",
    )
    .bind(shadow_schema::<M>())
    .fetch_all(&mut *ddl)
    .await?;
    let deferred_names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i \
           JOIN pg_class c ON c.oid = i.indexrelid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 AND NOT i.indisunique",
    )
    .bind(shadow_schema::<M>())
    .fetch_all(&mut *ddl)
    .await?;
    for name in &deferred_names {
        sqlx::query(&format!("DROP INDEX {schema}.{}", ident(name)))
            .execute(&mut *ddl)
            .await?;
    }
    ddl.commit().await?;

    // Every event committed before the rebuild started is applied before the swap: the
    // gap-safe feed can pause short of it while any transaction of the server is in
    // flight, and an empty read then means "wait", not "done". Nothing past it is read
    // (events committed since are the live projector's, caught up at the swap): an
    // unbounded read after the type's last event walks every later event of other types
    // (0.46 s after the last technology event of the benchmark's store).
    let target = last_committed_of(pool, M::AGGREGATE_TYPE)
        .await?
        .unwrap_or(Position::ZERO);
    let read = |after| read_feed_of_upto(pool, M::AGGREGATE_TYPE, after, target, batch_size);
    let mut position = Position::ZERO;
    let mut applied: u64 = 0;
    let mut last_log = Instant::now();
    let mut events = read(position).await?;
    loop {
        let Some(last) = events.last().map(|e| e.position) else {
            if position >= target {
                break;
            }
            if last_log.elapsed() >= Duration::from_secs(5) {
                tracing::info!(read_model = M::NAME, %position, %target, "rebuild waits for transactions in flight");
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            events = read(position).await?;
            continue;
        };
        // The next batch is read while this one is applied, and the batch is applied by
        // PARTS transactions at once, so the database reads, writes one part and this
        // process folds another all at the same time.
        let count = events.len() as u64;
        let mut parts = tokio::task::JoinSet::new();
        for part in split_by_aggregate(std::mem::take(&mut events), PARTS) {
            let (pool, model) = (pool.clone(), model.clone());
            parts.spawn(async move { apply_to_shadow(&pool, &model, &part).await });
        }
        let apply = async {
            // Every part ends before an error is answered (a panic is raised at once, and
            // the set aborts the other part). Should the rebuild be dropped instead, the
            // set aborts the parts still running: none is left to write into a later
            // rebuild's shadow tables (one whose COMMIT was already sent may still
            // commit, into this rebuild's, which the next one drops).
            let mut failed = Ok(());
            while let Some(part) = parts.join_next().await {
                let done = match part {
                    Ok(done) => done,
                    Err(stopped) if stopped.is_panic() => {
                        std::panic::resume_unwind(stopped.into_panic())
                    }
                    Err(stopped) => Err(ProjectionError::Stopped(stopped)),
                };
                if failed.is_ok() {
                    failed = done;
                }
            }
            failed
        };
        let (done, next) = tokio::join!(apply, read(last));
        done?;
        position = last;
        applied += count;
        bar.inc(count);
        if applied > total {
            bar.set_length(applied);
        }
        if bar.is_hidden() && last_log.elapsed() >= Duration::from_secs(5) {
            tracing::info!(
                read_model = M::NAME,
                applied,
                estimated_total = total,
                "rebuild progress"
            );
            last_log = Instant::now();
        }
        events = next?;
    }

    bar.set_message(format!("indexing {}", M::NAME));
    let loaded = started.elapsed();
    for definition in &deferred {
        // Definitions as PostgreSQL printed them for the shadow tables. (Built two at a
        // time they took as long: PostgreSQL already sorts with parallel workers.)
        sqlx::query(definition).execute(pool).await?;
    }
    tracing::info!(
        read_model = M::NAME,
        loaded_seconds = loaded.as_secs_f64(),
        indexes = deferred.len(),
        indexing_seconds = (started.elapsed() - loaded).as_secs_f64(),
        "rebuild indexed"
    );
    // A swapped-in table without statistics would be planned as if empty.
    for table in M::TABLES {
        sqlx::query(&format!("ANALYZE {schema}.{}", ident(table)))
            .execute(pool)
            .await?;
    }

    // The swap: pause the live projector, catch up to it, replace the tables.
    let mut tx = begin_applying(pool, M::NAME).await?;
    let live = load_checkpoint(&mut tx, M::NAME).await?;
    let behind = apply_behind(&mut tx, model, &shadow_schema::<M>(), position, live).await?;
    applied += behind;
    bar.inc(behind);
    let final_position = position.max(live);
    for table in M::TABLES {
        let table = ident(table);
        sqlx::query(&format!("DROP TABLE public.{table}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!("DROP SCHEMA {schema}"))
        .execute(&mut *tx)
        .await?;
    save_checkpoint(&mut tx, M::NAME, final_position).await?;
    // The rebuilt tables come from the store itself: no gap of the old ones remains.
    sqlx::query(
        "UPDATE projection_gaps SET resolved_at = now() WHERE projection = $1 AND resolved_at IS NULL",
    )
    .bind(M::NAME)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    bar.finish_and_clear();

    let report = RebuildReport {
        name: M::NAME,
        events: applied,
        elapsed: started.elapsed(),
        position: final_position,
    };
    tracing::info!(
        read_model = M::NAME,
        events = report.events,
        seconds = report.elapsed.as_secs_f64(),
        events_per_second = report.events_per_second() as u64,
        "rebuild swapped in"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use commandcenter_event_store::{CompactEvent, Position};

    use super::split_by_aggregate;

    fn event(aggregate_id: &str, sequence: i64, at: i64) -> CompactEvent {
        CompactEvent {
            aggregate_id: aggregate_id.into(),
            sequence,
            event_type: "JobCreated".into(),
            event_version: "1".into(),
            payload: "{}".into(),
            correlation_id: None,
            position: Position::new(1, at),
        }
    }

    #[test]
    fn an_aggregates_events_stay_in_one_part_in_their_order() {
        let ids: Vec<String> = (0..40).map(|n| format!("job-{n}")).collect();
        let mut events = Vec::new();
        for sequence in 1..=3 {
            for (n, id) in ids.iter().enumerate() {
                events.push(event(id, sequence, sequence * 100 + n as i64));
            }
        }
        let parts = split_by_aggregate(events.clone(), 2);
        assert_eq!(parts.len(), 2, "40 aggregates fill both parts");
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), events.len());
        for id in &ids {
            let holding: Vec<&Vec<CompactEvent>> = parts
                .iter()
                .filter(|part| part.iter().any(|e| &e.aggregate_id == id))
                .collect();
            assert_eq!(holding.len(), 1, "{id} is in one part");
            let sequences: Vec<i64> = holding[0]
                .iter()
                .filter(|e| &e.aggregate_id == id)
                .map(|e| e.sequence)
                .collect();
            assert_eq!(sequences, [1, 2, 3], "{id}'s events keep their order");
        }
        for part in &parts {
            assert!(
                part.windows(2).all(|w| w[0].position < w[1].position),
                "each part keeps feed order"
            );
        }
        assert!(
            split_by_aggregate(Vec::new(), 2).is_empty(),
            "no empty part"
        );
    }

    #[test]
    fn a_trigger_is_retargeted_with_its_transition_tables_and_condition() {
        let retarget = |definition: &str| super::retarget_trigger(definition, "s.t").unwrap();
        assert_eq!(
            retarget(
                "CREATE TRIGGER a AFTER INSERT ON public.t REFERENCING NEW TABLE AS changed \
                 FOR EACH STATEMENT EXECUTE FUNCTION f()"
            ),
            "CREATE TRIGGER a AFTER INSERT ON s.t REFERENCING NEW TABLE AS changed \
             FOR EACH STATEMENT EXECUTE FUNCTION f()"
        );
        assert_eq!(
            retarget(
                "CREATE TRIGGER b BEFORE UPDATE ON public.t FOR EACH ROW \
                 WHEN ((new.doc IS NOT DISTINCT FROM old.doc)) EXECUTE FUNCTION g()"
            ),
            "CREATE TRIGGER b BEFORE UPDATE ON s.t FOR EACH ROW \
             WHEN ((new.doc IS NOT DISTINCT FROM old.doc)) EXECUTE FUNCTION g()"
        );
        assert_eq!(super::retarget_trigger("CREATE TRIGGER c", "s.t"), None);
    }
}
