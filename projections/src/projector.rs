//! The projector: one durable JetStream pull consumer per read model, batches applied in
//! one short transaction with the checkpoint, then acknowledged.
//!
//! The stream is a transport; the event store is the truth. A batch is applied only
//! together with every event of the read model's aggregate type between the checkpoint
//! and the batch's last position: when the stream delivered fewer (messages still pending
//! with a dead instance, acknowledged by a later cumulative ack, or lost), the missing
//! ones are read from the store in the same transaction and the hole is recorded in
//! `projection_gaps`. A new leader, and an idle one every second, also catches up from
//! the store directly. So the checkpoint never moves across an event the read model has
//! not applied, whoever dies when.
//!
//! An idle projector also moves its checkpoint up to the head of the gap-safe feed when
//! no event of its aggregate type lies between (nothing to apply, so nothing skipped):
//! its catch-up, `projections status` and read-your-writes waits then read from near the
//! head instead of across every event of other types committed since its last own one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use commandcenter_event_store::pause::{pause_point, PROJECTOR_BEFORE_COMMIT};
use commandcenter_event_store::{
    count_range, read_feed_of, read_range, run_while_leader, Deployment, Leadership, Position,
    StoredEvent,
};
use commandcenter_relay::EventStream;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::notify::announce;
use crate::read_model::{begin_applying, record_gap};
use crate::statistics::StatsKeeper;
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
    stats: StatsKeeper,
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
            stats: StatsKeeper::default(),
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

    /// The advisory lock name of the projector of read model `name` on `stream`.
    pub fn lock_name(stream: &EventStream, name: &str) -> String {
        format!("projector:{}:{name}", stream.name())
    }

    /// Runs until `shutdown`: stands by while another instance is active, projects while
    /// this one is, and after a failure steps down, waits a moment and tries again.
    pub async fn run(self, shutdown: CancellationToken) {
        let lock = Self::lock_name(&self.stream, M::NAME);
        run_while_leader(&self.pool, &lock, &shutdown, |leader| async {
            match self.lead(leader, &shutdown).await {
                Ok(()) => None,
                Err(ProjectionError::Stream(err)) if err.is_permanent() => {
                    tracing::error!(%err, projection = M::NAME, "projector cannot consume: the stream is another deployment's");
                    Some(Duration::from_secs(10))
                }
                Err(err @ ProjectionError::Gap { .. }) => {
                    tracing::error!(%err, projection = M::NAME, "read model stopped at a gap it cannot fill; run `projections verify` and `projections rebuild`");
                    if let Err(record) = record_open_gap(&self.pool, M::NAME, &err).await {
                        tracing::error!(%record, projection = M::NAME, "cannot record the gap");
                    }
                    Some(Duration::from_secs(5))
                }
                Err(err) => {
                    tracing::warn!(%err, projection = M::NAME, "projector stepped down; retrying");
                    Some(Duration::from_millis(500))
                }
            }
        })
        .await;
    }

    async fn consumer(
        &self,
        deployment: &Deployment,
    ) -> Result<consumer::PullConsumer, ProjectionError> {
        let js = jetstream::new(self.client.clone());
        let stream = self.stream.ensure(&js, deployment, &self.pool).await?;
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
        let deployment = Deployment::load(&self.pool).await?;
        let announce_prefix = deployment.core_prefix(self.stream.prefix());
        let consumer = self.consumer(&deployment).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.max_batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(ProjectionError::nats)?;
        tracing::info!(projection = M::NAME, "projecting");
        // The planner's statistics follow what this leader writes (its own task).
        let stats_stop = shutdown.child_token();
        let _stop_stats = stats_stop.clone().drop_guard();
        tokio::spawn(
            self.stats
                .clone()
                .run(self.pool.clone(), M::NAME, M::TABLES, stats_stop),
        );
        // Rows stored without a document (before documents were, or rewritten by an older
        // release) get theirs on their own task; until then queries render them.
        let pool = self.pool.clone();
        let render_stop = shutdown.child_token();
        let _stop_render = render_stop.clone().drop_guard();
        tokio::spawn(async move {
            tokio::select! {
                () = render_stop.cancelled() => {}
                rendered = crate::documents::render_missing(&pool, M::NAME) => {
                    if let Err(err) = rendered {
                        tracing::warn!(%err, projection = M::NAME, "cannot render the stored documents of older rows");
                    }
                }
            }
        });
        // Whatever a previous leader had delivered but not committed is in the store.
        self.catch_up(&announce_prefix).await?;
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
            let Some(first) = first else {
                // Idle: anything committed that the stream has not brought (yet, or ever)
                // comes from the store.
                self.catch_up(&announce_prefix).await?;
                continue;
            };
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
            let mut events = Vec::with_capacity(batch.len());
            for message in &batch {
                if !deployment.owns(message.headers.as_ref()) {
                    tracing::error!(
                        projection = M::NAME,
                        subject = %message.subject,
                        "message published by another deployment in this deployment's stream; ignored"
                    );
                    continue;
                }
                events.push(
                    serde_json::from_slice::<StoredEvent>(&message.payload).map_err(|source| {
                        ProjectionError::Decode {
                            what: format!("stream message on {}", message.subject),
                            source,
                        }
                    })?,
                );
            }
            self.apply(&events, &announce_prefix).await?;
            if let Some(last) = batch.last() {
                // AckPolicy::All: acknowledging the last message acknowledges the batch.
                // Earlier messages still pending with a dead instance are acknowledged too;
                // `apply_batch` read any of them the read model lacked from the store.
                last.ack().await.map_err(ProjectionError::nats)?;
            }
        }
    }

    /// Applies `events` as one batch (see [`apply_batch`]), with metrics and the
    /// announcements of the changed rows.
    async fn apply(
        &self,
        events: &[StoredEvent],
        announce_prefix: &str,
    ) -> Result<usize, ProjectionError> {
        let started = Instant::now();
        let first_correlation = events
            .first()
            .and_then(|e| e.metadata["correlation_id"].as_str())
            .unwrap_or_default()
            .to_string();
        let changes = apply_batch(&self.pool, self.model.as_ref(), events)
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
        if !changes.is_empty() {
            self.stats.changed();
        }
        announce(&self.client, announce_prefix, &changes).await;
        Ok(changes.len())
    }

    /// Applies every committed event of the read model's type after its checkpoint,
    /// read from the event store's gap-safe feed.
    async fn catch_up(&self, announce_prefix: &str) -> Result<(), ProjectionError> {
        let mut after = {
            let mut conn = self.pool.acquire().await?;
            load_checkpoint(&mut conn, M::NAME).await?
        };
        let limit = i64::try_from(self.config.max_batch).unwrap_or(500);
        loop {
            let events = read_feed_of(&self.pool, M::AGGREGATE_TYPE, after, limit).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                advance_idle::<M>(&self.pool).await?;
                return Ok(());
            };
            tracing::debug!(
                projection = M::NAME,
                events = events.len(),
                "catching up from the event store"
            );
            self.apply(&events, announce_prefix).await?;
            after = last;
        }
    }
}

