//! Group commit: commands that arrive together share one transaction and one commit, the
//! way a database batches its WAL flushes, while each keeps its own outcome.
//!
//! Each [`EventStore`](crate::EventStore) has a few committer tasks sharing one queue,
//! started on first use. A writer hands the queue a [`Member`] (one command's writes,
//! already decided) and waits. A free committer takes the first member queued, then
//! whatever else is queued at that moment (at most [`MAX_BATCH`]); nothing waits for
//! company, so a lone command on an idle service commits at once, and batches grow only
//! while every committer is busy. A command whose code panics abandons its batch (every
//! member is answered "unavailable"), never the committer.
//!
//! In the batch's transaction every member writes under a savepoint of its own (a lone
//! member needs none): a member that fails — a lost version race, a taken claim, an
//! Idempotency-Key another member of the batch holds — is rolled back to its savepoint
//! alone and its neighbours go on. Plain members (events and claims alone) that share
//! nothing with the rest of the batch are first appended together, by one statement under
//! one savepoint, which stands only if it did for each what its own writes would have
//! (else it is undone whole, and they too are written one by one). Every member learns
//! its outcome only after the batch ended ([`Member::settle`]): a member kept in a
//! committed batch succeeded, a member that failed is told so once the batch's rows are
//! visible (so a retry sees its winner), and when the commit itself fails no member
//! succeeded — all or nothing per batch. A
//! COMMIT that fails to answer (the connection cut, the server stopping) may still have
//! taken place: its outcome is read back on other connections (the transaction's status,
//! then one of its events' rows), and only when that cannot be done — the database out
//! of reach, or no member appended an event (a batch of Idempotency-Key records alone) —
//! is each member told its outcome is unknown
//! ([`StoreError::CommitUnknown`]), never that it failed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, Mutex};

use crate::store::{append_claiming_together, disjoint};
use crate::{pause, AppendSignal, Committed, PlainAppend, Position, StoreError};

/// At most this many commands share a transaction. Each member's savepoint becomes a
/// subtransaction; PostgreSQL caches 64 subtransaction ids per backend before every
/// snapshot of the cluster gets slower, so batches stay below that.
pub const MAX_BATCH: usize = 48;

/// Committer tasks per store by default. Each writes one batch at a time, statement after
/// statement on one connection, and a command arriving while every one is busy waits for
/// the first to finish — batching happens exactly when the committers are saturated. Two
/// overlap one batch's commit with the next one's statements; more only cut the batches
/// smaller, each with its own round trips and commit: with plain commands appended by one
/// statement per batch, `POST /api/v1/technologies` at 32 clients ran 16 % more commands
/// a second with one committer than with four (five alternating 15 s runs each on the
/// 2-core benchmark machine: 1,283–1,613 against 1,154–1,358), and two as many as one
/// (three pairs: 1,417–1,556 against 1,417–1,542).
pub const COMMITTERS: usize = 2;

/// At most this many commands wait for a committer by default; one more is refused at
/// once ([`StoreError::Busy`], a 503 with `Retry-After`) instead of joining a queue that
/// only grows while the database is slower than the arrivals (or down: each batch then
/// waits out the pool's acquire timeout before failing). 1,024 is about 21 full batches:
/// one to two seconds of commands at the rates measured on the 2-core bench machine
/// (600–800 commands/s, `bench/results/LATEST.md`).
pub const MAX_WAITING: usize = 1024;

