//! The relay: publishes every committed event to JetStream, in feed order, none skipped,
//! none doubled in effect.
//!
//! Invariants:
//! - exactly one relay is active per stream ([`Leadership`]); others stand by;
//! - events are read from the gap-safe feed and published in its order, many in flight,
//!   acknowledgements awaited in order; the position advances only over acknowledged
//!   events;
//! - each publish names the previous event's message id as the stream's expected last
//!   message id, so a lost or failed publish can never let a later event into the stream
//!   ahead of it: the stream's order is the feed's order;
//! - on start and after any failure the relay reads the stream's last message of this
//!   deployment back and resumes after it — never after its own checkpoint — so a crash
//!   between publish and checkpoint republishes nothing, and a stream that lost its tail
//!   (a NATS host crash before its writes reached the disk, a restored store directory)
//!   gets that tail published again; `Nats-Msg-Id` de-duplication covers the rest;
//! - the stream is bound to this deployment ([`EventStream::ensure`]) and every message
//!   carries its id (`CC-Deployment`);
//! - the checkpoint in `relay_checkpoints` is informative (status and lag), written after
//!   acknowledged batches; the stream is the authority.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use commandcenter_event_store::pause::{pause_point, RELAY_AFTER_PUBLISH};
use commandcenter_event_store::{
    pause_or_shutdown as pause, read_feed, run_while_leader, AppendSignal, Deployment, Leadership,
    Position, StoreError, StoredEvent, HEADER_DEPLOYMENT,
};

use crate::stream::{
    is_missing, EventStream, StreamError, HEADER_CORRELATION_ID, HEADER_EVENT_TYPE,
    HEADER_EVENT_VERSION, HEADER_GLOBAL_POSITION, HEADER_POSITION, HEADER_PROJECT_ID,
    HEADER_SEQUENCE,
};

/// How many messages back from the stream's end the relay looks for its own last one
/// (past deleted messages and messages another deployment published there).
const RESUME_SEARCH: u64 = 10_000;

