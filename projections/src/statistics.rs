//! Keeps the planner's statistics of a read model's tables fresh while the live projector
//! writes them.
//!
//! A bulk load or a catch-up of many events grows a read model far beyond what its
//! statistics say until autovacuum gets round to it (a minute or more later), and the
//! planner then picks plans for a nearly empty table: the technologies page served 7.9
//! requests/s over 50,000 fresh rows, 1,526 after an `ANALYZE`. So each active projector
//! runs a [`StatsKeeper`]: after batches are applied it reads, per table, the rows
//! changed since the table was last analyzed (`pg_stat_user_tables.n_mod_since_analyze`,
//! PostgreSQL's own per-table count, which also survives a projector restart) and runs
//! `ANALYZE` on each table changed by more than [`STALE_FRACTION`] of its size (plus
//! [`STALE_BASE`] rows).
//!
//! It never blocks the projection: it runs on its own task and connection, checks at most
//! once per [`MIN_INTERVAL`] and, after analyzing, waits [`ANALYZE_SHARE`] times as long
//! as its `ANALYZE` statements took (at most [`MAX_INTERVAL`]) before it checks again (an
//! `ANALYZE` of a 50,000-row view takes about 0.37 s, and a write load kept it analyzing
//! every 2 s: 14 % of the database's time), analyzes one table at a time in the whole
//! process, and does nothing at all while no batch is applied. Backends publish their
//! table counters up to [`STATS_SETTLE`] after a transaction ends, so one more check
//! follows the last batch by that long: the tail of a load is not missed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A table is analyzed once the rows changed since its last analysis exceed this fraction
/// of its estimated size (autovacuum's default scale factor)...
pub const STALE_FRACTION: f64 = 0.1;
/// ... plus this many rows.
pub const STALE_BASE: f64 = 500.0;
/// Least time between two checks of one read model.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// After analyzing, a keeper waits at least this many times as long as its `ANALYZE`
/// statements took, so analyzing takes at most about 1/21 of its time however fast the
/// view grows ...
pub const ANALYZE_SHARE: u32 = 20;
/// ... but never longer than this.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// How long after the last batch the final check runs (backends publish their table
/// counters at most every second when idle, and within 10 s in any case).
pub const STATS_SETTLE: Duration = Duration::from_secs(11);

/// One `ANALYZE` at a time in the process, whatever read model asks.
static ANALYZING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The projector's handle: tells the keeper a batch was applied.
#[derive(Clone, Default)]
pub(crate) struct StatsKeeper {
    applied: Arc<Notify>,
}

impl StatsKeeper {
    /// A batch changed the read model's tables.
    pub(crate) fn changed(&self) {
        self.applied.notify_one();
    }

    /// Keeps the statistics of `tables` fresh until `stop`.
    pub(crate) async fn run(
        self,
        pool: PgPool,
        view: &'static str,
        tables: &'static [&'static str],
        stop: CancellationToken,
    ) {
        let mut settle_check = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.applied.notified() => settle_check = true,
                () = tokio::time::sleep(STATS_SETTLE), if settle_check => settle_check = false,
            }
            let pause = match analyze_stale(&pool, view, tables).await {
                Ok(analyzed) => (analyzed.took * ANALYZE_SHARE).clamp(MIN_INTERVAL, MAX_INTERVAL),
                Err(err) => {
                    tracing::warn!(%err, projection = view, "cannot refresh the read model's statistics; will retry");
                    MIN_INTERVAL
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Whether `table` (of schema `public`) was never analyzed, or changed by more than its
/// threshold since its last analysis.
pub(crate) async fn is_stale(pool: &PgPool, table: &str) -> Result<bool, sqlx::Error> {
    let fresh: Option<bool> = sqlx::query_scalar(
        "SELECT coalesce(s.last_analyze, s.last_autoanalyze) IS NOT NULL \
            AND c.reltuples >= 0 \
            AND s.n_mod_since_analyze <= $2 * c.reltuples + $3 \
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
          WHERE s.schemaname = 'public' AND s.relname = $1",
    )
    .bind(table)
    .bind(STALE_FRACTION)
    .bind(STALE_BASE)
    .fetch_optional(pool)
    .await?;
    Ok(fresh != Some(true))
}

/// What [`analyze_stale`] did.
#[derive(Debug, Default)]
pub(crate) struct Analyzed {
    /// The tables analyzed.
    pub(crate) tables: Vec<String>,
    /// How long their `ANALYZE` statements took (not the wait for another one's turn).
    pub(crate) took: Duration,
}

/// Analyzes each of `tables` changed by more than its threshold since its last analysis.
pub(crate) async fn analyze_stale(
    pool: &PgPool,
    view: &str,
    tables: &[&str],
) -> Result<Analyzed, sqlx::Error> {
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let stale: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT s.relname::text, s.n_mod_since_analyze, greatest(c.reltuples, 0)::float8 \
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
          WHERE s.schemaname = 'public' AND s.relname = ANY($1) \
            AND s.n_mod_since_analyze > $2 * greatest(c.reltuples, 0) + $3",
    )
    .bind(&names)
    .bind(STALE_FRACTION)
    .bind(STALE_BASE)
    .fetch_all(pool)
    .await?;
    let mut analyzed = Analyzed::default();
    for (table, changed, rows) in stale {
        let _one = ANALYZING.lock().await;
        let started = std::time::Instant::now();
        // `table` is one of the read model's own constant table names, matched above.
        sqlx::query(&format!("ANALYZE public.\"{table}\""))
            .execute(pool)
            .await?;
        tracing::info!(
            projection = view,
            table = %table,
            changed,
            estimated_rows = rows,
            ms = started.elapsed().as_millis() as u64,
            "read model analyzed"
        );
        analyzed.took += started.elapsed();
        analyzed.tables.push(table);
    }
    Ok(analyzed)
}
