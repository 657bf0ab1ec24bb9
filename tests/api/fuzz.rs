//! Hostile input to every route: `proptest` over the router. The route list (methods,
//! path templates, query parameter names) is read from `/api/v1/openapi.json`, which is
//! built from the same registrations as the router, so a new route is fuzzed without
//! being named here.
//!
//! Each case sends one request to a real service (PostgreSQL, NATS): a route, sometimes a
//! method it does not have; path parameters that are hostile strings or real ids; known
//! and unknown query parameters with hostile values; hostile headers; and a body that is
//! random JSON (deep, wide, huge numbers, odd strings, the API's own field names) or raw
//! bytes, sent with an admin key, a project key, a bad key or none.
//!
//! Properties: no 5xx, no dropped connection, and the event store unchanged by every
//! request that was refused (any status that is not 2xx).
//!
//! Left out on purpose: `wait_ms` (a long-poll of up to 30 s is not hostile, only slow)
//! and a well-formed `X-CC-Min-Position` beyond the head (answered 503 with Retry-After
//! after the configured wait, by design); malformed positions are sent.

use std::time::Duration;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::{Client, Method};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// One route of the document.
#[derive(Debug, Clone)]
struct Route {
    method: String,
    template: String,
    params: Vec<String>,
}

/// Field names the API uses, so random bodies reach validation, not only parsing.
const FIELDS: &[&str] = &[
    "project_id",
    "title",
    "job_type",
    "parameters",
    "status",
    "progress",
    "current_step",
    "result",
    "error",
    "traceback",
    "tags",
    "description",
    "priority",
    "relevance_score",
    "domain",
    "vendor",
    "format",
    "project_ids",
    "url",
    "payload",
    "stale_days",
    "top",
    "steps",
    "step_ms",
    "reason",
    "role",
    "name",
    "expires_at",
    "max_attempts",
    "created_by",
    "documentation_url",
    "latency_ms",
    "subscribe",
];

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        3 => Just("0".to_string()),
        3 => Just("-1".to_string()),
        3 => Just("1".to_string()),
        3 => Just("9223372036854775808".to_string()),
        2 => Just("-9223372036854775809".to_string()),
        2 => Just("1e309".to_string()),
        2 => Just("NaN".to_string()),
        3 => Just("' OR 1=1 --".to_string()),
        2 => Just("\"; DROP TABLE events; --".to_string()),
        2 => Just("../../../../etc/passwd".to_string()),
        2 => Just("%00%ff%fe".to_string()),
        2 => Just("\u{0}\u{1}\u{7f}".to_string()),
        2 => Just("\u{202e}\u{fffd}\u{10ffff}".to_string()),
        2 => Just("🚀".repeat(300)),
        2 => Just("a".repeat(70_000)),
        2 => Just("x".repeat(256)),
        2 => Just("null".to_string()),
        2 => Just("{}".to_string()),
        2 => Just("<script>alert(1)</script>".to_string()),
        2 => Just("2026-02-30T25:61:00Z".to_string()),
        2 => Just("completed".to_string()),
        2 => Just("noop".to_string()),
        2 => Just("export".to_string()),
        2 => Just("webhook_delivery".to_string()),
        2 => Just("http://169.254.169.254/latest/meta-data".to_string()),
        2 => Just("-created_at".to_string()),
        2 => Just("job:../../x".to_string()),
        6 => "\\PC{0,40}",
        4 => "[a-z_0-9:-]{1,24}",
    ]
}

fn hostile_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-5i64..2000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(u64::MAX)),
        hostile_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(field_name(), inner, 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(FIELDS).prop_map(str::to_string),
        1 => hostile_string(),
    ]
}

/// A body: random JSON (mostly an object of the API's fields), raw text, or nothing.
#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => Just(Body::None),
        6 => btree_map(field_name(), hostile_json(), 0..10)
            .prop_map(|fields| Body::Json(Value::Object(fields.into_iter().collect()))),
        2 => hostile_json().prop_map(Body::Json),
        1 => vec(any::<u8>(), 0..300).prop_map(Body::Raw),
        1 => (1usize..400).prop_map(|depth| Body::Raw(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes())),
        1 => Just(Body::Raw(b"{\"title\": \"unterminated".to_vec())),
    ]
}