/// How the relay batches and polls.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most events read and published per round.
    pub batch_size: i64,
    /// Re-read the feed this often when no wake-up arrives (at most 100 ms).
    pub poll_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// Why the relay stepped down (it retries; these are logged).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the feed or writing the checkpoint failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS refused or did not acknowledge.
    #[error("NATS: {0}")]
    Nats(#[source] async_nats::Error),
    /// The advisory lock's session ended.
    #[error("lost leadership")]
    LostLeadership,
    /// The stream cannot be used by this deployment.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl From<sqlx::Error> for RelayError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

fn nats(err: impl Into<async_nats::Error>) -> RelayError {
    RelayError::Nats(err.into())
}

/// Publishes the event store to JetStream.
pub struct Relay {
    metrics: Option<std::sync::Arc<commandcenter_metrics::Metrics>>,
    pool: PgPool,
    signal: AppendSignal,
    js: jetstream::Context,
    stream: EventStream,
    config: RelayConfig,
}

impl Relay {
    /// A relay from `pool` to `stream` through `client`, woken by `signal`.
    pub fn new(
        pool: PgPool,
        signal: AppendSignal,
        client: async_nats::Client,
        stream: EventStream,
        config: RelayConfig,
    ) -> Self {
        Self {
            metrics: None,
            pool,
            signal,
            js: jetstream::new(client),
            stream,
            config,
        }
    }

    /// The same relay, counting what it publishes in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<commandcenter_metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The advisory lock name of the relay of `stream`.
    pub fn lock_name(stream: &EventStream) -> String {
        format!("relay:{}", stream.name())
    }

    /// Runs until `shutdown`: stands by while another relay is active, publishes while
    /// this one is, and after a failure steps down, waits a moment and tries again.
    pub async fn run(self, shutdown: CancellationToken) {
        let lock = Self::lock_name(&self.stream);
        run_while_leader(&self.pool, &lock, &shutdown, |leader| async {
            match self.lead(leader, &shutdown).await {
                Ok(()) => None,
                Err(RelayError::Stream(err)) if err.is_permanent() => {
                    tracing::error!(%err, "relay cannot publish: the stream is another deployment's");
                    Some(Duration::from_secs(10))
                }
                Err(err) => {
                    tracing::warn!(%err, "relay stepped down; retrying");
                    Some(Duration::from_millis(500))
                }
            }
        })
        .await;
    }

    async fn lead(
        &self,
        mut leader: Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let deployment = Deployment::load(&self.pool).await?;
        let stream = self
            .stream
            .ensure(&self.js, &deployment, &self.pool)
            .await?;
        let Resume {
            mut position,
            mut last_id,
            mut expect_sequence,
        } = self.resume_point(&stream, &deployment).await?;
        tracing::info!(stream = %self.stream.name(), %position, "relay publishing");
        let mut wakeups = self.signal.subscribe();
        let mut lock_checked = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if lock_checked.elapsed() >= Duration::from_secs(1) {
                if !leader.still_held().await {
                    return Err(RelayError::LostLeadership);
                }
                lock_checked = Instant::now();
            }
            wakeups.mark_unchanged();
            let events = read_feed(&self.pool, position, self.config.batch_size).await?;
            if events.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    _ = wakeups.changed() => {}
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
                continue;
            }
            let before = position;
            let outcome = self
                .publish(
                    &events,
                    &deployment,
                    &mut position,
                    &mut last_id,
                    &mut expect_sequence,
                )
                .await;
            if position != before {
                pause_point(RELAY_AFTER_PUBLISH).await;
                save_checkpoint(&self.pool, &self.stream.name(), position).await?;
            }
            if let Err(err) = outcome {
                tracing::warn!(%err, %position, "publish failed; re-reading the stream's last message");
                pause(shutdown, Duration::from_millis(200)).await;
                Resume {
                    position,
                    last_id,
                    expect_sequence,
                } = self.resume_point(&stream, &deployment).await?;
            }
        }
    }

    /// Publishes `events` in order, many in flight; advances `position` and `last_id`
    /// over each acknowledged event, stopping at the first failure. Right after a resume
    /// (`expect_sequence` set) the first publish names the stream's last sequence instead
    /// of a message id: the server remembers the last message id only for its duplicate
    /// window, and not at all for a deleted last message.
    async fn publish(
        &self,
        events: &[StoredEvent],
        deployment: &Deployment,
        position: &mut Position,
        last_id: &mut Option<String>,
        expect_sequence: &mut Option<u64>,
    ) -> Result<(), RelayError> {
        let mut in_flight = Vec::with_capacity(events.len());
        let mut expected = last_id.clone();
        let mut first_sequence = *expect_sequence;
        let mut send_error = None;
        for event in events {
            let id = EventStream::message_id(event);
            let payload = serde_json::to_vec(event).map_err(StoreError::from)?;
            let mut message = PublishMessage::build()
                .payload(payload.into())
                .headers(headers(event, deployment))
                .message_id(&id);
            if let Some(sequence) = first_sequence.take() {
                message = message.expected_last_sequence(sequence);
            } else if let Some(previous) = &expected {
                message = message.expected_last_message_id(previous);
            }
            match self
                .js
                .send_publish(self.stream.subject(event), message)
                .await
            {
                Ok(ack) => in_flight.push((event.position, id.clone(), ack)),
                Err(err) => {
                    send_error = Some(nats(err));
                    break;
                }
            }
            expected = Some(id);
        }
        for (event_position, id, ack) in in_flight {
            ack.await.map_err(nats)?;
            *position = event_position;
            *last_id = Some(id);
            *expect_sequence = None;
            if let Some(metrics) = &self.metrics {
                metrics.relay_published.inc();
            }
        }
        send_error.map_or(Ok(()), Err)
    }

    /// Where to resume: after the last message of this deployment in the stream (the
    /// authority on what was published), or from the start when it holds none. The
    /// checkpoint is not consulted: a stream that lost messages the relay had seen
    /// acknowledged (and checkpointed) must get them again.
    async fn resume_point(
        &self,
        stream: &jetstream::stream::Stream,
        deployment: &Deployment,
    ) -> Result<Resume, RelayError> {
        let info = stream.get_info().await.map_err(nats)?;
        let (first, last) = (info.state.first_sequence.max(1), info.state.last_sequence);
        let mut sequence = last;
        while sequence >= first && sequence > 0 && last - sequence < RESUME_SEARCH {
            match stream.get_raw_message(sequence).await {
                Ok(message) if deployment.owns(Some(&message.headers)) => {
                    let header =
                        |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
                    let position = header(HEADER_POSITION)
                        .and_then(|p| p.parse::<Position>().ok())
                        .ok_or_else(|| {
                            nats(format!(
                                "stream message {sequence} has no {HEADER_POSITION} header"
                            ))
                        })?;
                    return Ok(Resume {
                        position,
                        last_id: header("Nats-Msg-Id"),
                        expect_sequence: Some(last),
                    });
                }
                Ok(_) => tracing::error!(
                    sequence,
                    "stream message published by another deployment; it is ignored"
                ),
                // A deleted message: look further back. Any other error is an error.
                Err(err) if is_missing(&err) => {}
                Err(err) => return Err(nats(err)),
            }
            sequence -= 1;
        }
        if last > 0 && last - sequence >= RESUME_SEARCH {
            return Err(nats(format!(
                "none of the stream's last {RESUME_SEARCH} messages is this deployment's"
            )));
        }
        let checkpoint = load_checkpoint(&self.pool, &self.stream.name()).await?;
        if checkpoint.is_some_and(|c| c > Position::ZERO) {
            tracing::warn!(
                stream = %self.stream.name(),
                "the stream holds none of this store's events although the relay published \
                 before: republishing every event from the event store"
            );
        }
        Ok(Resume {
            position: Position::ZERO,
            last_id: None,
            expect_sequence: Some(last),
        })
    }
}

