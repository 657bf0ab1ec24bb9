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
                   Errors are application/problem+json documents naming the field at fault. \
                   Every operation but health, metrics and this document needs `Authorization: Bearer <API key>`; \
                   each operation's security requirement lists the roles that may call it. \
                   401: no valid key; 403: role too weak; 404: unknown, or another project's; 429: per-key limit."
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

/// Declares the bearer key scheme, and on every operation the roles its rule in
/// `commandcenter_auth::policy` admits (OpenAPI 3.1 allows role names for HTTP schemes),
/// so the document says what the guard enforces.
fn document_access(document: &mut utoipa::openapi::OpenApi) {
    use axum::http::Method;
    use commandcenter_auth::policy::{rule_for, Access};
    use commandcenter_auth::{Principal, Role};
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };

    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cc_<id>_<secret>")
                    .description(Some(
                        "An API key (`commandcenter keys create`); sockets may pass it as `access_token`.",
                    ))
                    .build(),
            ),
        );
    for (path, item) in document.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let access = rule_for(&method, path).access;
            let roles: Vec<String> = match access {
                Access::Public => {
                    operation.security = Some(vec![SecurityRequirement::default()]);
                    continue;
                }
                Access::DeploymentAdmin => vec!["admin (deployment-wide)".into()],
                // The roles the guard admits, asked of the guard's own rule.
                _ => Role::ALL
                    .into_iter()
                    .filter(|&role| {
                        access.allows(&Principal {
                            key_id: String::new(),
                            role,
                            project: Some(1),
                            expires_at: None,
                        })
                    })
                    .map(|role| role.to_string())
                    .collect(),
            };
            operation.security = Some(vec![SecurityRequirement::new("api_key", roles)]);
        }
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
    document_access(&mut document);
    let body = serde_json::to_vec(&document).unwrap_or_default();
    let _ = spec.0.set(Bytes::from(body));
    router
}
