//! Every route of the router answers each key role and project as the matrix says.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{job, technology, FOREIGN, OWN};
use crate::helpers::{assert_problem, key_id, spawn_app, TestApp};

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoKey,
    BadKey,
    Revoked,
    Expired,
    Reader,
    Writer,
    Auditor,
    Admin,
    /// A deployment-wide admin key.
    Root,
}

const CALLERS: [Caller; 9] = [
    Caller::NoKey,
    Caller::BadKey,
    Caller::Revoked,
    Caller::Expired,
    Caller::Reader,
    Caller::Writer,
    Caller::Auditor,
    Caller::Admin,
    Caller::Root,
];

/// Who a route is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Public,
    Read,
    Write,
    Audit,
    Admin,
    Root,
}

/// What names the project a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// Nothing (operations, the project list, the multiplexed socket).
    Nothing,
    /// `?project_id=` (lists): another project's is filtered away, not refused.
    Query,
    /// A technology in the path.
    Technology,
    /// A job in the path.
    Job,
    /// `project_id` in the body of a create.
    Body,
    /// A key in the path, or `project_id` in a key's body.
    Key,
}

/// One row per route: method, template, who it is for, what names its project, and the
/// status of a good request by a key allowed to make it.
const ROUTES: &[(&str, &str, Need, On, u16)] = &[
    ("GET", "/health/live", Need::Public, On::Nothing, 200),
    ("GET", "/health/ready", Need::Public, On::Nothing, 200),
    ("GET", "/health", Need::Public, On::Nothing, 200),
    ("GET", "/metrics", Need::Public, On::Nothing, 200),
    (
        "GET",
        "/api/v1/openapi.json",
        Need::Public,
        On::Nothing,
        200,
    ),
    ("GET", "/api/v1/technologies", Need::Read, On::Query, 200),
    ("POST", "/api/v1/technologies", Need::Write, On::Body, 201),
    (
        "GET",
        "/api/v1/technologies/{id}",
        Need::Read,
        On::Technology,
        200,
    ),
    (
        "PATCH",
        "/api/v1/technologies/{id}",
        Need::Write,
        On::Technology,
        200,
    ),
    (
        "DELETE",
        "/api/v1/technologies/{id}",
        Need::Write,
        On::Technology,
        204,
    ),
    (
        "GET",
        "/api/v1/technologies/{id}/history",
        Need::Audit,
        On::Technology,
        200,
    ),
    ("GET", "/api/v1/jobs", Need::Read, On::Query, 200),
    ("POST", "/api/v1/jobs", Need::Write, On::Body, 201),
    (
        "GET",
        "/api/v1/jobs/active/list",
        Need::Read,
        On::Query,
        200,
    ),
    (
        "GET",
        "/api/v1/jobs/statistics/summary",
        Need::Read,
        On::Query,
        200,
    ),
    ("GET", "/api/v1/jobs/{id}", Need::Read, On::Job, 200),
    ("PATCH", "/api/v1/jobs/{id}", Need::Write, On::Job, 200),
    ("DELETE", "/api/v1/jobs/{id}", Need::Write, On::Job, 204),
    (
        "GET",
        "/api/v1/jobs/{id}/progress",
        Need::Read,
        On::Job,
        200,
    ),
    // A pending export has no file yet: 409 (another project's job: 404).
    (
        "GET",
        "/api/v1/jobs/{id}/artifact",
        Need::Read,
        On::Job,
        409,
    ),
    (
        "POST",
        "/api/v1/jobs/{id}/dispatch",
        Need::Write,
        On::Job,
        200,
    ),
    (
        "POST",
        "/api/v1/jobs/{id}/cancel",
        Need::Write,
        On::Job,
        200,
    ),
    (
        "GET",
        "/api/v1/jobs/{id}/history",
        Need::Audit,
        On::Job,
        200,
    ),
    ("GET", "/api/v1/jobs/ws/{job_id}", Need::Read, On::Job, 101),
    ("GET", "/api/v1/ws", Need::Read, On::Nothing, 101),
    ("GET", "/api/v1/dashboard/stats", Need::Read, On::Query, 200),
    (
        "GET",
        "/api/v1/dashboard/recent-activity",
        Need::Read,
        On::Query,
        200,
    ),
    ("GET", "/api/v1/events", Need::Audit, On::Query, 200),
    ("GET", "/api/v1/audit/verify", Need::Audit, On::Query, 200),
    ("GET", "/api/v1/projects", Need::Read, On::Nothing, 200),
    ("GET", "/api/v1/session", Need::Read, On::Nothing, 200),
    ("POST", "/api/v1/projects", Need::Root, On::Nothing, 201),
    ("GET", "/api/v1/keys", Need::Admin, On::Nothing, 200),
    ("POST", "/api/v1/keys", Need::Admin, On::Key, 201),
    ("DELETE", "/api/v1/keys/{id}", Need::Admin, On::Key, 200),
];

