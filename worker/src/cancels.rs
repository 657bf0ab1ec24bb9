//! The jobs this worker runs, and the fast path of cancellation: a core NATS
//! subscription to the `JobCancelRequested` events the relay publishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use commandcenter_event_store::Deployment;
use commandcenter_relay::EventStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Why a running job was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A user cancelled it.
    Cancelled,
    /// It ran past its soft time limit.
    SoftTimeout,
    /// The worker is shutting down.
    Shutdown,
    /// Its attempt is no longer this worker's (lease lapsed and re-queued).
    Lost,
}

/// One running job's stop switch.
#[derive(Debug, Default)]
pub(crate) struct RunningJob {
    /// Cancelled when the job must stop.
    pub token: CancellationToken,
    stop: OnceLock<Stop>,
}

impl RunningJob {
    /// Asks the job to stop for `why`; the first reason given is the one recorded.
    pub fn stop(&self, why: Stop) {
        let _ = self.stop.set(why);
        self.token.cancel();
    }

    /// Why the job was asked to stop, if it was.
    pub fn reason(&self) -> Option<Stop> {
        self.stop.get().copied()
    }
}

/// The jobs running in this worker, by id.
#[derive(Debug, Default)]
pub(crate) struct Running {
    jobs: Mutex<HashMap<String, Arc<RunningJob>>>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunningJob>>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers job `id` as running here.
    pub fn insert(&self, id: &str) -> Arc<RunningJob> {
        let job = Arc::new(RunningJob::default());
        self.lock().insert(id.to_string(), job.clone());
        job
    }

    /// Forgets job `id` if `job` is still the one registered under it (a later attempt
    /// of the same job, claimed again by this worker, keeps its entry).
    pub fn remove(&self, id: &str, job: &Arc<RunningJob>) {
        let mut jobs = self.lock();
        if jobs
            .get(id)
            .is_some_and(|current| Arc::ptr_eq(current, job))
        {
            jobs.remove(id);
        }
    }

    /// The running job `id`, if it runs here.
    pub fn get(&self, id: &str) -> Option<Arc<RunningJob>> {
        self.lock().get(id).cloned()
    }
}

/// The subject of every job's `JobCancelRequested` event.
fn cancel_subject(stream: &EventStream) -> String {
    format!("{}.events.job.*.JobCancelRequested", stream.prefix())
}

/// Stops the jobs running here whose cancellation was requested, until `stop`.
pub(crate) async fn listen(
    shared: Arc<Shared>,
    nats: async_nats::Client,
    stream: EventStream,
    stop: CancellationToken,
) {
    let subject = cancel_subject(&stream);
    let deployment = loop {
        match Deployment::load(shared.store.pool()).await {
            Ok(deployment) => break deployment,
            Err(err) => {
                tracing::warn!(%err, "cannot read the deployment id; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    while !stop.is_cancelled() {
        let mut subscriber = match nats.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "cannot subscribe to cancel requests; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                m = subscriber.next() => m,
            };
            let Some(message) = message else { break };
            if !deployment.owns(message.headers.as_ref()) {
                continue;
            }
            // <prefix>.events.job.<id>.JobCancelRequested
            let Some(id) = message.subject.as_str().split('.').nth(3) else {
                continue;
            };
            if let Some(job) = shared.running.get(id) {
                tracing::info!(job_id = id, "cancel requested; stopping the job");
                job.stop(Stop::Cancelled);
            }
        }
    }
}
