//! Reads that can cost seconds — a deep `skip`, a substring search — are bounded so that
//! a handful of them cannot starve every other request of database connections:
//!
//! - at most [`ExpensiveReads::slots`] run at once (by default half the pool); a read
//!   that finds none free within a second is answered 503 with `Retry-After`, pointing
//!   to `cursor`;
//! - each runs under a statement time limit (`CC_READ_STATEMENT_TIMEOUT_MS`; past it
//!   PostgreSQL cancels the statement and the client gets 503 with `Retry-After`);
//! - when the client goes away (the request future is dropped), the statement is
//!   cancelled on the server (`pg_cancel_backend`) instead of running to its end.
//!
//! Cheap reads take none of this: no extra round trip on the common path.

use std::sync::Arc;
use std::time::Duration;

use commandcenter_api_error::ApiError;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::Semaphore;

/// How long an expensive read waits for a slot before it is refused.
const SLOT_WAIT: Duration = Duration::from_secs(1);

/// The `skip` beyond which a page counts as expensive.
pub const EXPENSIVE_SKIP: i64 = 1_000;

/// The budget of expensive reads of one process.
#[derive(Debug, Clone)]
pub struct ExpensiveReads {
    slots: Arc<Semaphore>,
    statement_timeout: Duration,
}

impl ExpensiveReads {
    /// At most `slots` at once (at least 1), each limited to `statement_timeout`.
    pub fn new(slots: usize, statement_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            statement_timeout,
        }
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// A transaction whose statement is cancelled on the server if the guard is dropped
/// while armed (the request future holding it was dropped: its client went away). The
/// connection stays out of the pool, and the read keeps its slot, until the cancel has
/// run on a connection of its own: it can never cancel another request's statement, and
/// an abandoned read counts against the budget until it has stopped.
struct CancelOnDrop {
    pool: PgPool,
    pid: i32,
    tx: Option<sqlx::Transaction<'static, Postgres>>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let slot = self.slot.take();
        let (options, pid) = (self.pool.connect_options(), self.pid);
        tokio::spawn(async move {
            use sqlx::{ConnectOptions, Connection};
            let cancelled = async {
                let mut conn = options.as_ref().clone().connect().await?;
                sqlx::query("SELECT pg_cancel_backend($1)")
                    .bind(pid)
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            }
            .await;
            match cancelled {
                Ok(()) => tracing::info!(pid, "client gone: its read was cancelled"),
                Err(err) => tracing::warn!(pid, %err, "cannot cancel an abandoned read"),
            }
            drop(tx);
            drop(slot);
        });
    }
}

/// A statement that ran out of its time limit (`statement_timeout`): the read's cost,
/// not a fault.
fn timed_out(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// How a statement is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Prepared once per connection; PostgreSQL may settle on one generic plan.
    Cached,
    /// Planned for its bound values on every call (an unnamed statement): for statements
    /// whose best plan depends on them, such as a search word's frequency, where a
    /// generic plan (which assumes a few matches) walks every match of a common word.
    PerValues,
}

/// Appends ` LIMIT limit` and, unless `skip` is 0, ` OFFSET skip`.
///
/// A `settled` statement (one plan is right for every value of its filters: they are
/// equalities on an index's leading columns and the index then gives the page's order)
/// without a `skip` has its limit written in as a number (a checked integer). Bound, it
/// kept a [`Plan::Cached`] statement from ever settling on its generic plan: that plan
/// must assume a bound limit reads a tenth of the table, so it never looked cheaper than
/// planning for the values, and PostgreSQL planned every page anew (measured with
/// `pgbench -M prepared` on the benchmark store: 2,600 technologies pages a second bound,
/// 3,900 written in). Otherwise both stay bound, so each call is planned for its values:
/// a generic plan for a filter whose best plan depends on its value (a rare domain, a
/// job type without a status) could walk a whole project's index for every page, and
/// written-in offsets would fill the connection's statement cache with one statement per
/// page. (Limits are written in: a client asking for many different page sizes makes
/// one statement each, where clients keep to a few.)
pub(crate) fn push_limit(
    qb: &mut QueryBuilder<'_, Postgres>,
    limit: i64,
    skip: i64,
    settled: bool,
) {
    if settled && skip == 0 {
        qb.push(format_args!(" LIMIT {limit}"));
        return;
    }
    qb.push(" LIMIT ").push_bind(limit);
    if skip != 0 {
        qb.push(" OFFSET ").push_bind(skip);
    }
}

/// Runs the statement of `qb` on `pool`, planned as `plan` says: directly when it is
/// cheap, within the budget of `reads` when `expensive`.
pub(crate) async fn fetch_all(
    reads: &ExpensiveReads,
    pool: &PgPool,
    qb: &mut QueryBuilder<'_, Postgres>,
    plan: Plan,
    expensive: bool,
) -> Result<Vec<PgRow>, ApiError> {
    let persistent = plan == Plan::Cached;
    if !expensive {
        return Ok(qb.build().persistent(persistent).fetch_all(pool).await?);
    }
    let slot = tokio::time::timeout(SLOT_WAIT, reads.slots.clone().acquire_owned())
        .await
        .map_err(|_| {
            ApiError::Overloaded(
                "too many deep-offset or search reads are running; retry, or page with `cursor`"
                    .into(),
            )
        })?
        .map_err(|_| ApiError::internal("the expensive-read semaphore closed"))?;
    let mut tx = pool.begin().await?;
    let pid: i32 = sqlx::query_scalar(
        "SELECT pg_backend_pid() FROM set_config('statement_timeout', $1, true)",
    )
    .bind(reads.statement_timeout.as_millis().to_string())
    .fetch_one(&mut *tx)
    .await?;
    let mut guard = CancelOnDrop {
        pool: pool.clone(),
        pid,
        tx: Some(tx),
        slot: Some(slot),
    };
    let rows = match guard.tx.as_mut() {
        Some(tx) => qb.build().persistent(persistent).fetch_all(&mut **tx).await,
        None => return Err(ApiError::internal("read transaction missing")),
    };
    // Finished (or failed) on the server: nothing to cancel.
    let ended = match guard.tx.take() {
        Some(tx) => tx.rollback().await,
        None => Ok(()),
    };
    let rows = rows.map_err(|err| {
        if timed_out(&err) {
            ApiError::Overloaded(format!(
                "the read took longer than its limit of {} ms; narrow it, or page with `cursor`",
                reads.statement_timeout.as_millis()
            ))
        } else {
            ApiError::from(err)
        }
    })?;
    ended?;
    Ok(rows)
}