/// The status the matrix expects.
fn expected(need: Need, on: On, ok: u16, caller: Caller, foreign: bool) -> u16 {
    if need == Need::Public {
        return ok;
    }
    let allowed = match caller {
        Caller::NoKey | Caller::BadKey | Caller::Revoked | Caller::Expired => return 401,
        Caller::Root => true,
        Caller::Admin => need != Need::Root,
        Caller::Reader => need == Need::Read,
        Caller::Writer => matches!(need, Need::Read | Need::Write),
        Caller::Auditor => matches!(need, Need::Read | Need::Audit),
    };
    if !allowed {
        return 403;
    }
    let scoped = caller != Caller::Root;
    if foreign && scoped && !matches!(on, On::Nothing | On::Query) {
        return 404;
    }
    ok
}

/// The keys of the matrix.
struct Keys {
    bad: String,
    revoked: String,
    expired: String,
    reader: String,
    writer: String,
    auditor: String,
    admin: String,
    root: String,
}

impl Keys {
    async fn make(app: &TestApp) -> Self {
        let revoked = app.key(Some(OWN), "admin").await;
        let response = app
            .delete(&format!("/api/v1/keys/{}", key_id(&revoked)))
            .await;
        assert_eq!(response.status(), 200);
        let expired = app.key(Some(OWN), "admin").await;
        sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
            .bind(key_id(&expired))
            .execute(&app.pool)
            .await
            .unwrap();
        // Right shape, unknown id; and a known id with a wrong secret.
        let reader = app.key(Some(OWN), "reader").await;
        let bad = format!("{}_{}", &reader[..19], "0".repeat(64));
        Self {
            bad,
            revoked,
            expired,
            reader,
            writer: app.key(Some(OWN), "writer").await,
            auditor: app.key(Some(OWN), "auditor").await,
            admin: app.key(Some(OWN), "admin").await,
            root: app.key(None, "admin").await,
        }
    }

    fn of(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::NoKey => None,
            Caller::BadKey => Some(&self.bad),
            Caller::Revoked => Some(&self.revoked),
            Caller::Expired => Some(&self.expired),
            Caller::Reader => Some(&self.reader),
            Caller::Writer => Some(&self.writer),
            Caller::Auditor => Some(&self.auditor),
            Caller::Admin => Some(&self.admin),
            Caller::Root => Some(&self.root),
        }
    }
}

/// Long-lived fixtures for reads, per project.
struct Fixtures {
    technology: [String; 2],
    job: [String; 2],
}

