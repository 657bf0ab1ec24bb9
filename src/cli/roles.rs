//! The background roles a process runs alone: `relay`, `projector`, `worker`.

use std::time::Duration;

use crate::cli::*;
use anyhow::Context;
use commandcenter::config::{DatabaseArgs, NatsArgs, WorkerProcessArgs};
use commandcenter::startup::{stop, stop_grace, Services};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Transactions idle this long are ended on the pools of the background roles.
pub(crate) const BACKGROUND_IDLE_TX_TIMEOUT: Duration = Duration::from_secs(10);

/// The background roles a process can run alone.
pub(crate) enum Role<'a> {
    Relay,
    Projectors,
    Worker(&'a WorkerProcessArgs),
}

/// Runs `role` until Ctrl-C or SIGTERM, then stops it (a worker's running jobs finish
/// or are released).
pub(crate) async fn run_background(
    database: &DatabaseArgs,
    nats: &NatsArgs,
    db_max_connections: u32,
    role: Role<'_>,
) -> anyhow::Result<()> {
    let services = Services::connect(
        database,
        nats,
        db_max_connections,
        BACKGROUND_IDLE_TX_TIMEOUT,
    )
    .await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    services.spawn_wakeup_bridge(&mut tasks, &shutdown).await?;
    let mut grace = stop_grace(None);
    match role {
        Role::Relay => services.spawn_relay(&mut tasks, &shutdown),
        Role::Projectors => services.spawn_projectors(&mut tasks, &shutdown),
        Role::Worker(args) => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| {
                format!("cannot create data directory {}", args.data_dir.display())
            })?;
            let config = args.worker.config(&args.data_dir);
            grace = stop_grace(Some(&config));
            services.spawn_worker(config, &mut tasks, &shutdown)?;
        }
    }
    shutdown_signal().await;
    stop(tasks, &shutdown, grace).await;
    Ok(())
}
