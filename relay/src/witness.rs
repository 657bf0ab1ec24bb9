//! The witness of the audit checkpoints: a JetStream stream of their own
//! (`<PREFIX>_AUDIT`, subject `<prefix>.audit.checkpoints`), outside PostgreSQL. Every
//! checkpoint is published there once, after it commits; `events verify --witness` reads
//! them back and compares the store with them, so rewriting PostgreSQL alone (events and
//! checkpoints together) is detected as long as the witness is out of the intruder's
//! reach.

use async_nats::jetstream::{self, stream};
use sqlx::PgPool;

use commandcenter_event_store::audit::{checkpoints, Checkpoint};
use commandcenter_event_store::{Deployment, StoreError, HEADER_DEPLOYMENT};

use crate::stream::is_missing;
use crate::EventStream;

/// Header: the id of the checkpoint a witness message carries.
const HEADER_CHECKPOINT_ID: &str = "CC-Checkpoint-Id";

/// Why the witness cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// NATS failed or refused.
    #[error("NATS: {0}")]
    Nats(#[source] async_nats::Error),
    /// The witness stream belongs to another deployment.
    #[error("the witness stream {stream} belongs to another deployment ({owner}); this database is deployment {ours}")]
    OtherDeployment {
        /// The stream.
        stream: String,
        /// Its owner.
        owner: String,
        /// This deployment.
        ours: Deployment,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A witness message is not a checkpoint.
    #[error("witness message {sequence} is not a checkpoint: {source}")]
    Decode {
        /// Its stream sequence.
        sequence: u64,
        /// Why it does not decode.
        source: serde_json::Error,
    },
}

fn nats(err: impl Into<async_nats::Error>) -> WitnessError {
    WitnessError::Nats(err.into())
}

/// The witness stream of one deployment.
pub struct Witness {
    js: jetstream::Context,
    prefix: String,
    replicas: usize,
    deployment: Deployment,
}

impl Witness {
    /// The witness of `deployment` under the subject prefix of `events`.
    pub fn new(client: async_nats::Client, events: &EventStream, deployment: Deployment) -> Self {
        Self {
            js: jetstream::new(client),
            prefix: events.prefix().to_string(),
            replicas: events.replicas(),
            deployment,
        }
    }

    /// `CC_AUDIT` for prefix `cc`.
    pub fn stream_name(&self) -> String {
        format!("{}_AUDIT", self.prefix.to_uppercase().replace('-', "_"))
    }

    fn subject(&self) -> String {
        format!("{}.audit.checkpoints", self.prefix)
    }

    fn description(&self) -> String {
        format!(
            "CommandCenter audit checkpoints of deployment {}",
            self.deployment
        )
    }

    async fn stream(&self) -> Result<stream::Stream, WitnessError> {
        let config = stream::Config {
            name: self.stream_name(),
            description: Some(self.description()),
            subjects: vec![self.subject()],
            storage: stream::StorageType::File,
            duplicate_window: crate::DUPLICATE_WINDOW,
            // A witness forgets nothing: no message may be deleted or purged.
            deny_delete: true,
            deny_purge: true,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let existing = match self.js.get_stream(self.stream_name()).await {
            Ok(existing) => existing,
            Err(_) => match self.js.create_stream(config).await {
                Ok(created) => return Ok(created),
                Err(create) => self
                    .js
                    .get_stream(self.stream_name())
                    .await
                    .map_err(|_| nats(create))?,
            },
        };
        let description = existing.cached_info().config.description.clone();
        if description.as_deref() != Some(self.description().as_str()) {
            return Err(WitnessError::OtherDeployment {
                stream: self.stream_name(),
                owner: description.unwrap_or_else(|| "unknown".into()),
                ours: self.deployment.clone(),
            });
        }
        Ok(existing)
    }

    /// Every checkpoint the witness holds, oldest first.
    pub async fn read(&self) -> Result<Vec<Checkpoint>, WitnessError> {
        let stream = self.stream().await?;
        let info = stream.get_info().await.map_err(nats)?;
        let mut witnessed = Vec::new();
        for sequence in info.state.first_sequence.max(1)..=info.state.last_sequence {
            let message = match stream.get_raw_message(sequence).await {
                Ok(message) => message,
                // Never stored (a sequence skipped): nothing to read.
                Err(err) if is_missing(&err) => continue,
                Err(err) => return Err(nats(err)),
            };
            if !self.deployment.owns(Some(&message.headers)) {
                continue;
            }
            let checkpoint: Checkpoint = serde_json::from_slice(&message.payload)
                .map_err(|source| WitnessError::Decode { sequence, source })?;
            witnessed.push(checkpoint);
        }
        witnessed.sort_by_key(|c| c.id);
        witnessed.dedup_by_key(|c| c.id);
        Ok(witnessed)
    }

    /// Publishes every checkpoint of the store the witness does not hold yet; returns
    /// how many.
    pub async fn publish_pending(&self, pool: &PgPool) -> Result<u64, WitnessError> {
        let witnessed = self.read().await?;
        let newest = witnessed.last().map_or(0, |c| c.id);
        let mut published = 0;
        for checkpoint in checkpoints(pool).await? {
            if checkpoint.id <= newest {
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(HEADER_DEPLOYMENT, self.deployment.as_str());
            headers.insert(HEADER_CHECKPOINT_ID, checkpoint.id.to_string().as_str());
            headers.insert(
                "Nats-Msg-Id",
                format!("checkpoint:{}:{}", self.deployment, checkpoint.id).as_str(),
            );
            let payload = serde_json::to_vec(&checkpoint).map_err(StoreError::from)?;
            self.js
                .publish_with_headers(self.subject(), headers, payload.into())
                .await
                .map_err(nats)?
                .await
                .map_err(nats)?;
            published += 1;
        }
        Ok(published)
    }
}
