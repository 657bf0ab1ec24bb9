//! Job workers: the Celery part of CommandCenter, fed by the event stream.
//!
//! Workers of a deployment share one durable JetStream consumer over job events
//! (competing consumers). An event that makes a job startable (dispatched, re-queued
//! after a failure or a lapsed lease, released) is a *trigger*: the worker that receives
//! it claims the job with the `StartJob` command, so optimistic concurrency lets exactly
//! one worker run each attempt, however many saw the trigger. A trigger that is not due
//! yet goes back to the stream with a delay (`NAK` with delay) until `scheduled_for`.
//!
//! While a job runs its worker renews the lease (heartbeats), writes progress at most
//! every `progress_interval` (the last value always), and watches for cancellation: a
//! core NATS subscription to `JobCancelRequested` events stops the job within
//! milliseconds, and a refused heartbeat or progress report stops it at the latest a
//! heartbeat later. A job that does not stop cooperatively within `cancel_grace` is
//! aborted. Soft and hard time limits per job type fail it with a timeout error.
//! The sweeper fails (and so re-queues) running jobs whose lease lapsed: their worker
//! died. On shutdown a worker stops claiming, lets running jobs finish for
//! `shutdown_grace`, then stops and releases the rest for another worker.
//!
//! Every report a worker makes carries its claim (worker id and attempt): a worker whose
//! attempt was taken from it (lease expired) is refused and stops without writing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cancels;
mod config;
mod context;
mod destinations;
mod error;
mod jobs;
mod progress;
mod supervisor;
mod sweeper;
mod triggers;

use std::sync::Arc;

use commandcenter_event_store::EventStore;
use commandcenter_metrics::Metrics;
use commandcenter_relay::EventStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Limit, LimitOverride, Secret, TimeLimits, WorkerConfig};
pub use context::{JobContext, JobFailure};
pub use destinations::is_public;
pub use error::WorkerError;
pub use jobs::webhook::{sign, SIGNATURE_HEADER};

use cancels::Running;

/// What every part of one worker process shares.
pub(crate) struct Shared {
    pub store: EventStore,
    pub metrics: Arc<Metrics>,
    pub config: WorkerConfig,
    pub http: reqwest::Client,
    pub running: Running,
}

/// One worker process's job runner: `concurrency` jobs at a time.
pub struct Worker {
    shared: Arc<Shared>,
    nats: async_nats::Client,
    stream: EventStream,
}

impl Worker {
    /// A worker claiming jobs of `stream`, writing through `store`.
    pub fn new(
        store: EventStore,
        nats: async_nats::Client,
        stream: EventStream,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WorkerError> {
        config.validate()?;
        let mut http = reqwest::Client::builder();
        if !config.webhook_allow_private {
            http = http.dns_resolver(Arc::new(destinations::PublicOnly));
        }
        let http = http
            .user_agent(concat!("commandcenter-worker/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WorkerError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                metrics,
                config,
                http,
                running: Running::default(),
            }),
            nats,
            stream,
        })
    }

    /// The durable consumer the workers of `stream` share.
    pub fn consumer_name(stream: &EventStream) -> String {
        format!("{}_WORKERS", stream.name())
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// Claims and runs jobs until `shutdown`, then drains: running jobs get
    /// `shutdown_grace` to finish and are released after that. Dropping the returned
    /// future (aborting its task) stops everything at once, as a killed process would:
    /// no further command is issued (one already in flight still commits or rolls back
    /// on its own task), leases lapse and the sweeper re-queues the jobs.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(worker_id = %self.id(), concurrency = self.shared.config.concurrency, "worker started");
        let mut tasks = JoinSet::new();
        let stop_helpers = CancellationToken::new();
        tasks.spawn(cancels::listen(
            self.shared.clone(),
            self.nats.clone(),
            self.stream.clone(),
            stop_helpers.clone(),
        ));
        tasks.spawn(sweeper::sweep(self.shared.clone(), stop_helpers.clone()));
        triggers::consume(
            self.shared.clone(),
            self.nats.clone(),
            self.stream.clone(),
            shutdown,
        )
        .await;
        stop_helpers.cancel();
        while tasks.join_next().await.is_some() {}
        tracing::info!(worker_id = %self.id(), "worker stopped");
    }
}
