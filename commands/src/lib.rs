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
use commandcenter_executor::{execute, CommandError, Execution, Outcome, WriteModel};
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

/// Runs `command` on aggregate `id` of type `A` (`kind` names it in a 404: an id that
/// cannot exist is one), with the request's `If-Match`, tracing ids and Idempotency-Key,
/// answering with `respond`.
async fn run<A>(
    state: &CommandState,
    id: &str,
    kind: &'static str,
    command: A::Command,
    context: extract::CommandContext,
    body: &[u8],
    respond: impl Fn(&Outcome<A>) -> Result<reply::Reply, CommandError> + Send + Sync + 'static,
) -> Result<axum::response::Response, ApiError>
where
    A: WriteModel + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send,
    CommandError: From<A::Error>,
{
    use axum::response::IntoResponse;
    if commandcenter_domain::values::AggregateId::parse(id).is_none() {
        return Err(ApiError::NotFound(kind));
    }
    let idempotency = context.idempotent(body);
    let execution = Execution::<A> {
        aggregate_id: id.to_string(),
        command,
        if_match: context.if_match,
        meta: context.meta,
        idempotency,
    };
    Ok(execute(&state.store, &state.metrics, execution, respond)
        .await?
        .into_response())
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
