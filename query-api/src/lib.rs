//! The read side of CommandCenter: list, detail and statistics endpoints over the read
//! models (one indexed read per page, totals from precomputed counts), read replicas with
//! read-your-writes, a cache invalidated by change announcements, and WebSocket push.
//!
//! Every answer carries `X-CC-Position`, the checkpoint of the read model it reflects,
//! read in the same statement as the data.
//!
//! Beside them, the auditors' reads of the event store itself ([`audit_api`]): history
//! with field diffs, the global feed, and hash-chain verification.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artifacts;
pub mod audit;
pub mod bounded;
pub mod cache;
pub mod consistency;
pub mod cursor;
pub mod dashboard;
pub mod error;
pub mod history;
pub mod hub;
pub mod jobs;
pub mod params;
pub mod pools;
mod queries;
pub mod response;
pub mod schema;
pub mod search_words;
pub mod technologies;
pub mod time_travel;
pub mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use cache::QueryCache;
pub use hub::Hub;
pub use pools::{ChosenPool, ReadPools, ReplicaLag};

/// Settings of the query API.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// The longest a read waits for `X-CC-Min-Position` before answering 503.
    pub min_position_wait: Duration,
    /// Where job artifacts (exports) are found, under `artifacts/`.
    pub data_dir: PathBuf,
    /// The budget of deep-offset and search reads.
    pub expensive: bounded::ExpensiveReads,
}

/// What every read route needs.
#[derive(Clone)]
pub struct QueryState {
    /// Pools queries run on.
    pub pools: ReadPools,
    /// The primary, for sockets (which must see every announced row).
    pub primary: PgPool,
    /// The answer cache.
    pub cache: Arc<QueryCache>,
    /// The change hub.
    pub hub: Arc<Hub>,
    /// Limits and waits of the read side.
    pub config: QueryConfig,
    /// Where reads, cache use and sockets are counted.
    pub metrics: Arc<commandcenter_metrics::Metrics>,
    /// Which word of a search the trigram index looks up.
    pub search_words: Arc<search_words::SearchWords>,
}

/// What the auditors' reads need: they read the event store itself, not the read models.
#[derive(Clone)]
pub struct AuditState {
    /// The event store.
    pub store: commandcenter_event_store::EventStore,
    /// The key audit checkpoints are signed with, if configured.
    pub audit_key: Option<Arc<Vec<u8>>>,
}

/// The auditors' reads over the event store, documented (OpenAPI) from the handlers'
/// annotations: an aggregate's history, the global event feed, and chain verification.
pub fn audit_api() -> OpenApiRouter<AuditState> {
    OpenApiRouter::new()
        .routes(routes!(history::technology_history))
        .routes(routes!(history::job_history))
        .routes(routes!(history::events_feed))
        .routes(routes!(audit::verify_chains))
}

/// The query API's routes, documented (OpenAPI) from the handlers' annotations.
pub fn api() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(technologies::list_technologies))
        .routes(routes!(technologies::get_technology))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::active_jobs))
        .routes(routes!(jobs::statistics))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::job_progress))
        .routes(routes!(artifacts::job_artifact))
        .routes(routes!(ws::job_socket))
        .routes(routes!(ws::multiplexed_socket))
        .routes(routes!(dashboard::dashboard_stats))
        .routes(routes!(dashboard::recent_activity))
}
