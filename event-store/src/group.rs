//! Group commit: commands that arrive together share one transaction and one commit, the
//! way a database batches its WAL flushes, while each keeps its own outcome.
//!
//! Each [`EventStore`](crate::EventStore) has one committer task, started on first use.
//! A writer hands it a [`Member`] (one command's writes, already decided) and waits. The
//! committer takes the first member queued, then whatever else is queued at that moment
//! (at most [`MAX_BATCH`]); nothing waits for company, so a lone command on an idle
//! service commits at once, and batches grow only while a commit is in flight.
//!
//! In the batch's transaction every member writes under a savepoint of its own (a lone
//! member needs none): a member that fails — a lost version race, a taken claim, an
//! Idempotency-Key another member of the batch holds — is rolled back to its savepoint
//! alone and its neighbours go on. Every member learns its outcome only after the batch
//! ended ([`Member::settle`]): a member kept in a committed batch succeeded, a member
//! that failed is told so once the batch's rows are visible (so a retry sees its winner),
//! and when the commit itself fails no member succeeded — all or nothing per batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;

use crate::{pause, AppendSignal, StoreError};

/// At most this many commands share a transaction. Each member's savepoint becomes a
/// subtransaction; PostgreSQL caches 64 subtransaction ids per backend before every
/// snapshot of the cluster gets slower, so batches stay below that.
pub const MAX_BATCH: usize = 48;

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
}

/// A member's write failed; the member knows why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

type Queue = mpsc::UnboundedSender<Box<dyn Member>>;

/// The handle on a store's committer task (started on first use).
#[derive(Clone, Default)]
pub(crate) struct GroupCommit {
    queue: Arc<OnceLock<Queue>>,
    waiting: Arc<AtomicUsize>,
}

impl GroupCommit {
    /// Queues `member` for the next batch; starts the committer on first use.
    pub(crate) fn submit(&self, pool: &PgPool, signal: &AppendSignal, member: Box<dyn Member>) {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let waiting = self.waiting.clone();
            tokio::spawn(run(pool.clone(), signal.clone(), receiver, waiting));
            sender
        });
        self.waiting.fetch_add(1, Ordering::SeqCst);
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
}

/// The committer: one batch at a time, each made of whatever was queued when the previous
/// one ended. Ends when every handle on the store is dropped.
async fn run(
    pool: PgPool,
    signal: AppendSignal,
    mut queue: mpsc::UnboundedReceiver<Box<dyn Member>>,
    waiting: Arc<AtomicUsize>,
) {
    let mut batch: Vec<Box<dyn Member>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(member) => batch.push(member),
                Err(_) => break,
            }
        }
        waiting.fetch_sub(batch.len(), Ordering::SeqCst);
        commit_batch(&pool, &signal, std::mem::take(&mut batch)).await;
    }
}

/// Writes `members` in one transaction, each under its own savepoint, commits, wakes
/// readers, and settles every member. This is the whole of a batch; the committer task
/// only decides which members go together.
pub async fn commit_batch(pool: &PgPool, signal: &AppendSignal, members: Vec<Box<dyn Member>>) {
    let alone = members.len() == 1;
    let mut kept = Vec::with_capacity(members.len());
    let mut failed = Vec::new();
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(err) => return settle_all(members, err),
    };
    for (n, mut member) in members.into_iter().enumerate() {
        if !alone {
            if let Err(err) = sqlx::query(&format!("SAVEPOINT m{n}"))
                .execute(&mut *tx)
                .await
            {
                kept.push(member);
                return settle_all(kept.into_iter().chain(failed), err);
            }
        }
        match member.write(&mut tx).await {
            Ok(()) => kept.push(member),
            Err(Rejected) if alone => {
                // Nothing else to keep: end the transaction now, so whatever it took
                // (a claim, a key) is free before the member retries or answers.
                if let Err(err) = tx.rollback().await {
                    tracing::debug!(%err, "rollback after a refused command");
                }
                member.settle(Ok(()));
                return;
            }
            Err(Rejected) => {
                failed.push(member);
                if let Err(err) = sqlx::query(&format!("ROLLBACK TO SAVEPOINT m{n}"))
                    .execute(&mut *tx)
                    .await
                {
                    return settle_all(kept.into_iter().chain(failed), err);
                }
            }
        }
    }
    if kept.len() > 1 {
        pause::pause_point(pause::BATCH_BEFORE_COMMIT).await;
    }
    let committed = if kept.is_empty() {
        tx.rollback().await
    } else {
        tx.commit().await
    };
    if let Err(err) = committed {
        return settle_all(kept.into_iter().chain(failed), err);
    }
    if !kept.is_empty() {
        signal.fire().await;
    }
    if kept.len() > 1 {
        tracing::trace!(commands = kept.len(), "group commit");
    }
    for member in kept.into_iter().chain(failed) {
        member.settle(Ok(()));
    }
}

/// Ends every member of a batch that did not commit with a copy of what ended it.
/// Ends every member of a batch that did not commit with what ended it (shared: the
/// database's error is not `Clone`).
fn settle_all(members: impl IntoIterator<Item = Box<dyn Member>>, err: sqlx::Error) {
    tracing::warn!(%err, "a command batch did not commit");
    let err = Arc::new(err);
    for member in members {
        member.settle(Err(StoreError::Batch(err.clone())));
    }
}