/// Where the relay resumes publishing.
struct Resume {
    /// The position of the last event the stream holds.
    position: Position,
    /// That event's message id.
    last_id: Option<String>,
    /// The stream's last sequence, which the next publish must follow.
    expect_sequence: Option<u64>,
}

fn headers(event: &StoredEvent, deployment: &Deployment) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_DEPLOYMENT, deployment.as_str());
    headers.insert(HEADER_POSITION, event.position.to_string().as_str());
    headers.insert(
        HEADER_GLOBAL_POSITION,
        event.global_position.to_string().as_str(),
    );
    headers.insert(HEADER_SEQUENCE, event.sequence.to_string().as_str());
    headers.insert(HEADER_EVENT_TYPE, event.event_type.as_str());
    headers.insert(HEADER_EVENT_VERSION, event.event_version.as_str());
    for (header, key) in [
        (HEADER_CORRELATION_ID, "correlation_id"),
        (HEADER_PROJECT_ID, "project_id"),
    ] {
        if let Some(value) = event.metadata.get(key).and_then(|v| v.as_str()) {
            headers.insert(header, value);
        }
    }
    headers
}

/// The relay's last acknowledged position for `stream`, if it ever published.
pub async fn load_checkpoint(pool: &PgPool, stream: &str) -> Result<Option<Position>, StoreError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, global_position FROM relay_checkpoints WHERE stream = $1")
            .bind(stream)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(tx, pos)| Position::new(tx as u64, pos)))
}

async fn save_checkpoint(
    pool: &PgPool,
    stream: &str,
    position: Position,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO relay_checkpoints (stream, tx_id, global_position, updated_at) \
         VALUES ($1, $2, $3, now()) \
         ON CONFLICT (stream) DO UPDATE \
            SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position, updated_at = now()",
    )
    .bind(stream)
    .bind(position.tx_id as i64)
    .bind(position.global_position)
    .execute(pool)
    .await?;
    Ok(())
}
