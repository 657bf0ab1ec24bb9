//! The projector: one durable JetStream pull consumer per read model, batches applied in
//! one short transaction with the checkpoint, then acknowledged.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use commandcenter_event_store::{lock_key, EventStream, Leadership, StoredEvent};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::notify::announce;
use crate::read_model::apply_lock_name;
use crate::{ProjectionError, ReadModel};

/// How a projector batches.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Most events applied in one transaction.
    pub max_batch: usize,
    /// How long to wait for more events once one has arrived.
    pub linger: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            max_batch: 500,
            linger: Duration::from_millis(2),
        }
    }
}

/// Keeps one read model up to date from the event stream.
pub struct Projector<M: ReadModel> {
    metrics: Option<Arc<commandcenter_metrics::Metrics>>,
    model: Arc<M>,
    pool: PgPool,
    client: async_nats::Client,
    stream: EventStream,
    config: ProjectorConfig,
}

impl<M: ReadModel> Projector<M> {
    /// A projector of `model` fed from `stream`.
    pub fn new(
        model: M,
        pool: PgPool,
        client: async_nats::Client,
        stream: EventStream,
        config: ProjectorConfig,
    ) -> Self {
        Self {
            metrics: None,
            model: Arc::new(model),
            pool,
            client,
            stream,
            config,
        }
    }

    /// The same projector, reporting batch sizes and apply times in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<commandcenter_metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The durable consumer's name for read model `name` on `stream`.
    pub fn consumer_name(stream: &EventStream, name: &str) -> String {
        format!("{}_{}", stream.name(), name)
    }

    /// Runs until `shutdown`: stands by while another instance is active, projects while
    /// this one is, and after a failure steps down, waits a moment and tries again.
    pub async fn run(self, shutdown: CancellationToken) {
        let lock = format!("projector:{}:{}", self.stream.name(), M::NAME);
        while !shutdown.is_cancelled() {
            let leader = match Leadership::acquire(&self.pool, &lock, &shutdown).await {
                Ok(Some(leader)) => leader,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(%err, projection = M::NAME, "cannot reach PostgreSQL; retrying");
                    pause(&shutdown, Duration::from_secs(1)).await;
                    continue;
                }
            };
            match self.lead(leader, &shutdown).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(%err, projection = M::NAME, "projector stepped down; retrying");
                    pause(&shutdown, Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn consumer(&self) -> Result<consumer::PullConsumer, ProjectionError> {
        let js = jetstream::new(self.client.clone());
        let stream = self
            .stream
            .ensure(&js)
            .await
            .map_err(ProjectionError::nats)?;
        let name = Self::consumer_name(&self.stream, M::NAME);
        stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("CommandCenter read model {}", M::NAME)),
                    filter_subject: self.stream.aggregate_subjects(M::AGGREGATE_TYPE),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::All,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(ProjectionError::nats)
    }

    async fn lead(
        &self,
        mut leader: Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), ProjectionError> {
        let consumer = self.consumer().await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.max_batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(ProjectionError::nats)?;
        tracing::info!(projection = M::NAME, "projecting");
        let mut lock_checked = Instant::now();
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => None,
                next = messages.next() => Some(next),
            };
            if lock_checked.elapsed() >= Duration::from_secs(1) {
                if !leader.still_held().await {
                    return Err(ProjectionError::nats("lost leadership"));
                }
                lock_checked = Instant::now();
            }
            let Some(first) = first else { continue };
            let first = first
                .ok_or_else(|| ProjectionError::nats("consumer stream ended"))?
                .map_err(ProjectionError::nats)?;
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                match tokio::time::timeout(self.config.linger, messages.next()).await {
                    Ok(Some(Ok(message))) => batch.push(message),
                    Ok(Some(Err(err))) => return Err(ProjectionError::nats(err)),
                    Ok(None) | Err(_) => break,
                }
            }
            let events = batch
                .iter()
                .map(|m| {
                    serde_json::from_slice::<StoredEvent>(&m.payload).map_err(|source| {
                        ProjectionError::Decode {
                            what: format!("stream message on {}", m.subject),
                            source,
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let started = Instant::now();
            let first_correlation = events
                .first()
                .and_then(|e| e.metadata["correlation_id"].as_str())
                .unwrap_or_default()
                .to_string();
            let changes = apply_batch(&self.pool, self.model.as_ref(), &events)
                .instrument(tracing::debug_span!(
                    "apply_batch",
                    projection = M::NAME,
                    events = events.len(),
                    correlation_id = %first_correlation
                ))
                .await?;
            if let Some(metrics) = &self.metrics {
                metrics
                    .projection_batch_size
                    .with_label_values(&[M::NAME])
                    .observe(events.len() as f64);
                metrics
                    .projection_apply_duration
                    .with_label_values(&[M::NAME])
                    .observe(started.elapsed().as_secs_f64());
            }
            if let Some(last) = batch.last() {
                // AckPolicy::All: acknowledging the last message acknowledges the batch.
                last.ack().await.map_err(ProjectionError::nats)?;
            }
            announce(&self.client, self.stream.prefix(), &changes).await;
        }
    }
}

/// Applies the events above the checkpoint and moves the checkpoint, in one
/// transaction holding the read model's apply lock. Returns the changed rows.
pub(crate) async fn apply_batch<M: ReadModel>(
    pool: &PgPool,
    model: &M,
    events: &[StoredEvent],
) -> Result<Vec<crate::Change>, ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(&apply_lock_name(M::NAME)))
        .execute(&mut *tx)
        .await?;
    let checkpoint = load_checkpoint(&mut tx, M::NAME).await?;
    let fresh: Vec<StoredEvent> = events
        .iter()
        .filter(|e| e.position > checkpoint && e.aggregate_type == M::AGGREGATE_TYPE)
        .cloned()
        .collect();
    let Some(last) = fresh.last().map(|e| e.position) else {
        return Ok(Vec::new());
    };
    let changes = model.apply(&mut tx, &fresh).await?;
    save_checkpoint(&mut tx, M::NAME, last).await?;
    tx.commit().await?;
    Ok(changes)
}

async fn pause(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}