/// One command's writes in a group commit.
pub trait Member: Send + 'static {
    /// Writes the member's rows on `conn`, inside the batch's transaction. On `Err` the
    /// committer undoes them (rolls back to the member's savepoint); the member keeps
    /// the reason for [`Member::settle`].
    fn write<'a>(&'a mut self, conn: &'a mut PgConnection) -> BoxFuture<'a, Result<(), Rejected>>;

    /// The batch ended. `Ok` when it committed (or, for a member whose `write` failed,
    /// ended without a fault of its own); `Err` when it did not commit, with what ended
    /// it. A member whose `write` failed answers with its own reason either way.
    fn settle(self: Box<Self>, batch: Result<(), StoreError>);

    /// The last event the member appended in this batch (its position's `tx_id` is the
    /// batch's transaction); `None` when it appended none. Asked when a COMMIT fails to
    /// answer, to read back whether it took place anyway.
    fn appended(&self) -> Option<Appended>;

    /// The aggregate the member appends to and the claims it gives up and takes, when it
    /// appends events (`None` when it writes neither): what its writes and another
    /// member's could both touch.
    fn footprint(&self) -> Option<PlainAppend<'_>>;

    /// The member's writes when they are events and claims alone — at least one event,
    /// no Idempotency-Key record, no snapshot due, not yet written: the batch may then
    /// append them with its other plain members' in one statement instead of calling
    /// [`Member::write`]. `None` by default.
    fn plain(&self) -> Option<PlainAppend<'_>> {
        None
    }

    /// The batch's shared statement appended [`Member::plain`]'s writes, the last event
    /// at `committed`: the member finishes as [`Member::write`] would past its append.
    /// On `Err` the batch undoes the statement and calls [`Member::unwrite_plain`] on the
    /// members it had finished, then writes each with [`Member::write`].
    fn wrote_plain(&mut self, committed: Committed) -> Result<(), Rejected> {
        let _ = committed;
        Err(Rejected)
    }

    /// Undoes [`Member::wrote_plain`]: the member is as it was before it.
    fn unwrite_plain(&mut self) {}
}

/// An event a member of a batch appended: what the read-back of a COMMIT that failed to
/// answer looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Its aggregate's type.
    pub aggregate_type: String,
    /// Its aggregate's id.
    pub aggregate_id: String,
    /// Its sequence in the aggregate.
    pub sequence: i64,
    /// Its position (`tx_id` and `global_position`).
    pub position: Position,
}

/// How long a member of a batch waits for a lock held by another transaction (a lone
/// command needs no limit)...
const BATCH_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '250ms'";
/// ... and the same with the savepoint of the plain members' shared statement
/// ([`append_together`]), in one round trip.
const BATCH_LOCK_TIMEOUT_TOGETHER: &str = "SET LOCAL lock_timeout = '250ms'; SAVEPOINT together";

/// A member's write failed; the member knows why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

type Queue = mpsc::UnboundedSender<Box<dyn Member>>;

/// The handle on a store's committer task (started on first use).
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: Arc<OnceLock<Queue>>,
    waiting: Arc<AtomicUsize>,
    committers: usize,
    max_waiting: usize,
    /// How long a COMMIT that failed to answer is read back before its outcome is
    /// declared unknown.
    outcome_wait: Duration,
    /// Commands refused because the queue was full, and the second (since the Unix epoch)
    /// that was last logged.
    refused: Arc<AtomicU64>,
    refused_logged: Arc<AtomicU64>,
    /// What became of the batches' shared statements.
    together: Arc<Together>,
}

/// What became of the shared statements of a store's batches ([`append_together`]).
#[derive(Default)]
struct Together {
    /// Commands appended by one.
    appended: AtomicU64,
    /// Statements run and undone (the batch then written one by one).
    undone: AtomicU64,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            queue: Arc::default(),
            waiting: Arc::default(),
            committers: COMMITTERS,
            max_waiting: MAX_WAITING,
            outcome_wait: OUTCOME_SOUGHT_FOR,
            refused: Arc::default(),
            refused_logged: Arc::default(),
            together: Arc::default(),
        }
    }
}

impl GroupCommit {
    /// A new handle (the store's other handles keep theirs) that will start
    /// `committers` committer tasks (at least one), with this one's queue limit.
    pub(crate) fn with_committers(&self, committers: usize) -> Self {
        Self {
            committers: committers.max(1),
            max_waiting: self.max_waiting,
            outcome_wait: self.outcome_wait,
            ..Self::default()
        }
    }

