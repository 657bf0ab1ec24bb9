//! Runs one claimed attempt: the job's body beside its heartbeats, progress writer,
//! time limits and stop requests, then records how it ended.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use commandcenter_domain::job::{
    typed_parameters, JobError, JobRecord, RetryPolicy, WorkerAction, WorkerClaim,
};
use commandcenter_executor::CommandError;
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::cancels::RunningJob;
use tokio_util::sync::CancellationToken;

use crate::cancels::Stop;
use crate::context::{JobContext, JobFailure};
use crate::progress::{self, Reporter};
use crate::{jobs, Shared};

/// How an attempt ended.
#[derive(Debug)]
enum Ending {
    /// The body returned.
    Finished(Result<Option<Value>, JobFailure>),
    /// The body panicked.
    Panicked(String),
    /// The body was dropped: it did not stop within its grace after a stop request.
    Aborted,
    /// The hard time limit passed.
    HardTimeout,
}

/// Runs the attempt `claim` of `record` to its end and records the outcome. `job` is its
/// entry in the worker's running jobs, registered before the claim so a cancel request
/// that arrives meanwhile is not missed.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    record: JobRecord,
    claim: WorkerClaim,
    correlation_id: String,
    job: Arc<RunningJob>,
    drain: CancellationToken,
) {
    let reporter = Reporter::new(shared.clone(), record.id.clone(), claim, correlation_id);
    tracing::info!(job_id = %record.id, job_type = %record.job_type, attempt = record.attempts, "job started");
    let (ending, drained) = run(&shared, &record, &job, &reporter, &drain).await;
    let action = outcome(&shared, &record, job.reason(), drained, ending);
    if let Some(action) = action {
        let summary = match &action {
            WorkerAction::Complete { .. } => "completed",
            WorkerAction::Fail { .. } => "failed",
            WorkerAction::ConfirmCancelled => "cancelled",
            WorkerAction::Release { .. } => "released",
            _ => "reported",
        };
        match reporter.send_durably(action).await {
            Ok(()) => tracing::info!(job_id = %record.id, outcome = summary, "job ended"),
            // A cancel request raced the completion: the job ends cancelled.
            Err(CommandError::Job(JobError::CancelRequested)) => {
                if let Err(err) = reporter.send_durably(WorkerAction::ConfirmCancelled).await {
                    tracing::warn!(job_id = %record.id, %err, "cannot confirm the cancellation");
                }
            }
            Err(err) => {
                tracing::warn!(job_id = %record.id, %err, outcome = summary, "cannot record the job's outcome; its lease will lapse");
            }
        }
    } else {
        tracing::info!(job_id = %record.id, "job taken over by another worker; nothing recorded");
    }
    shared.running.remove(&record.id, &job);
    drop(job);
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Renews the lease every `every` until dropped; a refusal stops the job.
async fn heartbeats(reporter: &Reporter, job: &RunningJob, every: Duration, lease_seconds: u32) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let renew = WorkerAction::RenewLease { lease_seconds };
        if let Err(err) = reporter.send(renew).await {
            reporter.heed(job, &err);
        }
    }
}

