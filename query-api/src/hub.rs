//! The change hub: one core NATS subscription per process to `<core prefix>.views.>`, fanned
//! out in memory to the cache (invalidation), read-your-writes waiters (wake-ups) and
//! WebSocket clients (pushes).
//!
//! Every client has a bounded queue. A push that does not fit is dropped and the client
//! is marked lagged; its socket then tells it so, with the last position it was sent,
//! from which it can resume. A slow reader never grows server memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use commandcenter_event_store::Position;
use dashmap::DashMap;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::cache::QueryCache;

/// A changed read-model row, as the projectors announce it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewChange {
    /// `technology_view` or `job_view`.
    pub view: String,
    /// The row's project.
    pub project_id: i64,
    /// The row's id.
    pub id: String,
    /// Position of the last event applied to the row.
    pub position: Position,
    /// Correlation id of that event.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// True when the row was removed.
    #[serde(default)]
    pub deleted: bool,
    /// The new row.
    #[serde(default)]
    pub row: Option<Value>,
}

impl ViewChange {
    /// The WebSocket topics this change is pushed to.
    pub fn topics(&self) -> Vec<String> {
        match self.view.as_str() {
            "job_view" => vec![
                format!("jobs:{}", self.project_id),
                format!("job:{}", self.id),
            ],
            "technology_view" => vec![format!("technologies:{}", self.project_id)],
            _ => Vec::new(),
        }
    }
}

/// One subscriber's side of the hub.
pub struct Subscriber {
    /// Pushes for this client.
    pub receiver: mpsc::Receiver<Arc<ViewChange>>,
    /// The sending side the hub pushes into, for each topic subscribed.
    sender: mpsc::Sender<Arc<ViewChange>>,
    /// Set when a push was dropped because the queue was full.
    pub lagged: Arc<AtomicBool>,
    /// The client's id in the hub.
    pub id: u64,
}

struct ClientHandle {
    sender: mpsc::Sender<Arc<ViewChange>>,
    lagged: Arc<AtomicBool>,
}

/// The hub.
pub struct Hub {
    topics: DashMap<String, HashMap<u64, ClientHandle>>,
    next_client: AtomicU64,
    changes: watch::Sender<u64>,
    cache: Arc<QueryCache>,
    queue: usize,
}

impl Hub {
    /// A hub feeding `cache`, with `queue` pushes buffered per client.
    pub fn new(cache: Arc<QueryCache>, queue: usize) -> Self {
        Self {
            topics: DashMap::new(),
            next_client: AtomicU64::new(1),
            changes: watch::Sender::new(0),
            cache,
            queue: queue.max(1),
        }
    }

    /// A receiver that changes with every announcement.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Registers a new client (with no topics yet).
    pub fn connect(&self) -> Subscriber {
        let (sender, receiver) = mpsc::channel(self.queue);
        Subscriber {
            receiver,
            sender,
            lagged: Arc::new(AtomicBool::new(false)),
            id: self.next_client.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Subscribes `subscriber` to `topic`.
    pub fn subscribe(&self, subscriber: &Subscriber, topic: &str) {
        self.topics.entry(topic.to_string()).or_default().insert(
            subscriber.id,
            ClientHandle {
                sender: subscriber.sender.clone(),
                lagged: subscriber.lagged.clone(),
            },
        );
    }

    /// Unsubscribes client `id` from `topic`.
    pub fn unsubscribe(&self, id: u64, topic: &str) {
        if let Some(mut clients) = self.topics.get_mut(topic) {
            clients.remove(&id);
        }
        self.topics
            .remove_if(topic, |_, clients| clients.is_empty());
    }

    /// Delivers one announcement.
    pub fn dispatch(&self, change: ViewChange) {
        let view = match change.view.as_str() {
            "technology_view" => "technology_view",
            "job_view" => "job_view",
            _ => return,
        };
        self.cache
            .invalidate(view, change.project_id, change.position);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        let change = Arc::new(change);
        for topic in change.topics() {
            let Some(clients) = self.topics.get(&topic) else {
                continue;
            };
            for client in clients.values() {
                if client.sender.try_send(change.clone()).is_err() {
                    client.lagged.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Listens on `<core prefix>.views.>` (`<prefix>.<deployment>`) until `shutdown` (or the subscription ends).
    pub async fn run(
        self: Arc<Self>,
        client: async_nats::Client,
        prefix: String,
        shutdown: CancellationToken,
    ) {
        let mut subscription = match client.subscribe(format!("{prefix}.views.>")).await {
            Ok(subscription) => subscription,
            Err(err) => {
                tracing::error!(%err, "cannot subscribe to view changes: no push, no cache");
                return;
            }
        };
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                message = subscription.next() => message,
            };
            let Some(message) = message else { return };
            match serde_json::from_slice::<ViewChange>(&message.payload) {
                Ok(change) => self.dispatch(change),
                Err(err) => {
                    tracing::warn!(%err, subject = %message.subject, "unreadable view change")
                }
            }
        }
    }
}