    /// A new handle (as [`Self::with_committers`]) reading a COMMIT that failed to answer
    /// back for up to `wait`.
    pub(crate) fn reading_outcomes_for(&self, wait: Duration) -> Self {
        Self {
            committers: self.committers,
            max_waiting: self.max_waiting,
            outcome_wait: wait,
            ..Self::default()
        }
    }

    /// A new handle (as [`Self::with_committers`]) refusing commands once `max_waiting`
    /// (at least one) wait.
    pub(crate) fn limited(&self, max_waiting: usize) -> Self {
        Self {
            committers: self.committers,
            max_waiting: max_waiting.max(1),
            outcome_wait: self.outcome_wait,
            ..Self::default()
        }
    }

    /// Queues `member` for the next batch; starts the committers on first use. When
    /// `max_waiting` commands already wait, `member` is settled at once with
    /// [`StoreError::Busy`].
    pub(crate) fn submit(&self, pool: &PgPool, signal: &AppendSignal, member: Box<dyn Member>) {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // Once per second at most, with the count so far: a sustained overload must
            // not flood the log.
            let second = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if self.refused_logged.swap(second, Ordering::Relaxed) != second {
                tracing::warn!(
                    waiting = self.max_waiting,
                    refused_so_far = refused,
                    "commands are being refused: the commit queue is full"
                );
            }
            member.settle(Err(StoreError::Busy {
                waiting: self.max_waiting,
            }));
            return;
        }
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..self.committers {
                tokio::spawn(run(
                    pool.clone(),
                    signal.clone(),
                    receiver.clone(),
                    self.waiting.clone(),
                    self.outcome_wait,
                    self.together.clone(),
                ));
            }
            sender
        });
        if let Err(mpsc::error::SendError(member)) = queue.send(member) {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            // The committer is gone only when its runtime is shutting down.
            member.settle(Err(StoreError::Database(sqlx::Error::PoolClosed)));
        }
    }

    /// Commands queued and not yet taken into a batch.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Commands appended by their batch's shared statement so far (the rest of the
    /// batched commands were written one by one).
    pub(crate) fn appended_together(&self) -> u64 {
        self.together.appended.load(Ordering::Relaxed)
    }

    /// Batches whose shared statement was run and undone so far (a claim held outside
    /// the batch, a conflict, a lock waited out): their commands were then written one by
    /// one.
    pub(crate) fn shared_statements_undone(&self) -> u64 {
        self.together.undone.load(Ordering::Relaxed)
    }
}

/// A committer: one batch at a time, each made of the first command queued and whatever
/// else is queued at that moment (the committers take turns at the queue). Ends when
/// every handle on the store is dropped.
///
/// A committer that ends a batch with commands queued and the queue free goes straight on
/// with them on the same database session; it hands the session back to the pool only
/// when it finds none (or its batch failed), so it never holds one while waiting. sqlx
/// checks a session with a round trip every time it comes back to the pool.
async fn run(
    pool: PgPool,
    signal: AppendSignal,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Box<dyn Member>>>>,
    waiting: Arc<AtomicUsize>,
    outcome_wait: Duration,
    together: Arc<Together>,
) {
    loop {
        let (mut batch, acquired) = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            // Taken while the queue is held, so that a committer going on from its last
            // batch (below) finds it held and hands its session back instead of keeping
            // it from this one.
            let acquired = pool.acquire().await;
            (fill(&mut queue, first), acquired)
        };
        waiting.fetch_sub(batch.len(), Ordering::SeqCst);
        let mut conn = match acquired {
            Ok(conn) => conn,
            Err(err) => {
                settle_all(batch, err);
                continue;
            }
        };
        // A session kept under a steady load bypasses the pool's lifetime and idle limits,
        // which sqlx applies only when a session is lent or comes back.
        loop {
            let Some(kept) =
                write_batch(conn, &pool, &signal, batch, outcome_wait, &together).await
            else {
                break;
            };
            conn = kept;
            // Another committer waiting at the queue takes what comes next.
            let Ok(mut queued) = queue.try_lock() else {
                break;
            };
            let Ok(first) = queued.try_recv() else {
                break;
            };
            batch = fill(&mut queued, first);
            waiting.fetch_sub(batch.len(), Ordering::SeqCst);
        }
    }
}

