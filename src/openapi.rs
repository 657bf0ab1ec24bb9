//! The HTTP surface as one router and one OpenAPI document, built from the same
//! annotated handlers (`utoipa-axum`), so the two cannot drift: a route exists only by
//! being registered with its documentation. `GET /api/v1/openapi.json` serves the
//! document.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The document's header.
#[derive(OpenApi)]
#[openapi(info(
    title = "CommandCenter",
    description = "Event-sourced CQRS backend: commands on technologies and jobs, read models, WebSocket push. \
                   Errors are application/problem+json documents naming the field at fault."
))]
struct ApiDoc;

/// The serialized document, set once the router is built.
#[derive(Clone, Default)]
pub struct SpecState(Arc<OnceLock<Bytes>>);

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "This OpenAPI document")))]
async fn openapi_json(State(spec): State<SpecState>) -> Response {
    match spec.0.get() {
        Some(body) => {
            let mut response = (StatusCode::OK, body.clone()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Merges the documented routers into the application router and its document.
pub fn assemble(parts: Vec<OpenApiRouter>) -> Router {
    let spec = SpecState::default();
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi());
    for part in parts {
        api = api.merge(part);
    }
    let (router, mut document) = api
        .merge(
            OpenApiRouter::new()
                .routes(routes!(openapi_json))
                .with_state(spec.clone()),
        )
        .split_for_parts();
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    let body = serde_json::to_vec(&document).unwrap_or_default();
    let _ = spec.0.set(Bytes::from(body));
    router
}
