//! Test-only pause points, so a failure test can kill a process at an exact moment.
//!
//! When the environment names a point in `CC_TEST_PAUSE_AT` (a comma-separated list) and
//! a directory in `CC_TEST_PAUSE_DIR`, the first time the process reaches that point it
//! creates `<dir>/<point>.<pid>` and then waits forever, holding whatever it holds (an
//! open transaction, delivered but unacknowledged messages), for the test to SIGKILL it.
//! Without both variables a pause point costs one atomic load. Production deployments
//! never set them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Projector: a batch was delivered and applied inside its transaction, not committed.
pub const PROJECTOR_BEFORE_COMMIT: &str = "projector.before_commit";
/// Relay: a batch was published and acknowledged by the stream, checkpoint not written.
pub const RELAY_AFTER_PUBLISH: &str = "relay.after_publish";
/// Group commit: a batch of at least two commands is written in its transaction, not
/// committed.
pub const BATCH_BEFORE_COMMIT: &str = "store.batch_before_commit";
/// Worker: a trigger was claimed (StartJob committed), not yet acknowledged.
pub const WORKER_AFTER_CLAIM: &str = "worker.after_claim";

struct Config {
    points: Vec<String>,
    dir: PathBuf,
}

fn config() -> Option<&'static Config> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let points = std::env::var("CC_TEST_PAUSE_AT").ok()?;
            let dir = std::env::var_os("CC_TEST_PAUSE_DIR")?;
            Some(Config {
                points: points.split(',').map(|p| p.trim().to_string()).collect(),
                dir: PathBuf::from(dir),
            })
        })
        .as_ref()
}

/// Pauses here for good if the test environment asks for `point` (see the module docs).
pub async fn pause_point(point: &str) {
    static PAUSED: AtomicBool = AtomicBool::new(false);
    let Some(config) = config() else { return };
    if !config.points.iter().any(|p| p == point) || PAUSED.swap(true, Ordering::SeqCst) {
        return;
    }
    let marker = config.dir.join(format!("{point}.{}", std::process::id()));
    if let Err(err) = std::fs::write(&marker, b"") {
        tracing::error!(%err, path = %marker.display(), "cannot write the pause marker");
    }
    tracing::warn!(point, "test pause point reached; waiting to be killed");
    std::future::pending::<()>().await;
}