/// [`commit_batch`], going on with the batch on another session while the one it has fails
/// at BEGIN: the pool lends a session used in the last
/// [`CHECK_IDLE_SESSION_AFTER`](crate::CHECK_IDLE_SESSION_AFTER) unchecked, and one the
/// database ended meanwhile fails there, before anything is written. Each such session is
/// discarded, so the batch needs at most one more attempt than the pool has sessions.
/// Returns the session to write the next batch on, if the batch left it clean.
async fn write_batch(
    mut conn: PoolConnection<Postgres>,
    pool: &PgPool,
    signal: &AppendSignal,
    mut batch: Vec<Box<dyn Member>>,
    outcome_wait: Duration,
    together: &Together,
) -> Option<PoolConnection<Postgres>> {
    let mut attempts = pool.options().get_max_connections() + 1;
    loop {
        // A panic past the writes (a member answering) must not end the committer.
        let ended = AssertUnwindSafe(commit_batch(
            conn,
            pool,
            signal,
            batch,
            outcome_wait,
            together,
        ))
        .catch_unwind()
        .await;
        match ended {
            Ok(Ended::Kept(conn)) => return Some(conn),
            Ok(Ended::Spent) => return None,
            Ok(Ended::NotBegun(members, err)) => {
                attempts -= 1;
                if attempts == 0 {
                    settle_all(members, err);
                    return None;
                }
                tracing::debug!(%err, "a session failed at BEGIN; the batch goes on another");
                conn = match pool.acquire().await {
                    Ok(conn) => conn,
                    Err(err) => {
                        settle_all(members, err);
                        return None;
                    }
                };
                batch = members;
            }
            Err(_) => {
                tracing::error!("a command batch panicked while settling; the committer goes on");
                return None;
            }
        }
    }
}

/// How a batch ended, for its session.
enum Ended {
    /// Out of its transaction, every statement answered: the session can write the next
    /// batch.
    Kept(PoolConnection<Postgres>),
    /// BEGIN failed: nothing was written and no member answered; the session was dropped.
    NotBegun(Vec<Box<dyn Member>>, sqlx::Error),
    /// Anything else: every member answered, the session went back to the pool (which
    /// checks it).
    Spent,
}

/// A batch: `first`, then whatever else is queued now, up to [`MAX_BATCH`].
fn fill(
    queue: &mut mpsc::UnboundedReceiver<Box<dyn Member>>,
    first: Box<dyn Member>,
) -> Vec<Box<dyn Member>> {
    let mut batch: Vec<Box<dyn Member>> = Vec::with_capacity(MAX_BATCH);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(member) => batch.push(member),
            Err(_) => break,
        }
    }
    batch
}