/// Moves the checkpoint of read model `M` to the head of the gap-safe feed when no event of
/// its aggregate type lies between them, under the apply lock (never backwards). Every
/// event up to that head is final (below the oldest transaction in flight), so none of
/// `M`'s type can appear behind the new checkpoint later. Returns the new checkpoint, if
/// it moved. Writes nothing when the head has not moved: an idle store stays unwritten.
pub(crate) async fn advance_idle<M: ReadModel>(
    pool: &PgPool,
) -> Result<Option<Position>, ProjectionError> {
    let mut tx = begin_applying(pool, M::NAME).await?;
    let checkpoint = load_checkpoint(&mut tx, M::NAME).await?;
    let head: Option<(String, i64)> = sqlx::query_as(
        "WITH head AS (SELECT tx_id, global_position FROM events \
                        WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                        ORDER BY tx_id DESC, global_position DESC LIMIT 1) \
         SELECT h.tx_id::text, h.global_position FROM head h \
          WHERE (h.tx_id, h.global_position) > ($1::text::xid8, $2) \
            AND NOT EXISTS (SELECT 1 FROM events e \
                             WHERE (e.tx_id, e.global_position) > ($1::text::xid8, $2) \
                               AND (e.tx_id, e.global_position) <= (h.tx_id, h.global_position) \
                               AND e.aggregate_type = $3)",
    )
    .bind(checkpoint.tx_id_text())
    .bind(checkpoint.global_position)
    .bind(M::AGGREGATE_TYPE)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(head) = head.and_then(|(tx, pos)| tx.parse().ok().map(|tx| Position::new(tx, pos)))
    else {
        return Ok(None);
    };
    save_checkpoint(&mut tx, M::NAME, head).await?;
    tx.commit().await?;
    Ok(Some(head))
}