/// The path and body of a good request on `template` against `project`, creating
/// whatever a write consumes.
async fn request_for(
    app: &TestApp,
    fixtures: &Fixtures,
    method: &str,
    template: &str,
    project: i64,
) -> (String, Option<Value>) {
    let slot = usize::from(project != OWN);
    let fresh = method != "GET";
    let path = if template.contains("/technologies/{id}") {
        let id = if fresh {
            technology(app, project).await
        } else {
            fixtures.technology[slot].clone()
        };
        template.replace("{id}", &id)
    } else if template.contains("/jobs/{id}") || template.contains("{job_id}") {
        let id = if fresh {
            let id = job(app, project, "noop").await;
            if method == "PATCH" {
                let dispatched = app
                    .post(&format!("/api/v1/jobs/{id}/dispatch"), &json!({}))
                    .await;
                assert_eq!(dispatched.status(), 200);
            }
            id
        } else {
            fixtures.job[slot].clone()
        };
        template.replace("{id}", &id).replace("{job_id}", &id)
    } else if template == "/api/v1/keys/{id}" {
        let key = app.key(Some(project), "reader").await;
        template.replace("{id}", &key_id(&key))
    } else if template.contains('{') {
        panic!("no fixture for {template}: add one");
    } else if method == "GET" && template.starts_with("/api/v1/") {
        format!("{template}?project_id={project}")
    } else {
        template.to_string()
    };
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let body = match (method, template) {
        ("POST", "/api/v1/technologies") => {
            Some(json!({"project_id": project, "title": format!("matrix {unique}")}))
        }
        ("POST", "/api/v1/jobs") => Some(json!({"project_id": project, "job_type": "noop"})),
        ("POST", "/api/v1/projects") => Some(json!({"name": format!("matrix {unique}")})),
        ("POST", "/api/v1/keys") => Some(json!({"project_id": project, "role": "reader"})),
        ("PATCH", "/api/v1/technologies/{id}") => Some(json!({"description": "matrix"})),
        ("PATCH", "/api/v1/jobs/{id}") => Some(json!({"status": "running"})),
        ("POST", _) => Some(json!({})),
        _ => None,
    };
    (path, body)
}

/// Sends the request (a WebSocket handshake for socket routes); returns the status.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> u16 {
    if path.starts_with("/api/v1/ws") || path.starts_with("/api/v1/jobs/ws/") {
        let url = format!("{}{path}", app.base.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        if let Some(key) = key {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        return match tokio_tungstenite::connect_async(request).await {
            Ok(_) => 101,
            Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(err) => panic!("socket {path}: {err}"),
        };
    }
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut request = client.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        app.url(path),
    );
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if matches!(status, 401 | 403 | 404 | 429) {
        // Refusals are problem documents too, naming no field.
        assert_problem(response, status, "").await;
    }
    status
}

#[tokio::test]
async fn every_route_answers_each_key_role_and_project_as_the_matrix_says() {
    let app = spawn_app().await;

    // The router's route list (every route is registered with its documentation) must
    // match the matrix row for row: a new route without a row fails here.
    let spec: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    let rows: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, ..)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        routes.difference(&rows).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes without a matrix row"
    );
    assert_eq!(
        rows.difference(&routes).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "matrix rows without a route"
    );

    let keys = Keys::make(&app).await;
    let fixtures = Fixtures {
        technology: [technology(&app, OWN).await, technology(&app, FOREIGN).await],
        job: [
            job(&app, OWN, "export").await,
            job(&app, FOREIGN, "export").await,
        ],
    };
    app.wait_caught_up().await;

    let mut failures = Vec::new();
    let mut cells = 0;
    for &(method, template, need, on, ok) in ROUTES {
        for caller in CALLERS {
            let anonymous = matches!(
                caller,
                Caller::NoKey | Caller::BadKey | Caller::Revoked | Caller::Expired
            );
            let targets: &[bool] = if anonymous { &[false] } else { &[false, true] };
            for &foreign in targets {
                let project = if foreign { FOREIGN } else { OWN };
                let (path, body) = request_for(&app, &fixtures, method, template, project).await;
                let want = expected(need, on, ok, caller, foreign);
                let got = send(&app, method, &path, body, keys.of(caller)).await;
                cells += 1;
                if got != want {
                    failures.push(format!(
                        "{method} {template} as {caller:?} on {}: got {got}, want {want}",
                        if foreign {
                            "another project"
                        } else {
                            "its project"
                        }
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn head_requests_follow_the_rules_of_get() {
    let app = spawn_app().await;
    let client = Client::new();
    let head = |path: &str, key: Option<&str>| {
        let mut request = client.head(app.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(head("/health/live", None).await, 200);
    assert_eq!(head("/api/v1/jobs", None).await, 401);
    let reader = app.key(Some(OWN), "reader").await;
    assert_eq!(head("/api/v1/jobs", Some(&reader)).await, 200);
    assert_eq!(head("/api/v1/events", Some(&reader)).await, 403);
}
