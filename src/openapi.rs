//! The HTTP surface as one router and one OpenAPI document, built from the same
//! annotated handlers (`utoipa-axum`), so the two cannot drift: a route exists only by
//! being registered with its documentation. `GET /api/v1/openapi.json` serves the
//! document.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
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

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "This OpenAPI document", body = Object)))]
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

/// Every operation of `document`, with its path and method.
fn operations_mut(
    document: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = (&str, Method, &mut utoipa::openapi::path::Operation)> {
    document.paths.paths.iter_mut().flat_map(|(path, item)| {
        [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ]
        .into_iter()
        .filter_map(move |(method, operation)| Some((path.as_str(), method, operation.as_mut()?)))
    })
}

/// Declares the bearer key scheme, and on every operation the roles its rule in
/// `commandcenter_auth::policy` admits (OpenAPI 3.1 allows role names for HTTP schemes),
/// so the document says what the guard enforces.
fn document_access(document: &mut utoipa::openapi::OpenApi) {
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
    for (path, method, operation) in operations_mut(document) {
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

/// An error answer: an `application/problem+json` document (RFC 9457) as
/// `commandcenter_api_error::problem::problem_body` writes it, for the API's own errors
/// and the access guard's alike (a schema only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Problem {
    /// `urn:commandcenter:problem:<kind>`, e.g. `urn:commandcenter:problem:validation`.
    #[schema(rename = "type")]
    kind: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, in words.
    detail: String,
    /// The field, parameter or header at fault, when one is.
    #[schema(required = false)]
    field: String,
    /// The same, as a list (one entry).
    #[schema(required = false)]
    errors: Vec<FieldError>,
    /// With 412: the version the resource is at.
    #[schema(required = false)]
    current_version: i64,
}

/// A field at fault, in a [`Problem`].
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct FieldError {
    /// The field, parameter or header.
    field: String,
    /// What is wrong with it.
    message: String,
}

/// The media type of error answers.
const PROBLEM_JSON: &str = "application/problem+json";

/// What the statuses every guarded operation may answer mean, besides its own.
const GUARD_STATUSES: &[(&str, &str)] = &[
    ("401", "No valid API key (problem+json, WWW-Authenticate)"),
    ("403", "The key's role may not do this (problem+json)"),
    (
        "429",
        "The key's request rate or concurrency limit is reached (problem+json, Retry-After)",
    ),
    (
        "503",
        "A dependency is unavailable, the read model did not reach X-CC-Min-Position in time, \
             or too much expensive work is running; retry later (problem+json, Retry-After). \
             Type `unavailable`: nothing was applied; type `outcome-unknown`: the database \
             connection was lost while a command committed, so it may have been applied \
             (retry with the same Idempotency-Key to learn its outcome)",
    ),
];

/// The form of each header parameter, by name, as the extractors that read them
/// accept it (`commands::extract`, `query_api::consistency`).
fn header_schema(name: &str) -> Option<utoipa::openapi::schema::Object> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let string = |pattern: &str, description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .description(Some(description))
    };
    let schema = match name.to_ascii_lowercase().as_str() {
        "if-match" => string(
            r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#,
            "The version the write requires, as ETag gave it (\"3\"); * for any",
        )
        .examples([r#""3""#]),
        "idempotency-key" => string(r"^[\x21-\x7E]{1,255}$", "1 to 255 visible ASCII characters")
            .min_length(Some(1))
            .max_length(Some(255)),
        "x-cc-min-position" => string(
            // The second half is a non-negative 64-bit integer.
            r"^[0-9a-fA-F]{16}[0-7][0-9a-fA-F]{15}$",
            "A position token (X-CC-Position of a write): 32 hexadecimal digits",
        )
        .min_length(Some(32))
        .max_length(Some(32)),
        "x-project-id" => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(i64::MAX))
            .description(Some("A project id: a positive integer")),
        _ => return None,
    };
    Some(schema.build())
}

/// An integer query parameter without a documented maximum is read as an `i64`: the
/// document says so (written as an exact integer, so tools compare it exactly).
fn bounded_integer(object: &mut utoipa::openapi::schema::Object) {
    use utoipa::openapi::schema::{SchemaType, Type};
    if object.schema_type == SchemaType::Type(Type::Integer) && object.maximum.is_none() {
        object.maximum = Some(i64::MAX.into());
    }
}

/// A query parameter given empty (`?limit=`) is read as absent by every handler
/// (`Params::text`, the audit reads' parsers, time travel, `delay_seconds`), so the
/// document admits the empty string beside the parameter's own form.
fn absent_when_empty(
    schema: utoipa::openapi::RefOr<utoipa::openapi::Schema>,
) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    AnyOfBuilder::new()
        .item(schema)
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(0))
                .description(Some("Empty: the same as leaving the parameter out")),
        )
        .into()
}

