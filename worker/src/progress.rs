//! Reports from a worker about the attempt it holds, and the throttled progress writer.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use commandcenter_domain::job::{Job, JobCommand, JobError, WorkerAction, WorkerClaim};
use commandcenter_domain::values::Progress;
use commandcenter_executor::{apply, clock, Applied, CommandError, RequestMeta};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cancels::{RunningJob, Stop};
use crate::context::ProgressReport;
use crate::Shared;

/// How often an outcome that must be recorded is tried while the database is away.
const DURABLE_TRIES: usize = 8;

/// Sends one worker's reports about one attempt.
pub(crate) struct Reporter {
    shared: Arc<Shared>,
    job_id: String,
    claim: WorkerClaim,
    correlation_id: String,
}

impl Reporter {
    pub fn new(
        shared: Arc<Shared>,
        job_id: String,
        claim: WorkerClaim,
        correlation_id: String,
    ) -> Self {
        Self {
            shared,
            job_id,
            claim,
            correlation_id,
        }
    }

    /// The tracing ids and actor of a command a worker issues.
    pub fn meta(worker_id: &str, correlation_id: &str) -> RequestMeta {
        RequestMeta {
            request_id: Uuid::now_v7().to_string(),
            correlation_id: correlation_id.to_string(),
            causation_id: None,
            actor: format!("worker:{worker_id}"),
        }
    }

    /// Sends `action` once.
    pub async fn send(&self, action: WorkerAction) -> Result<Applied<Job>, CommandError> {
        let command = JobCommand::Worker {
            claim: self.claim.clone(),
            action,
            at: clock::now(),
        };
        apply::<Job>(
            &self.shared.store,
            &self.shared.metrics,
            &self.job_id,
            command,
            Self::meta(&self.claim.worker_id, &self.correlation_id),
        )
        .await
    }

    /// Sends `action`, trying again while the database is unavailable or other writers
    /// keep winning the race. Gives up after 8 tries (about 12 s of pauses): the lease
    /// then lapses and the sweeper takes over.
    pub async fn send_durably(&self, action: WorkerAction) -> Result<(), CommandError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(DURABLE_TRIES - 1);
        (|| self.send(action.clone()))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|err| err.is_fault() || matches!(err, CommandError::Concurrent))
            .notify(|err, _| {
                tracing::warn!(job_id = %self.job_id, %err, "cannot record the job's outcome yet; retrying");
            })
            .await
            .map(|_| ())
    }

    /// What a refusal of a heartbeat or progress report tells the running job.
    pub fn heed(&self, job: &RunningJob, err: &CommandError) {
        match err {
            CommandError::Job(JobError::CancelRequested) => job.stop(Stop::Cancelled),
            CommandError::Job(
                JobError::NotClaimHolder { .. } | JobError::NotFound | JobError::Deleted,
            ) => job.stop(Stop::Lost),
            err => tracing::warn!(job_id = %self.job_id, %err, "report refused"),
        }
    }
}

/// Writes the job's progress reports: at once when the last write is `interval` old,
/// else when it becomes so, and the latest value always. Ends after the job's context
/// is dropped (its last value written) or soon after `finished`.
pub(crate) async fn write(
    mut reports: watch::Receiver<Option<ProgressReport>>,
    reporter: &Reporter,
    job: &RunningJob,
    interval: Duration,
    finished: CancellationToken,
) {
    let mut written: Option<ProgressReport> = None;
    loop {
        let closed = reports.changed().await.is_err();
        let latest = reports.borrow_and_update().clone();
        if let Some(report) = latest.filter(|r| written.as_ref() != Some(r)) {
            if job.reason().is_none() {
                let action = WorkerAction::ReportProgress {
                    progress: Progress::parse("progress", i64::from(report.percent))
                        .unwrap_or(Progress::DONE),
                    current_step: Some(report.step.clone()),
                };
                match reporter.send(action).await {
                    Ok(_) => written = Some(report),
                    // Not written: tried again at the next turn, or at the end.
                    Err(err) if err.is_fault() && !closed => {}
                    Err(err) => {
                        reporter.heed(job, &err);
                        written = Some(report);
                    }
                }
            } else {
                written = Some(report);
            }
        }
        if closed {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = finished.cancelled() => {}
        }
    }
}
