//! The write side of CommandCenter: thin axum routes that parse requests into validated
//! domain values, run them as aggregate commands (see [`executor`]) and answer with the
//! new version and position, plus read endpoints on the event store for auditors.
//!
//! Guarantees: a 2xx means the command's events are committed; a 4xx means nothing was
//! written; every error is an `application/problem+json` document naming the field.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod clock;
pub mod error;
pub mod executor;
pub mod extract;
pub mod history;
pub mod idempotency;
pub mod jobs;
pub mod reply;
pub mod technologies;

use axum::extract::DefaultBodyLimit;
use axum::Extension;
use commandcenter_event_store::EventStore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

/// What every write route needs.
#[derive(Clone)]
pub struct CommandState {
    /// The event store.
    pub store: EventStore,
    /// Where commands are counted.
    pub metrics: std::sync::Arc<commandcenter_metrics::Metrics>,
    /// The key audit checkpoints are signed with, if configured.
    pub audit_key: Option<std::sync::Arc<Vec<u8>>>,
}

/// The write API's routes, documented (OpenAPI) from the handlers' annotations, with
/// request bodies limited to `max_body_bytes` and JSON shapes to `json`.
pub fn api(max_body_bytes: usize, json: extract::JsonLimits) -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(technologies::create_technology))
        .routes(routes!(
            technologies::update_technology,
            technologies::delete_technology
        ))
        .routes(routes!(history::technology_history))
        .routes(routes!(jobs::create_job))
        .routes(routes!(jobs::patch_job, jobs::delete_job))
        .routes(routes!(jobs::dispatch_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(history::job_history))
        .routes(routes!(history::events_feed))
        .routes(routes!(audit::verify_chains))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(extract::BodyLimit(max_body_bytes)))
        .layer(Extension(json))
}