/// Writes `members` in one transaction, each under its own savepoint (or, for plain
/// members, a shared one: [`append_together`]), commits, wakes readers, and settles
/// every member. This is the whole of a batch; the committer task only decides which
/// members go together. A COMMIT that fails to answer is read back for up to
/// `outcome_wait`. Adds to `stats` what became of the shared statement.
async fn commit_batch(
    mut conn: PoolConnection<Postgres>,
    pool: &PgPool,
    signal: &AppendSignal,
    mut members: Vec<Box<dyn Member>>,
    outcome_wait: Duration,
    stats: &Together,
) -> Ended {
    let alone = members.len() == 1;
    let started = std::time::Instant::now();
    let mut kept = Vec::with_capacity(members.len());
    let mut failed = Vec::new();
    let plain = if alone {
        Vec::new()
    } else {
        plain_and_disjoint(&members)
    };
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(err) => return Ended::NotBegun(members, err),
    };
    // A member waiting on another transaction's lock (a claim, a key, an aggregate's next
    // sequence) holds up its whole batch: it gives up after the batch's lock timeout, a
    // lost race the writer retries, and its neighbours go on. Set after sqlx's own
    // BEGIN, not with it (`begin_with`): should a statement after BEGIN fail there, sqlx
    // would count no transaction and hand the session back to the pool inside a failed
    // one. Here a failure drops `tx`, which rolls back.
    let setup = match (alone, plain.is_empty()) {
        (true, _) => None,
        (false, true) => Some(BATCH_LOCK_TIMEOUT),
        (false, false) => Some(BATCH_LOCK_TIMEOUT_TOGETHER),
    };
    if let Some(setup) = setup {
        if let Err(err) = sqlx::Executor::execute(&mut *tx, setup).await {
            settle_all(members, err);
            return Ended::Spent;
        }
    }
    if !plain.is_empty() {
        match append_together(&mut tx, &mut members, &plain, stats).await {
            Ok(appended) => kept.extend(appended),
            Err(err) => {
                settle_all(members, err);
                return Ended::Spent;
            }
        }
    }
    let appended_together = kept.len();
    let mut members = members.into_iter().enumerate();
    while let Some((n, mut member)) = members.next() {
        if !alone {
            // Not kept prepared: numbered savepoints would crowd the connection's cache.
            if let Err(err) = sqlx::query(&format!("SAVEPOINT m{n}"))
                .persistent(false)
                .execute(&mut *tx)
                .await
            {
                kept.push(member);
                let rest = members.map(|(_, member)| member);
                settle_all(kept.into_iter().chain(failed).chain(rest), err);
                return Ended::Spent;
            }
        }
        let written = AssertUnwindSafe(member.write(&mut tx)).catch_unwind().await;
        let Ok(written) = written else {
            // A command's code panicked: nothing of the batch commits (the transaction is
            // dropped, so rolled back) and every member is told it is unavailable; the
            // committer goes on with the next batch.
            tracing::error!(
                "a command panicked while its batch was written; the batch is abandoned"
            );
            drop(tx);
            let rest = members.map(|(_, member)| member);
            let all = kept.into_iter().chain(failed).chain([member]).chain(rest);
            settle_all(all, sqlx::Error::WorkerCrashed);
            return Ended::Spent;
        };
        match written {
            Ok(()) => kept.push(member),
            Err(Rejected) if alone => {
                // Nothing else to keep: end the transaction now, so whatever it took
                // (a claim, a key) is free before the member retries or answers.
                let rolled_back = tx.rollback().await;
                member.settle(Ok(()));
                return match rolled_back {
                    Ok(()) => Ended::Kept(conn),
                    Err(err) => {
                        tracing::debug!(%err, "rollback after a refused command");
                        Ended::Spent
                    }
                };
            }
            Err(Rejected) => {
                failed.push(member);
                if let Err(err) = sqlx::query(&format!("ROLLBACK TO SAVEPOINT m{n}"))
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                {
                    let rest = members.map(|(_, member)| member);
                    settle_all(kept.into_iter().chain(failed).chain(rest), err);
                    return Ended::Spent;
                }
            }
        }
    }
    if kept.len() > 1 {
        pause::pause_point(pause::BATCH_BEFORE_COMMIT).await;
    }
    let written = started.elapsed();
    let committed = if kept.is_empty() {
        tx.rollback().await
    } else {
        tx.commit().await
    };
    let session = match committed {
        Ok(()) => Ended::Kept(conn),
        Err(err) => {
            if kept.is_empty() {
                // A failed ROLLBACK: nothing was to commit.
                settle_all(failed, err);
                return Ended::Spent;
            }
            // The session is given up before the outcome is read on others (the pool may
            // have no other to lend).
            drop(conn);
            // A COMMIT whose answer was lost (the connection cut, the server stopping)
            // may have taken place: read back what became of the transaction before
            // answering.
            let appended = kept.iter().find_map(|member| member.appended());
            match commit_outcome(pool, appended.as_ref(), outcome_wait).await {
                Outcome::Committed => {
                    tracing::warn!(%err, "a batch's COMMIT failed to answer but took place");
                }
                Outcome::Aborted => {
                    settle_all(kept.into_iter().chain(failed), err);
                    return Ended::Spent;
                }
                Outcome::Unknown => {
                    tracing::error!(
                        %err,
                        commands = kept.len(),
                        "a batch's COMMIT failed to answer and its outcome cannot be read back"
                    );
                    // Members that failed answer with their own reasons (settle's contract).
                    answer_all(
                        kept.into_iter().chain(failed),
                        err,
                        StoreError::CommitUnknown,
                    );
                    return Ended::Spent;
                }
            }
            Ended::Spent
        }
    };
    if !kept.is_empty() {
        signal.fire().await;
    }
    stats
        .appended
        .fetch_add(appended_together as u64, Ordering::Relaxed);
    tracing::trace!(
        commands = kept.len(),
        together = appended_together,
        failed = failed.len(),
        written_us = written.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "group commit"
    );
    for member in kept.into_iter().chain(failed) {
        member.settle(Ok(()));
    }
    session
}