/// Which key the request carries.
#[derive(Debug, Clone, Copy)]
enum Auth {
    Root,
    ProjectWriter,
    ProjectAuditor,
    Garbage,
    None,
}

/// One generated request, before it is tied to a route.
#[derive(Debug, Clone)]
struct Case {
    route: usize,
    other_method: Option<&'static str>,
    /// Per path parameter: a hostile string, or `None` for a real id.
    params: Vec<Option<String>>,
    known_query: Vec<(usize, String)>,
    unknown_query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    content_type: Option<&'static str>,
    body: Body,
    auth: Auth,
}

fn case(routes: usize) -> impl Strategy<Value = Case> {
    (
        0..routes,
        prop_oneof![
            9 => Just(None),
            1 => proptest::sample::select(vec!["PUT", "POST", "DELETE", "PATCH", "GET"]).prop_map(Some),
        ],
        vec(proptest::option::weighted(0.6, hostile_string()), 2),
        vec((0usize..64, hostile_string()), 0..5),
        vec(("[a-z_]{1,12}", hostile_string()), 0..3),
        vec(
            (
                proptest::sample::select(vec![
                    "if-match",
                    "idempotency-key",
                    "x-cc-min-position",
                    "x-correlation-id",
                    "traceparent",
                    "accept",
                ]),
                "[ -~]{0,300}",
            ),
            0..3,
        ),
        prop_oneof![
            6 => Just(Some("application/json")),
            1 => Just(Some("text/plain")),
            1 => Just(Some("application/json; charset=latin1")),
            1 => Just(None),
        ],
        body(),
        prop_oneof![
            6 => Just(Auth::Root),
            2 => Just(Auth::ProjectWriter),
            1 => Just(Auth::ProjectAuditor),
            1 => Just(Auth::Garbage),
            1 => Just(Auth::None),
        ],
    )
        .prop_map(
            |(route, other_method, params, known_query, unknown_query, headers, content_type, body, auth)| Case {
                route,
                other_method,
                params,
                known_query,
                unknown_query,
                headers,
                content_type,
                body,
                auth,
            },
        )
}

