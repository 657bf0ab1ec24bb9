//! Finds running jobs whose lease lapsed (their worker died) and fails the attempt,
//! which re-queues the job while attempts remain.

use std::sync::Arc;

use commandcenter_commands::executor::apply;
use commandcenter_commands::{clock, ApiError};
use commandcenter_domain::job::{Job, JobCommand, JobError, EXTERNAL_WORKER};
use tokio_util::sync::CancellationToken;

use crate::progress::Reporter;
use crate::Shared;

/// Most lapsed leases handled per sweep.
const SWEEP_BATCH: i64 = 200;

/// Sweeps every `sweep_interval` until `stop`. Every worker sweeps; the aggregate
/// accepts one expiry per attempt, so concurrent sweepers are harmless. Jobs driven by
/// external workers through `PATCH` (worker id `external`) have no heartbeat and are
/// never swept.
pub(crate) async fn sweep(shared: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(shared.config.sweep_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(err) = sweep_once(&shared).await {
            tracing::warn!(%err, "lease sweep failed; will retry");
        }
    }
}

async fn sweep_once(shared: &Shared) -> Result<(), sqlx::Error> {
    let now = clock::now();
    let lapsed: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM job_view WHERE status = 'running' AND lease_until <= $1 \
            AND worker_id IS DISTINCT FROM $3 \
         ORDER BY lease_until LIMIT $2",
    )
    .bind(now)
    .bind(SWEEP_BATCH)
    .bind(EXTERNAL_WORKER)
    .fetch_all(shared.store.pool())
    .await?;
    for id in lapsed {
        let meta = Reporter::meta(&shared.config.worker_id, &format!("lease-sweep:{id}"));
        let command = JobCommand::ExpireLease { at: clock::now() };
        match apply::<Job>(&shared.store, &shared.metrics, &id, command, meta).await {
            Ok(_) => {
                tracing::warn!(job_id = %id, "lease lapsed; attempt failed and the job re-queued")
            }
            Err(ApiError::JobRefused(
                JobError::LeaseHolds { .. } | JobError::InvalidTransition { .. },
            )) => {}
            Err(err) => tracing::warn!(job_id = %id, %err, "cannot expire a lapsed lease"),
        }
    }
    Ok(())
}