/// The members of a batch that may be appended together ([`append_together`]): plain
/// ([`Member::plain`]) and sharing neither their aggregate nor a claim with any other
/// member ([`Member::footprint`]), since the order of the others matters and they keep it,
/// one by one. Empty unless there are two or more.
fn plain_and_disjoint(members: &[Box<dyn Member>]) -> Vec<usize> {
    let footprints: Vec<_> = members.iter().map(|member| member.footprint()).collect();
    let disjoint = disjoint(&footprints);
    let plain: Vec<usize> = (0..members.len())
        .filter(|&i| disjoint[i] && members[i].plain().is_some())
        .collect();
    if plain.len() < 2 {
        return Vec::new();
    }
    plain
}

/// Appends the batch's `plain` members ([`plain_and_disjoint`]) in one statement, under
/// the savepoint `together` taken with the batch's lock timeout, instead of a savepoint
/// and a statement each. When the statement did for every one of them what its own writes
/// would have (each claim taken, no conflict with another transaction, no lock waited
/// out), they are finished ([`Member::wrote_plain`]) and returned, taken out of
/// `members`; otherwise the statement is rolled back and every member stays in
/// `members`, to be written one by one as before. `Err` when the connection fails, or a
/// member panicked while it finished (the batch is then abandoned, as when one panics
/// while it writes).
async fn append_together(
    conn: &mut PgConnection,
    members: &mut Vec<Box<dyn Member>>,
    plain: &[usize],
    stats: &Together,
) -> Result<Vec<Box<dyn Member>>, sqlx::Error> {
    let appended = {
        let appends: Vec<PlainAppend<'_>> =
            plain.iter().filter_map(|&i| members[i].plain()).collect();
        append_claiming_together(&mut *conn, &appends).await
    };
    let finished = match appended {
        Ok(Some(committed)) => {
            let mut finished = Vec::with_capacity(plain.len());
            for (&i, committed) in plain.iter().zip(committed) {
                let member = &mut members[i];
                let wrote =
                    std::panic::catch_unwind(AssertUnwindSafe(|| member.wrote_plain(committed)));
                match wrote {
                    Ok(Ok(())) => finished.push(i),
                    Ok(Err(Rejected)) => break,
                    Err(_) => {
                        tracing::error!(
                            "a command panicked while its batch was written; \
                             the batch is abandoned"
                        );
                        return Err(sqlx::Error::WorkerCrashed);
                    }
                }
            }
            if finished.len() == plain.len() {
                Some(finished)
            } else {
                for &i in &finished {
                    members[i].unwrite_plain();
                }
                None
            }
        }
        Ok(None) => None,
        Err(err) => {
            tracing::debug!(
                %err,
                "a batch's shared append failed; its commands are written one by one"
            );
            None
        }
    };
    let Some(finished) = finished else {
        sqlx::query("ROLLBACK TO SAVEPOINT together")
            .execute(&mut *conn)
            .await?;
        stats.undone.fetch_add(1, Ordering::Relaxed);
        return Ok(Vec::new());
    };
    let (mut together, mut rest) = (Vec::with_capacity(finished.len()), Vec::new());
    for (i, member) in members.drain(..).enumerate() {
        if finished.contains(&i) {
            together.push(member);
        } else {
            rest.push(member);
        }
    }
    *members = rest;
    Ok(together)
}