/// `text`, cut to a readable length for failure messages.
fn short(text: &str) -> String {
    if text.chars().count() <= 300 {
        return text.to_string();
    }
    let head: String = text.chars().take(300).collect();
    format!("{head}… ({} characters)", text.chars().count())
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The document's routes, with their query parameter names.
async fn routes(app: &TestApp) -> Vec<Route> {
    let spec: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let mut routes = Vec::new();
    for (template, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let params = operation["parameters"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter(|p| p["in"] == "query")
                        .filter_map(|p| p["name"].as_str())
                        .filter(|name| *name != "wait_ms")
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            routes.push(Route {
                method: method.to_uppercase(),
                template: template.clone(),
                params,
            });
        }
    }
    routes
}

struct Fixture {
    app: TestApp,
    routes: Vec<Route>,
    technology: String,
    job: String,
    writer: String,
    auditor: String,
    client: Client,
    /// Statuses seen, per route: printed at the end to show what the run reached.
    seen: std::sync::Mutex<std::collections::BTreeMap<(String, u16), u32>>,
}

impl Fixture {
    async fn send(&self, case: &Case) -> Result<(), String> {
        let route = &self.routes[case.route];
        let method = case.other_method.unwrap_or(route.method.as_str());
        let mut path = route.template.clone();
        let mut slots = case.params.iter();
        while let Some(start) = path.find('{') {
            let end = start + path[start..].find('}').unwrap();
            let name = &path[start + 1..end];
            let real = if route.template.contains("technolog") {
                self.technology.clone()
            } else if name == "id" && route.template.starts_with("/api/v1/keys") {
                "0123456789abcdef".to_string()
            } else {
                self.job.clone()
            };
            let value = slots.next().cloned().flatten().unwrap_or(real);
            path.replace_range(start..=end, &encode(&value));
        }
        let mut query: Vec<String> = case
            .known_query
            .iter()
            .filter(|_| !route.params.is_empty())
            .map(|(i, v)| format!("{}={}", route.params[i % route.params.len()], encode(v)))
            .collect();
        query.extend(
            case.unknown_query
                .iter()
                .filter(|(k, _)| k != "wait_ms")
                .map(|(k, v)| format!("{k}={}", encode(v))),
        );
        let url = if query.is_empty() {
            self.app.url(&path)
        } else {
            format!("{}?{}", self.app.url(&path), query.join("&"))
        };
        let mut request = self
            .client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &url);
        request = match case.auth {
            Auth::Root => request.bearer_auth(&self.app.admin_key),
            Auth::ProjectWriter => request.bearer_auth(&self.writer),
            Auth::ProjectAuditor => request.bearer_auth(&self.auditor),
            Auth::Garbage => request.header("authorization", "Bearer cc_zz_' OR 1=1"),
            Auth::None => request,
        };
        for (name, value) in &case.headers {
            // Well-formed positions may wait and answer 503 by design (module docs).
            if *name == "x-cc-min-position" && value.len() == 32 {
                continue;
            }
            request = request.header(*name, value.as_str());
        }
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        request = match &case.body {
            Body::None => request,
            Body::Json(value) => request.body(value.to_string()),
            Body::Raw(bytes) => request.body(bytes.clone()),
        };
        let before = self.store_state().await;
        let url = short(&url);
        let response = match request.send().await {
            Ok(response) => response,
            // The client cannot even form the request (a URI over 64 KiB): nothing to test.
            Err(err) if err.is_builder() => return Ok(()),
            Err(err) => return Err(format!("{method} {url}: no response ({err})")),
        };
        let status = response.status();
        *self
            .seen
            .lock()
            .unwrap()
            .entry((format!("{method} {}", route.template), status.as_u16()))
            .or_default() += 1;
        let text = short(&response.text().await.unwrap_or_default());
        if status.is_server_error() {
            return Err(format!("{method} {url} → {status}: {text}"));
        }
        if !status.is_success() {
            let after = self.store_state().await;
            if before != after {
                return Err(format!(
                    "{method} {url} → {status}, yet the event store changed: {before:?} → {after:?}"
                ));
            }
        }
        Ok(())
    }

    /// Count and newest position of the event store (no worker runs, so only the
    /// request under test can write).
    async fn store_state(&self) -> (i64, Option<i64>) {
        sqlx::query_as("SELECT count(*), max(global_position) FROM events")
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }
}

#[test]
fn hostile_requests_to_every_route_never_5xx_and_refusals_never_write() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fixture = runtime.block_on(async {
        let app = spawn_app().await;
        let routes = routes(&app).await;
        assert!(routes.len() >= 30, "the document lists every route");
        let technology: Value = app.create_technology("Fuzzed").await;
        let job: Value = app.create_job().await;
        let writer = app.key(Some(1), "writer").await;
        let auditor = app.key(Some(1), "auditor").await;
        Fixture {
            routes,
            technology: technology["id"].as_str().unwrap().to_string(),
            job: job["id"].as_str().unwrap().to_string(),
            writer,
            auditor,
            // A fresh connection per request: a refused upload may close its connection
            // early, and a pooled client would then send the next request into it.
            client: Client::builder()
                .timeout(Duration::from_secs(20))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            app,
            seen: Default::default(),
        }
    });
    let cases: u32 = std::env::var("CC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let routes = fixture.routes.len();
    let outcome = runner.run(&case(routes), |case| {
        runtime
            .block_on(fixture.send(&case))
            .map_err(TestCaseError::fail)
    });
    for ((route, status), n) in fixture.seen.lock().unwrap().iter() {
        eprintln!("{route:<50} {status} × {n}");
    }
    let Fixture { app, .. } = fixture;
    runtime.block_on(app.stop());
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