/// An optional body (`Option<T>` in `request_body`) is documented by utoipa as `T` or
/// `null`; the handlers read a missing body as `{}` but a JSON `null` as the wrong
/// shape, so the document says: `T`, or no body at all.
fn leave_out_instead_of_null(body: &mut utoipa::openapi::request_body::RequestBody) {
    use utoipa::openapi::schema::{SchemaType, Type};
    use utoipa::openapi::{RefOr, Required, Schema};
    let is_null = |schema: &RefOr<Schema>| matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        if !one_of.items.iter().any(is_null) {
            continue;
        }
        let kept: Vec<_> = one_of
            .items
            .iter()
            .filter(|s| !is_null(s))
            .cloned()
            .collect();
        if let [only] = kept.as_slice() {
            content.schema = Some(only.clone());
            body.required = Some(Required::False);
        }
    }
}

/// Completes what every operation answers, from what the guard and the extractors do
/// rather than from each annotation: the statuses of the guard (401, 403, 429, 503) on
/// guarded operations, 404 on a path naming a resource, 400 where a parameter or a body
/// can be malformed, 413/415/422 where a body is read; every error answer as a
/// [`Problem`]; header parameters with their form; links from a create to its detail.
fn document_answers(document: &mut utoipa::openapi::OpenApi) {
    use commandcenter_auth::policy::{rule_for, Access};
    use utoipa::openapi::content::ContentBuilder;
    use utoipa::openapi::link::LinkBuilder;
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{Ref, RefOr, ResponseBuilder, Schema};
    use utoipa::{PartialSchema, ToSchema};

    let components = document.components.get_or_insert_with(Default::default);
    let mut schemas = vec![(Problem::name().into_owned(), Problem::schema())];
    <Problem as ToSchema>::schemas(&mut schemas);
    for (name, schema) in schemas {
        components.schemas.insert(name, schema);
    }
    let problem = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build()
    };
    let operation_ids: Vec<String> = document
        .paths
        .paths
        .values()
        .flat_map(|item| [&item.get, &item.post, &item.put, &item.patch, &item.delete])
        .filter_map(|operation| operation.as_ref()?.operation_id.clone())
        .collect();
    for (path, method, operation) in operations_mut(document) {
        let guarded = !matches!(rule_for(&method, path).access, Access::Public);
        let mut added: Vec<(&str, &str)> = Vec::new();
        if guarded {
            added.extend_from_slice(GUARD_STATUSES);
            if path.contains('{') {
                added.push(("404", "Unknown, or another project's (problem+json)"));
            }
        }
        let parameters = operation.parameters.as_deref_mut().unwrap_or_default();
        for parameter in parameters.iter_mut() {
            if let Some(schema) = header_schema(&parameter.name) {
                parameter.schema = Some(RefOr::T(schema.into()));
            } else if matches!(parameter.parameter_in, ParameterIn::Query) {
                if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
                    bounded_integer(object);
                }
                parameter.schema = parameter.schema.take().map(absent_when_empty);
            }
        }
        if let Some(body) = operation.request_body.as_mut() {
            leave_out_instead_of_null(body);
        }
        let has_input = parameters
            .iter()
            .any(|p| !matches!(p.parameter_in, ParameterIn::Path));
        if operation.request_body.is_some() {
            added.push((
                "400",
                "Malformed JSON, parameter or header (problem+json naming it)",
            ));
            added.push(("413", "Body too large (problem+json)"));
            added.push(("415", "Body is not JSON (problem+json)"));
            added.push(("422", "Invalid field (problem+json naming it)"));
        } else if has_input {
            added.push((
                "400",
                "Malformed or out-of-range parameter or header (problem+json naming it)",
            ));
        }
        let responses = &mut operation.responses.responses;
        for (status, description) in added {
            responses.entry(status.to_string()).or_insert_with(|| {
                RefOr::T(ResponseBuilder::new().description(description).build())
            });
        }
        for (status, response) in responses.iter_mut() {
            let RefOr::T(response) = response else {
                continue;
            };
            if status.starts_with(['4', '5']) && response.content.is_empty() {
                response.content.insert(PROBLEM_JSON.to_string(), problem());
            }
        }
        // A create's answer names the new resource: its detail is one link away.
        if method == Method::POST && !path.contains('{') {
            let detail = operation
                .operation_id
                .as_deref()
                .and_then(|id| id.strip_prefix("create_"))
                .map(|what| format!("get_{what}"))
                .filter(|detail| operation_ids.contains(detail));
            if let (Some(detail), Some(RefOr::T(created))) = (detail, responses.get_mut("201")) {
                let what = detail.trim_start_matches("get_");
                let name = format!("Get{}{}", what[..1].to_ascii_uppercase(), &what[1..]);
                created.links.insert(
                    name,
                    RefOr::T(
                        LinkBuilder::new()
                            .operation_id(detail)
                            .parameter("id", "$response.body#/id")
                            .description("The resource just created")
                            .build(),
                    ),
                );
            }
        }
    }
}