/// Runs the body to its end; returns how it ended and whether the worker drained it
/// (shutdown grace over).
async fn run(
    shared: &Shared,
    record: &JobRecord,
    job: &Arc<RunningJob>,
    reporter: &Reporter,
    drain: &CancellationToken,
) -> (Ending, bool) {
    let config = &shared.config;
    let parameters = match typed_parameters(record.job_type, &record.parameters) {
        Ok(p) => p,
        Err(err) => {
            return (
                Ending::Finished(Err(JobFailure::permanent(format!(
                    "invalid parameters: {}: {}",
                    err.field, err.message
                )))),
                false,
            )
        }
    };
    let limit = config.limits.of(record.job_type);
    let started = Instant::now();
    let hard_at = started + limit.hard;
    let (progress_tx, progress_rx) = watch::channel(None);
    let context = JobContext {
        id: record.id.clone(),
        project_id: record.project_id,
        job_type: record.job_type,
        attempt: record.attempts,
        parameters,
        cancel: job.token.clone(),
        pool: shared.store.pool().clone(),
        data_dir: config.data_dir.clone(),
        http: shared.http.clone(),
        webhook_secret: config.webhook_secret.clone(),
        webhook_allow_private: config.webhook_allow_private,
        progress: progress_tx,
    };
    let finished = CancellationToken::new();
    let mut writer = Box::pin(progress::write(
        progress_rx,
        reporter,
        job,
        config.progress_interval,
        finished.clone(),
    ));
    let mut writer_done = false;
    let mut drained = false;
    let ending = {
        let body = AssertUnwindSafe(jobs::run(context)).catch_unwind();
        tokio::pin!(body);
        let beats = heartbeats(reporter, job, config.heartbeat, config.lease_seconds());
        tokio::pin!(beats);
        let mut soft_at = Some(started + limit.soft);
        let mut drain_at: Option<Instant> = None;
        let mut abort_at: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                result = &mut body => break match result {
                    Ok(result) => Ending::Finished(result),
                    Err(panic) => Ending::Panicked(panic_message(panic.as_ref())),
                },
                () = sleep_until(hard_at) => break Ending::HardTimeout,
                () = until(abort_at) => break Ending::Aborted,
                () = job.token.cancelled(), if abort_at.is_none() => {
                    abort_at = Some(match job.reason() {
                        Some(Stop::Lost) => break Ending::Aborted,
                        // Past the soft limit the job has until the hard one.
                        Some(Stop::SoftTimeout) => hard_at,
                        _ => Instant::now() + config.cancel_grace,
                    });
                }
                () = until(soft_at) => {
                    soft_at = None;
                    tracing::info!(job_id = %record.id, "soft time limit reached; asking the job to stop");
                    job.stop(Stop::SoftTimeout);
                }
                () = drain.cancelled(), if drain_at.is_none() && !drained => {
                    drain_at = Some(Instant::now() + config.shutdown_grace);
                }
                () = until(drain_at) => {
                    // The shutdown grace is over: stop now, whatever other deadline runs.
                    drain_at = None;
                    drained = true;
                    job.stop(Stop::Shutdown);
                    let limit = Instant::now() + config.cancel_grace;
                    abort_at = Some(abort_at.map_or(limit, |at| at.min(limit)));
                }
                () = &mut beats => {}
                () = &mut writer, if !writer_done => writer_done = true,
            }
        }
    };
    finished.cancel();
    if !writer_done && job.reason() != Some(Stop::Lost) {
        // The body (and with it the reports' sender) is gone: the writer writes the
        // last value and ends.
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
    (ending, drained)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// What to record for `ending`, given why the job was asked to stop and whether the
/// worker drained it; `None` when the attempt is no longer this worker's.
fn outcome(
    shared: &Shared,
    record: &JobRecord,
    reason: Option<Stop>,
    drained: bool,
    ending: Ending,
) -> Option<WorkerAction> {
    let config = &shared.config;
    let limit = config.limits.of(record.job_type);
    let backoff = RetryPolicy::Backoff {
        base_ms: u32::try_from(config.retry_base.as_millis()).unwrap_or(u32::MAX),
    };
    let fail = |error: String, traceback: Option<String>, retry| WorkerAction::Fail {
        error,
        traceback,
        retry,
    };
    let release = || WorkerAction::Release {
        reason: format!(
            "worker {} shut down before the job finished",
            config.worker_id
        ),
    };
    let hard = || {
        fail(
            format!(
                "hard time limit of {} exceeded: the job was aborted",
                seconds(limit.hard)
            ),
            None,
            backoff,
        )
    };
    if drained && !matches!(ending, Ending::Finished(Ok(_))) && reason != Some(Stop::Cancelled) {
        // Unfinished at the end of the shutdown grace: another worker takes it over.
        return (reason != Some(Stop::Lost)).then(release);
    }
    match (ending, reason) {
        (_, Some(Stop::Lost)) => None,
        (Ending::Finished(_) | Ending::Aborted | Ending::Panicked(_), Some(Stop::Cancelled)) => {
            Some(WorkerAction::ConfirmCancelled)
        }
        (Ending::Finished(Ok(result)), _) => Some(WorkerAction::Complete { result }),
        (Ending::Finished(Err(_)), Some(Stop::SoftTimeout)) => Some(fail(
            format!(
                "soft time limit of {} exceeded: the job stopped",
                seconds(limit.soft)
            ),
            None,
            backoff,
        )),
        (Ending::Finished(Err(_)) | Ending::Aborted, Some(Stop::Shutdown)) => Some(release()),
        (Ending::Finished(Err(failure)), None) => Some(fail(
            failure.error,
            failure.traceback,
            if failure.retryable {
                backoff
            } else {
                RetryPolicy::Never
            },
        )),
        (Ending::Panicked(message), _) => {
            Some(fail(format!("the job panicked: {message}"), None, backoff))
        }
        (Ending::HardTimeout | Ending::Aborted, _) => Some(hard()),
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}