/// Records a gap that stopped read model `view` (open until a batch applies again).
async fn record_open_gap(
    pool: &PgPool,
    view: &str,
    err: &ProjectionError,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let open: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projection_gaps WHERE projection = $1 AND resolved_at IS NULL)",
    )
    .bind(view)
    .fetch_one(&mut *conn)
    .await?;
    if !open {
        record_gap(&mut conn, view, "unfillable", &err.to_string(), 0, false).await?;
    }
    Ok(())
}

/// Applies the events above the checkpoint and moves the checkpoint, in one
/// transaction holding the read model's apply lock. Returns the changed rows.
///
/// `events` may come from the stream: duplicates, events at or below the checkpoint and
/// events of other aggregate types are dropped; events the store does not hold (another
/// deployment's) are never applied. The batch then applied is every stored event of the
/// read model's type after the checkpoint up to the batch's last one: if the stream
/// brought fewer, the rest is read from the store and the hole recorded.
pub(crate) async fn apply_batch<M: ReadModel>(
    pool: &PgPool,
    model: &M,
    events: &[StoredEvent],
) -> Result<Vec<crate::Change>, ProjectionError> {
    let mut tx = begin_applying(pool, M::NAME).await?;
    let checkpoint = load_checkpoint(&mut tx, M::NAME).await?;
    let mut fresh: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.position > checkpoint && e.aggregate_type == M::AGGREGATE_TYPE)
        .collect();
    fresh.sort_by_key(|e| e.position);
    fresh.dedup_by_key(|e| e.position);
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    // Only events this store holds, at the positions the stream says, are trusted: the
    // range below ends at the last of them (never at a position the store has not
    // reached), and the count compares like with like.
    let known = stored_positions(&mut tx, M::AGGREGATE_TYPE, &fresh).await?;
    let (ours, foreign): (Vec<&StoredEvent>, Vec<&StoredEvent>) = fresh
        .iter()
        .partition(|e| known.get(&(e.aggregate_id.clone(), e.sequence)) == Some(&e.position));
    if !foreign.is_empty() {
        tracing::error!(
            projection = M::NAME,
            events = foreign.len(),
            first = %foreign[0].position,
            "stream events that are not in this event store; ignored"
        );
    }
    let Some(upto) = ours.last().map(|e| e.position) else {
        return Ok(Vec::new());
    };
    let stored = count_range(&mut tx, M::AGGREGATE_TYPE, checkpoint, upto).await?;
    let batch: Vec<StoredEvent> = if stored == ours.len() as i64 {
        ours.into_iter().cloned().collect()
    } else {
        let complete = read_range(&mut tx, M::AGGREGATE_TYPE, checkpoint, upto).await?;
        let filled = complete.len().saturating_sub(ours.len());
        let detail = format!(
            "{filled} event(s) after checkpoint {checkpoint} up to {upto} were not delivered \
             by the stream; read from the event store"
        );
        tracing::warn!(projection = M::NAME, %detail, "feed gap filled");
        record_gap(&mut tx, M::NAME, "feed", &detail, filled as i64, true).await?;
        complete
    };
    let Some(last) = batch.last().map(|e| e.position) else {
        return Ok(Vec::new());
    };
    let changes = model.apply(&mut tx, &batch).await?;
    save_checkpoint(&mut tx, M::NAME, last).await?;
    sqlx::query(
        "UPDATE projection_gaps SET resolved_at = now() WHERE projection = $1 AND resolved_at IS NULL",
    )
    .bind(M::NAME)
    .execute(&mut *tx)
    .await?;
    pause_point(PROJECTOR_BEFORE_COMMIT).await;
    tx.commit().await?;
    Ok(changes)
}

/// The positions the store holds for the events `(aggregate id, sequence)` of `events`.
async fn stored_positions(
    conn: &mut sqlx::PgConnection,
    aggregate_type: &str,
    events: &[&StoredEvent],
) -> Result<std::collections::HashMap<(String, i64), Position>, ProjectionError> {
    let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT e.aggregate_id, e.sequence, e.tx_id::text, e.global_position \
           FROM unnest($2::text[], $3::bigint[]) AS f(id, seq) \
           JOIN events e ON e.aggregate_type = $1 AND e.aggregate_id = f.id AND e.sequence = f.seq",
    )
    .bind(aggregate_type)
    .bind(&ids)
    .bind(&sequences)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, sequence, tx, global_position)| {
            let tx = tx.parse::<u64>().ok()?;
            Some(((id, sequence), Position::new(tx, global_position)))
        })
        .collect())
}
