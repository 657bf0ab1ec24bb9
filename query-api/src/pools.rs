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
                };
            }
        }
        ChosenPool {
            pool: self.primary.clone(),
            name: "primary".into(),
        }
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
