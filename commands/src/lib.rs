//! The write side of CommandCenter over HTTP: thin axum routes that parse requests into
//! validated domain values, run them as aggregate commands through
//! `commandcenter-executor` and answer with the new version and position.
//!
//! Guarantees: a 2xx means the command's events are committed; a 4xx means nothing was
//! written; every error is an `application/problem+json` document naming the field.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod extract;
pub mod forms;
pub mod jobs;
pub mod reply;
pub mod technologies;

use axum::extract::DefaultBodyLimit;
use axum::Extension;
use commandcenter_event_store::EventStore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use commandcenter_api_error::ApiError;

/// What every write route needs.
#[derive(Clone)]
pub struct CommandState {
    /// The event store.
    pub store: EventStore,
    /// Where commands are counted.
    pub metrics: std::sync::Arc<commandcenter_metrics::Metrics>,
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
        .routes(routes!(jobs::create_job))
        .routes(routes!(jobs::patch_job, jobs::delete_job))
        .routes(routes!(jobs::dispatch_job))
        .routes(routes!(jobs::cancel_job))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(extract::BodyLimit(max_body_bytes)))
        .layer(Extension(json))
}
