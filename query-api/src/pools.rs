//! Read pools: `READ_DATABASE_URLS` lists replicas that serve queries round-robin; a
//! health check takes a failing one out of the rotation and puts it back when it
//! answers again. Without replicas (or with none healthy), the primary serves reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often replicas are checked.
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(2);

struct Replica {
    name: String,
    pool: PgPool,
    healthy: AtomicBool,
}

/// The pools queries run on.
#[derive(Clone)]
pub struct ReadPools {
    primary: PgPool,
    replicas: Arc<Vec<Replica>>,
    next: Arc<AtomicUsize>,
}

/// A pool chosen for one request, and its name for logs and headers.
#[derive(Clone)]
pub struct ChosenPool {
    /// The pool.
    pub pool: PgPool,
    /// `primary` or `replica-<n>`.
    pub name: String,
    /// Which replica, if one.
    replica: Option<usize>,
}

impl ChosenPool {
    /// True when this is a replica (not the primary).
    pub fn is_replica(&self) -> bool {
        self.replica.is_some()
    }
}

/// How far one replica is behind the primary.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLag {
    /// `replica-<n>`.
    pub name: String,
    /// WAL the primary has written and the replica has not replayed, in bytes.
    pub bytes: i64,
    /// Seconds since the last transaction the replica replayed committed on the primary,
    /// while it is behind; 0 when it has replayed everything.
    pub seconds: f64,
}

impl ReadPools {
    /// Reads go to `replicas` in turn, or to `primary` when there are none.
    pub fn new(primary: PgPool, replicas: Vec<PgPool>) -> Self {
        let replicas = replicas
            .into_iter()
            .enumerate()
            .map(|(i, pool)| Replica {
                name: format!("replica-{}", i + 1),
                pool,
                healthy: AtomicBool::new(true),
            })
            .collect();
        Self {
            primary,
            replicas: Arc::new(replicas),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The next healthy replica, or the primary.
    pub fn choose(&self) -> ChosenPool {
        let n = self.replicas.len();
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            let replica = &self.replicas[i];
            if replica.healthy.load(Ordering::Relaxed) {
                return ChosenPool {
                    pool: replica.pool.clone(),
                    name: replica.name.clone(),
                    replica: Some(i),
                };
            }
        }
        self.primary()
    }

    /// The primary.
    pub fn primary(&self) -> ChosenPool {
        ChosenPool {
            pool: self.primary.clone(),
            name: "primary".into(),
            replica: None,
        }
    }

    /// Takes `chosen` out of rotation at once when it is a replica and `err` says it
    /// cannot answer now (its server is down, restarting or unreachable): later reads go
    /// to the primary until the health check finds it answering again.
    pub fn note_failure(&self, chosen: &ChosenPool, err: &commandcenter_api_error::ApiError) {
        let Some(i) = chosen.replica else { return };
        if matches!(err, commandcenter_api_error::ApiError::Unavailable(_)) {
            let replica = &self.replicas[i];
            if replica.healthy.swap(false, Ordering::Relaxed) {
                tracing::warn!(replica = %replica.name, %err, "read replica failed a read; out of rotation");
            }
        }
    }

    /// `result` of a statement on `chosen`, as the API's error, with a failed replica
    /// taken out of rotation ([`Self::note_failure`]).
    pub fn checked<T>(
        &self,
        chosen: &ChosenPool,
        result: Result<T, sqlx::Error>,
    ) -> Result<T, commandcenter_api_error::ApiError> {
        result
            .map_err(commandcenter_api_error::ApiError::from)
            .inspect_err(|err| self.note_failure(chosen, err))
    }

    /// How far each replica is behind the primary; a replica or primary that does not
    /// answer within a second is left out.
    pub async fn replica_lag(&self) -> Vec<ReplicaLag> {
        if self.replicas.is_empty() {
            return Vec::new();
        }
        let bound = Duration::from_secs(1);
        let Ok(Ok(head)) = tokio::time::timeout(
            bound,
            // Flushed WAL, not the insert position (which runs ahead of what a replica can
            // have received).
            sqlx::query_scalar::<_, String>("SELECT pg_current_wal_flush_lsn()::text")
                .fetch_one(&self.primary),
        )
        .await
        else {
            return Vec::new();
        };
        let mut lags = Vec::new();
        for replica in self.replicas.iter() {
            // Not in recovery (a second connection to the primary): never behind.
            let lag = tokio::time::timeout(
                bound,
                sqlx::query_as::<_, (Option<i64>, Option<f64>)>(
                    // Seconds only while received WAL waits to be replayed: the age of the
                    // last replayed commit says nothing when the replica is merely a few
                    // bytes of non-transactional WAL (checkpoints, hint bits) behind.
                    "SELECT greatest(pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()), 0)::bigint, \
                            CASE WHEN pg_last_wal_replay_lsn() >= $1::pg_lsn THEN 0 \
                                 WHEN pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn() \
                                 THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) \
                                 ELSE 0 END::float8",
                )
                .bind(&head)
                .fetch_one(&replica.pool),
            )
            .await;
            if let Ok(Ok((bytes, seconds))) = lag {
                lags.push(ReplicaLag {
                    name: replica.name.clone(),
                    bytes: bytes.unwrap_or(0),
                    seconds: seconds.unwrap_or(0.0).max(0.0),
                });
            }
        }
        lags
    }

    /// `(name, open connections, idle connections)` of every replica pool.
    pub fn replica_connections(&self) -> Vec<(String, u32, usize)> {
        self.replicas
            .iter()
            .map(|r| (r.name.clone(), r.pool.size(), r.pool.num_idle()))
            .collect()
    }

    /// Checks every replica until `shutdown`.
    pub async fn check_health(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(HEALTH_CHECK_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            for replica in self.replicas.iter() {
                let ok = tokio::time::timeout(
                    Duration::from_secs(1),
                    sqlx::query("SELECT 1").execute(&replica.pool),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                let was = replica.healthy.swap(ok, Ordering::Relaxed);
                if was != ok {
                    if ok {
                        tracing::info!(replica = %replica.name, "read replica back in rotation");
                    } else {
                        tracing::warn!(replica = %replica.name, "read replica failing; out of rotation");
                    }
                }
            }
        }
    }
}
