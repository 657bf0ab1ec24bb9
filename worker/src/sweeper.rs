//! Finds running jobs whose lease lapsed (their worker died) and fails the attempt,
//! which re-queues the job while attempts remain.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use commandcenter_domain::job::{Job, JobCommand, JobError, EXTERNAL_WORKER};
use commandcenter_executor::apply;
use commandcenter_executor::{clock, CommandError};
use tokio_util::sync::CancellationToken;

use crate::progress::Reporter;
use crate::Shared;

/// Most lapsed leases handled per sweep.
const SWEEP_BATCH: i64 = 200;

/// Sweeps every `sweep_interval` until `stop`. Every worker sweeps; the aggregate
/// accepts one expiry per attempt, so concurrent sweepers are harmless. Jobs driven by
/// external workers through `PATCH` (worker id `external`) have no heartbeat and are
/// never swept.
///
/// A row the aggregate refuses to expire (the read model says running with a lapsed
/// lease, the event store says otherwise) is remembered with its version and passed over
/// until the row changes, and the sweep pages through every lapsed row: such rows can
/// never fill a sweep and hide a real lapsed lease behind them. They are reported, since
/// they mean the read model disagrees with the store.
pub(crate) async fn sweep(shared: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(shared.config.sweep_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refused = HashMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(err) = sweep_once(&shared, &mut refused).await {
            tracing::warn!(%err, "lease sweep failed; will retry");
        }
    }
}

/// One sweep. `refused` maps the job ids the aggregate refused to expire to the row
/// version they were refused at.
pub(crate) async fn sweep_once(
    shared: &Shared,
    refused: &mut HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    let now = clock::now();
    let mut after: Option<(DateTime<Utc>, String)> = None;
    let mut seen = HashSet::new();
    let known_before = refused.len();
    loop {
        let rows: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT id, lease_until, version FROM job_view \
              WHERE status = 'running' AND lease_until <= $1 \
                AND worker_id IS DISTINCT FROM $3 \
                AND ($4::timestamptz IS NULL OR (lease_until, id) > ($4, $5)) \
              ORDER BY lease_until, id LIMIT $2",
        )
        .bind(now)
        .bind(SWEEP_BATCH)
        .bind(EXTERNAL_WORKER)
        .bind(after.as_ref().map(|(at, _)| *at))
        .bind(after.as_ref().map(|(_, id)| id.as_str()))
        .fetch_all(shared.store.pool())
        .await?;
        let full = rows.len() as i64 == SWEEP_BATCH;
        after = rows.last().map(|(id, at, _)| (*at, id.clone()));
        for (id, _, version) in rows {
            seen.insert(id.clone());
            if refused.get(&id) == Some(&version) {
                continue;
            }
            let meta = Reporter::meta(&shared.config.worker_id, &format!("lease-sweep:{id}"));
            let command = JobCommand::ExpireLease { at: clock::now() };
            match apply::<Job>(&shared.store, &shared.metrics, &id, command, meta).await {
                Ok(_) => {
                    refused.remove(&id);
                    tracing::warn!(job_id = %id, "lease lapsed; attempt failed and the job re-queued");
                }
                Err(CommandError::Job(
                    JobError::LeaseHolds { .. }
                    | JobError::InvalidTransition { .. }
                    | JobError::NotFound
                    | JobError::Deleted,
                )) => {
                    refused.insert(id, version);
                }
                Err(err) => tracing::warn!(job_id = %id, %err, "cannot expire a lapsed lease"),
            }
        }
        if !full {
            break;
        }
    }
    refused.retain(|id, _| seen.contains(id));
    if refused.len() > known_before {
        tracing::warn!(
            rows = refused.len(),
            "job_view shows running jobs with lapsed leases that the event store does not: \
             the read model disagrees with the store; run `commandcenter projections verify`"
        );
    }
    Ok(())
}