/// What became of a transaction whose COMMIT failed to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    Unknown,
}

/// How long the outcome of a COMMIT that failed to answer is sought on other
/// connections (the server may be restarting) before it is declared unknown, by default.
pub const OUTCOME_SOUGHT_FOR: Duration = Duration::from_secs(3);

/// Reads back, on other connections, whether the transaction that appended `appended`
/// committed. Its status (`pg_xact_status`) only says when the transaction is over, and
/// only on a server out of recovery: a transaction id (and an identity value) is not
/// durable until its transaction's WAL is written, so after a crash the id of a batch
/// that never reached the disk can be handed to another transaction, whose status would
/// answer instead. Once the status is final, the event's row decides (its aggregate,
/// sequence, transaction and position): present in a fresh snapshot, the batch
/// committed; absent, it never will. Unknown when no member appended an event, or when
/// the database stays out of reach, in recovery, or the transaction in progress, for
/// `wait`.
async fn commit_outcome(pool: &PgPool, appended: Option<&Appended>, wait: Duration) -> Outcome {
    let Some(appended) = appended else {
        return Outcome::Unknown;
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let status = tokio::time::timeout_at(
            deadline,
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT CASE WHEN pg_is_in_recovery() THEN 'in recovery' \
                             ELSE pg_xact_status($1::text::xid8) END",
            )
            .bind(appended.position.tx_id_text())
            .fetch_one(pool),
        )
        .await;
        let over = match status {
            Err(_) => return Outcome::Unknown,
            // Committed, aborted, or too old to tell: over either way.
            Ok(Ok(status)) => !matches!(status.as_deref(), Some("in progress" | "in recovery")),
            // 22023: the id is "in the future" of a restarted primary, whose transaction
            // was lost in the crash (and is over too).
            Ok(Err(sqlx::Error::Database(db))) if db.code().as_deref() == Some("22023") => true,
            Ok(Err(err)) => {
                tracing::debug!(%err, "reading a COMMIT's outcome back");
                false
            }
        };
        if over {
            let stored = tokio::time::timeout_at(
                deadline,
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM events \
                      WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3 \
                        AND tx_id = $4::text::xid8 AND global_position = $5)",
                )
                .bind(&appended.aggregate_type)
                .bind(&appended.aggregate_id)
                .bind(appended.sequence)
                .bind(appended.position.tx_id_text())
                .bind(appended.position.global_position)
                .fetch_one(pool),
            )
            .await;
            match stored {
                Err(_) => return Outcome::Unknown,
                Ok(Ok(true)) => return Outcome::Committed,
                Ok(Ok(false)) => return Outcome::Aborted,
                Ok(Err(err)) => tracing::debug!(%err, "reading a COMMIT's outcome back"),
            }
        }
        if tokio::time::Instant::now() + OUTCOME_POLL >= deadline {
            return Outcome::Unknown;
        }
        tokio::time::sleep(OUTCOME_POLL).await;
    }
}

/// Pause between two readings of a COMMIT's outcome.
const OUTCOME_POLL: Duration = Duration::from_millis(50);

/// Ends every member of a batch that did not commit with what ended it (shared: the
/// database's error is not `Clone`).
fn settle_all(members: impl IntoIterator<Item = Box<dyn Member>>, err: sqlx::Error) {
    tracing::warn!(%err, "a command batch did not commit");
    answer_all(members, err, StoreError::Batch);
}

/// Ends every member of a batch with `err`, shared, as the error `kind` makes of it.
fn answer_all(
    members: impl IntoIterator<Item = Box<dyn Member>>,
    err: sqlx::Error,
    kind: fn(Arc<sqlx::Error>) -> StoreError,
) {
    let err = Arc::new(err);
    for member in members {
        member.settle(Err(kind(err.clone())));
    }
}