/// Renames the fields of every response's links as OpenAPI spells them: utoipa 5.5's
/// `Link` serializes `operation_id`, `operation_ref` and `request_body` as written in
/// Rust, which no tool reads.
fn camel_case_links(document: &mut serde_json::Value) {
    let operations = document["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let responses = operation
            .get_mut("responses")
            .and_then(|r| r.as_object_mut())
            .into_iter()
            .flatten();
        for (_, response) in responses {
            let links = response.get_mut("links").and_then(|l| l.as_object_mut());
            for (_, link) in links.into_iter().flatten() {
                let Some(link) = link.as_object_mut() else {
                    continue;
                };
                for (from, to) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(value) = link.remove(from) {
                        link.insert(to.to_string(), value);
                    }
                }
            }
        }
    }
}

/// The headers an answer carries, as the code that builds it sets them: the version and
/// position of a write (`commands::reply`), the new resource of a create, the position
/// and source of a read (`query_api::response`, time travel, history), the wait before
/// retrying a 429 or 503, and the scheme of a 401.
fn answer_headers(
    path: &str,
    method: &str,
    status: &str,
) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let position = |required: bool, description: &str| {
        json!({
            "description": description,
            "required": required,
            "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$", "minLength": 32, "maxLength": 32},
        })
    };
    let resource = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let aggregate = resource("/api/v1/technologies") || resource("/api/v1/jobs");
    let mut headers = Vec::new();
    match (method, status) {
        (_, "429" | "503") if !path.starts_with("/health") => headers.push((
            "Retry-After",
            json!({
                "description": "Seconds to wait before retrying",
                "required": true,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }),
        )),
        (_, "401") => headers.push((
            "WWW-Authenticate",
            json!({
                "description": "The scheme to authenticate with: Bearer",
                "required": true,
                "schema": {"type": "string", "pattern": "^Bearer"},
            }),
        )),
        ("get", "200") if path.ends_with("/history") || path == "/api/v1/events" => {
            headers.push((
                "X-CC-Position",
                position(
                    path != "/api/v1/events",
                    "The position the answer reflects: the head of the store it read \
                     (history), or next_after (the feed's JSON form)",
                ),
            ));
        }
        ("get", "200")
            if (aggregate || resource("/api/v1/dashboard"))
                && !path.ends_with("/artifact")
                && !path.contains("/ws") =>
        {
            headers.push((
                "X-CC-Position",
                position(
                    true,
                    "The read model's checkpoint the answer reflects (pass it on as \
                     X-CC-Min-Position)",
                ),
            ));
            headers.push((
                "X-CC-Source",
                json!({
                    "description": "What answered: cache, primary, replica-<n>, or event-store (time travel)",
                    "required": true,
                    "schema": {"type": "string", "pattern": "^(cache|primary|replica-[0-9]+|event-store)$"},
                }),
            ));
        }
        ("post" | "patch" | "delete", s) if aggregate && s.starts_with('2') => {
            headers.push((
                "ETag",
                json!({
                    "description": "The version after the write, quoted: send it as If-Match",
                    "required": true,
                    "schema": {"type": "string", "pattern": "^\"[0-9]+\"$"},
                }),
            ));
            headers.push((
                "X-CC-Position",
                position(
                    true,
                    "The position of the write: pass it as X-CC-Min-Position to read it back",
                ),
            ));
            if s == "201" {
                headers.push((
                    "Location",
                    json!({
                        "description": "The path of the new resource",
                        "required": true,
                        "schema": {"type": "string", "format": "uri-reference", "pattern": "^/api/v1/"},
                    }),
                ));
            }
        }
        _ => {}
    }
    headers
}

/// Adds [`answer_headers`] to every response of `document` (utoipa's header object has
/// no `required`, so this works on the serialized document).
fn document_answer_headers(document: &mut serde_json::Value) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(|r| r.as_object_mut())
            else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let wanted = answer_headers(path, method, status);
                let Some(response) = response.as_object_mut() else {
                    continue;
                };
                if wanted.is_empty() {
                    continue;
                }
                let headers = response
                    .entry("headers")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(headers) = headers.as_object_mut() {
                    for (name, header) in wanted {
                        headers.insert(name.to_string(), header);
                    }
                }
            }
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
    document_answers(&mut document);
    let mut value = serde_json::to_value(&document).unwrap_or_default();
    camel_case_links(&mut value);
    document_answer_headers(&mut value);
    let body = serde_json::to_vec(&value).unwrap_or_default();
    let _ = spec.0.set(Bytes::from(body));
    router
}
