//! The write side of CommandCenter: thin axum routes that parse requests into validated
//! domain values, run them as aggregate commands (see [`executor`]) and answer with the
//! new version and position, plus read endpoints on the event store for auditors.
//!
//! Guarantees: a 2xx means the command's events are committed; a 4xx means nothing was
//! written; every error is an `application/problem+json` document naming the field.

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
use axum::routing::{get, patch, post};
use axum::{Extension, Router};
use commandcenter_event_store::EventStore;

pub use error::ApiError;

/// What every write route needs.
#[derive(Clone)]
pub struct CommandState {
    /// The event store.
    pub store: EventStore,
}

/// The write API's routes, with request bodies limited to `max_body_bytes`.
pub fn router(state: CommandState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/api/v1/technologies",
            post(technologies::create_technology),
        )
        .route(
            "/api/v1/technologies/{id}",
            patch(technologies::update_technology).delete(technologies::delete_technology),
        )
        .route(
            "/api/v1/technologies/{id}/history",
            get(history::technology_history),
        )
        .route("/api/v1/jobs", post(jobs::create_job))
        .route(
            "/api/v1/jobs/{id}",
            patch(jobs::patch_job).delete(jobs::delete_job),
        )
        .route("/api/v1/jobs/{id}/dispatch", post(jobs::dispatch_job))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/api/v1/jobs/{id}/history", get(history::job_history))
        .route("/api/v1/events", get(history::events_feed))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(extract::BodyLimit(max_body_bytes)))
        .with_state(state)
}
