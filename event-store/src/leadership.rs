//! "Exactly one active instance": a PostgreSQL session-level advisory lock held on a
//! connection of its own. A second instance waits (stands by) and takes over within a
//! poll interval of the first one's connection closing — on a clean stop, a crash or a
//! network cut alike, since PostgreSQL releases session locks with the session.

use std::time::Duration;

use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// How often a standing-by instance tries to take the lock.
pub const STANDBY_POLL: Duration = Duration::from_millis(250);

/// A held advisory lock; dropping it closes the connection and releases the lock.
pub struct Leadership {
    conn: PgConnection,
    name: String,
}

/// The advisory lock key of `name` (64-bit FNV-1a: stable across builds and processes).
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// The lock connection's `application_name`: `commandcenter pid=<pid> <lock name>`, cut
/// to PostgreSQL's 63 bytes. `pg_stat_activity` (and `projections status`) then tell
/// which process holds which lock.
pub fn application_name(name: &str) -> String {
    let mut text = format!("commandcenter pid={} {name}", std::process::id());
    while text.len() > 63 {
        text.pop();
    }
    text
}

impl Leadership {
    /// Waits until this instance holds the lock called `name`, or `None` if `shutdown`
    /// fires first.
    pub async fn acquire(
        pool: &PgPool,
        name: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, sqlx::Error> {
        let key = lock_key(name);
        let mut logged = false;
        loop {
            let mut conn = pool
                .connect_options()
                .as_ref()
                .clone()
                .application_name(&application_name(name))
                .connect()
                .await?;
            let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut conn)
                .await?;
            if held {
                tracing::info!(lock = name, "active");
                return Ok(Some(Self {
                    conn,
                    name: name.to_string(),
                }));
            }
            drop(conn);
            if !logged {
                tracing::info!(lock = name, "another instance is active; standing by");
                logged = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(STANDBY_POLL) => {}
            }
        }
    }

    /// True while the lock's session is alive (and so the lock held).
    pub async fn still_held(&mut self) -> bool {
        match self.conn.ping().await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(lock = %self.name, %err, "lost the lock's session; stepping down");
                false
            }
        }
    }
}

/// Runs `lead` whenever this instance holds the lock called `name`, until `shutdown`:
/// stands by while another instance holds it, and after `lead` steps down waits the
/// pause it asks for (`Some`) and stands again; `None` means it ended for good (shutdown).
/// The loop every single-active role (relay, projectors) shares.
pub async fn run_while_leader<F, Fut>(
    pool: &PgPool,
    name: &str,
    shutdown: &CancellationToken,
    mut lead: F,
) where
    F: FnMut(Leadership) -> Fut,
    Fut: std::future::Future<Output = Option<Duration>>,
{
    while !shutdown.is_cancelled() {
        let leader = match Leadership::acquire(pool, name, shutdown).await {
            Ok(Some(leader)) => leader,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(%err, lock = name, "cannot reach PostgreSQL; retrying");
                pause(shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        match lead(leader).await {
            None => return,
            Some(wait) => pause(shutdown, wait).await,
        }
    }
}

/// Sleeps for `duration`, or less if `shutdown` fires.
pub async fn pause(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}
