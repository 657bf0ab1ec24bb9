//! API keys, roles and project isolation (issue 8): a matrix over every route of the
//! router, cross-project isolation, revocation of sockets, and the request limits.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{assert_problem, key_id, spawn_app, spawn_app_with, TestApp};

/// The project the scoped keys belong to, and another one.
const OWN: i64 = 1;
const FOREIGN: i64 = 2;

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

async fn create(app: &TestApp, path: &str, body: Value) -> String {
    let response = app.post(path, &body).await;
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

async fn technology(app: &TestApp, project: i64) -> String {
    let title = format!("matrix {}", uuid::Uuid::now_v7());
    create(
        app,
        "/api/v1/technologies",
        json!({"project_id": project, "title": title}),
    )
    .await
}

async fn job(app: &TestApp, project: i64, job_type: &str) -> String {
    let parameters = if job_type == "export" {
        json!({"format": "json"})
    } else {
        json!({})
    };
    create(
        app,
        "/api/v1/jobs",
        json!({"project_id": project, "job_type": job_type, "parameters": parameters}),
    )
    .await
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
async fn a_project_writer_cannot_reach_another_project_by_any_path() {
    let app = spawn_app_with(|args| args.no_workers = false).await;
    let writer_a = app.client_with(&app.key(Some(OWN), "writer").await);

    // Project B's data, made by a deployment-wide admin: a technology and a finished export.
    let tech_b = technology(&app, FOREIGN).await;
    let export_b = job(&app, FOREIGN, "export").await;
    assert_eq!(
        app.post(&format!("/api/v1/jobs/{export_b}/dispatch"), &json!({}))
            .await
            .status(),
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job: Value = app
            .get(&format!("/api/v1/jobs/{export_b}"))
            .await
            .json()
            .await
            .unwrap();
        if job["status"] == "completed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "export did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.get(&format!("/api/v1/jobs/{export_b}/artifact"))
            .await
            .status(),
        200,
        "the artifact exists"
    );
    // A's own technology, written by A's writer without naming a project.
    let response = writer_a
        .post(app.url("/api/v1/technologies"))
        .json(&json!({"title": "Ours"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let ours: Value = response.json().await.unwrap();
    assert_eq!(ours["project_id"], OWN);
    app.wait_caught_up().await;

    let get = |path: String| {
        let client = writer_a.clone();
        let url = app.url(&path);
        async move { client.get(url).send().await.unwrap() }
    };
    // Reads, history, artifact: 404, as if B's things did not exist.
    for path in [
        format!("/api/v1/technologies/{tech_b}"),
        format!("/api/v1/jobs/{export_b}"),
        format!("/api/v1/jobs/{export_b}/progress"),
        format!("/api/v1/jobs/{export_b}/artifact"),
    ] {
        assert_problem(get(path).await, 404, "").await;
    }
    // Lists and summaries are A's whatever project_id says.
    for path in [
        "/api/v1/technologies?project_id=2",
        "/api/v1/jobs?project_id=2",
        "/api/v1/jobs/active/list?project_id=2",
    ] {
        let body: Value = get(path.to_string()).await.json().await.unwrap();
        let text = body.to_string();
        assert!(
            !text.contains(&tech_b) && !text.contains(&export_b),
            "{path}: {text}"
        );
    }
    let technologies: Value = get("/api/v1/technologies?project_id=2".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        technologies["total"], 1,
        "only A's technology: {technologies}"
    );
    let stats: Value = get("/api/v1/dashboard/stats?project_id=2".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["project_id"], OWN, "{stats}");
    // Writes: 404, and nothing is written.
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let refused = [
        writer_a
            .patch(app.url(&format!("/api/v1/technologies/{tech_b}")))
            .json(&json!({"description": "mine now"})),
        writer_a.delete(app.url(&format!("/api/v1/technologies/{tech_b}"))),
        writer_a
            .post(app.url(&format!("/api/v1/jobs/{export_b}/cancel")))
            .json(&json!({})),
        writer_a
            .post(app.url("/api/v1/technologies"))
            .json(&json!({"project_id": FOREIGN, "title": "Planted"})),
        writer_a
            .post(app.url("/api/v1/jobs"))
            .json(&json!({"project_id": FOREIGN, "job_type": "noop"})),
        writer_a.post(app.url("/api/v1/jobs")).json(
            &json!({"job_type": "batch_export", "parameters": {"project_ids": [OWN, FOREIGN], "format": "json"}}),
        ),
    ];
    for request in refused {
        assert_problem(request.send().await.unwrap(), 404, "").await;
    }
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events_before, events_after);
    // History, the feed and verification need an auditor; A's auditor sees only A.
    assert_problem(
        get(format!("/api/v1/technologies/{tech_b}/history")).await,
        403,
        "",
    )
    .await;
    let auditor_a = app.client_with(&app.key(Some(OWN), "auditor").await);
    let history = auditor_a
        .get(app.url(&format!("/api/v1/technologies/{tech_b}/history")))
        .send()
        .await
        .unwrap();
    assert_problem(history, 404, "").await;
    let feed: Value = auditor_a
        .get(app.url("/api/v1/events?project_id=2&limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let feed_events = feed["events"].as_array().unwrap();
    assert!(!feed_events.is_empty());
    assert!(
        feed_events
            .iter()
            .all(|e| e["metadata"]["project_id"].as_str() == Some("1")),
        "feed leaks: {feed}"
    );
    let export = auditor_a
        .get(app.url("/api/v1/events?project_id=2"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!export.is_empty() && !export.contains(&tech_b) && !export.contains(&export_b));
    // Time travel is history too: a reader or writer may not, an auditor may (on A only).
    let ours_id = ours["id"].as_str().unwrap();
    assert_problem(
        get(format!("/api/v1/technologies/{ours_id}?as_of_version=1")).await,
        403,
        "",
    )
    .await;
    let travelled = auditor_a
        .get(app.url(&format!("/api/v1/technologies/{ours_id}?as_of_version=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(travelled.status(), 200);

    // Sockets: B's topics are unknown to A, and nothing of B is pushed to A.
    let url = app.ws_url("/api/v1/ws", &app.key(Some(OWN), "reader").await);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for topic in [
        format!("jobs:{FOREIGN}"),
        format!("technologies:{FOREIGN}"),
        format!("job:{export_b}"),
    ] {
        socket
            .send(tungstenite::Message::Text(
                json!({"subscribe": [topic]}).to_string().into(),
            ))
            .await
            .unwrap();
        let reply = next_json(&mut socket).await;
        assert_eq!(reply["type"], "error", "{topic}: {reply}");
    }
    socket
        .send(tungstenite::Message::Text(
            json!({"subscribe": [format!("technologies:{OWN}")]})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "subscribed");
    let job_socket = app.ws_url(
        &format!("/api/v1/jobs/ws/{export_b}"),
        &app.key(Some(OWN), "reader").await,
    );
    match tokio_tungstenite::connect_async(job_socket).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("job socket of another project: {:?}", other.map(|_| ())),
    }
    // A change in B, then one in A: only A's arrives.
    app.patch(
        &format!("/api/v1/technologies/{tech_b}"),
        &json!({"description": "b"}),
    )
    .await;
    writer_a
        .patch(app.url(&format!("/api/v1/technologies/{ours_id}")))
        .json(&json!({"description": "a"}))
        .send()
        .await
        .unwrap();
    let pushed = next_json(&mut socket).await;
    assert_eq!(pushed["id"], ours_id, "{pushed}");
    app.stop().await;
}

/// The next JSON text message, skipping pings.
async fn next_json<S>(socket: &mut S) -> Value
where
    S: futures::Stream<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin,
{
    let deadline = Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout(deadline, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("message");
        if let tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn revoking_a_key_refuses_it_and_closes_its_sockets() {
    let app = spawn_app().await;
    let key = app.key(Some(OWN), "reader").await;
    let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    socket
        .send(tungstenite::Message::Text(
            json!({"subscribe": [format!("jobs:{OWN}")]})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "subscribed");
    let client = app.client_with(&key);
    assert_eq!(
        client
            .get(app.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Revoked through the CLI, as an operator would: another process, announced on NATS.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"))
        .args(["keys", "revoke", &key_id(&key)])
        .env("DATABASE_URL", app.database_url())
        .env("CC_NATS_PREFIX", &app.nats.prefix)
        .env("NATS_URL", crate::helpers::nats_url())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the socket is closed at once");
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1008));
    assert_problem(
        client.get(app.url("/api/v1/jobs")).send().await.unwrap(),
        401,
        "",
    )
    .await;
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|args| {
        args.access.rate_limit_per_second = 2.0;
        args.access.rate_limit_burst = 5;
    })
    .await;
    let key = app.key(Some(OWN), "reader").await;
    let client = app.client_with(&key);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = client.get(app.url("/api/v1/jobs")).send().await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            assert_problem(response, 429, "").await;
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| s.is_success()).count(),
        5,
        "{statuses:?}"
    );
    // Another key has its own bucket; after the wait, the first key is admitted again.
    let other = app.client_with(&app.key(Some(OWN), "reader").await);
    assert_eq!(
        other
            .get(app.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client
            .get(app.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn oversized_deep_and_long_input_is_refused_before_anything_is_written() {
    let app = spawn_app_with(|args| {
        args.max_body_bytes = 4096;
        args.access.max_json_depth = 8;
        args.access.max_json_string_chars = 1000;
    })
    .await;
    let big = json!({"project_id": 1, "title": "Big", "description": "x".repeat(5000)});
    assert_problem(app.post("/api/v1/technologies", &big).await, 413, "body").await;
    let mut deep = json!(1);
    for _ in 0..12 {
        deep = json!([deep]);
    }
    let nested = json!({"project_id": 1, "job_type": "noop", "parameters": {"x": deep}});
    let problem = assert_problem(
        app.post("/api/v1/jobs", &nested).await,
        422,
        "parameters.x[0][0][0][0][0][0]",
    )
    .await;
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("nested deeper than 8"));
    let long = json!({"project_id": 1, "job_type": "noop", "tags": ["y".repeat(1001)]});
    assert_problem(app.post("/api/v1/jobs", &long).await, 422, "tags[0]").await;
    for path in [
        "/api/v1/jobs?limit=1001",
        "/api/v1/technologies?limit=5000",
        "/api/v1/events?limit=1001",
    ] {
        let response = app.get(path).await;
        let status = response.status().as_u16();
        assert!(status == 400 || status == 422, "{path}: {status}");
        assert_problem(response, status, "limit").await;
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_key_has_a_bounded_number_of_sockets() {
    let app = spawn_app_with(|args| args.access.max_sockets_per_key = 2).await;
    let key = app.key(Some(OWN), "reader").await;
    let first = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    let _second = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    match tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("third socket: {:?}", other.map(|_| ())),
    }
    drop(first);
    // The slot comes back once the server sees the first socket gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn projects_and_keys_are_managed_over_http_and_the_cli() {
    let app = spawn_app().await;
    // A deployment-wide admin registers a project; a project admin manages its keys.
    let response = app
        .post("/api/v1/projects", &json!({"name": "Radar North"}))
        .await;
    assert_eq!(response.status(), 201);
    let project: Value = response.json().await.unwrap();
    let id = project["id"].as_i64().unwrap();
    assert_problem(
        app.post("/api/v1/projects", &json!({"name": "radar north"}))
            .await,
        422,
        "name",
    )
    .await;
    let admin = app.client_with(&app.key(Some(id), "admin").await);
    let created: Value = admin
        .post(app.url("/api/v1/keys"))
        .json(&json!({"role": "writer", "name": "ci", "expires_at": "30d"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["project_id"], id);
    let token = created["token"].as_str().unwrap();
    let listed: Value = admin
        .get(app.url("/api/v1/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = listed.to_string();
    assert!(!text.contains(token) && !text.contains("secret"), "{text}");
    assert!(listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["project_id"] == id));
    let projects: Value = admin
        .get(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(projects["projects"].as_array().unwrap().len(), 1);
    // A project admin cannot make a deployment-wide key or register projects.
    assert_problem(
        admin
            .post(app.url("/api/v1/projects"))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap(),
        403,
        "",
    )
    .await;
    assert_problem(
        admin
            .post(app.url("/api/v1/keys"))
            .json(&json!({"role": "owner"}))
            .send()
            .await
            .unwrap(),
        422,
        "role",
    )
    .await;

    // The CLI: create a project, a key, list, and use the key.
    let cli = |args: Vec<String>| {
        let url = app.database_url();
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"))
                .args(args)
                .env("DATABASE_URL", url)
                .output()
                .await
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let project_id: i64 = cli(vec![
        "projects".into(),
        "create".into(),
        "Radar South".into(),
    ])
    .await
    .trim()
    .parse()
    .unwrap();
    let key = cli(vec![
        "keys".into(),
        "create".into(),
        "--project".into(),
        project_id.to_string(),
        "--role".into(),
        "writer".into(),
        "--name".into(),
        "deploy bot".into(),
    ])
    .await;
    let key = key.trim();
    let listing = cli(vec!["keys".into(), "list".into()]).await;
    assert!(
        listing.contains(&key_id(key)) && listing.contains("deploy bot") && !listing.contains(key)
    );
    assert!(cli(vec!["projects".into(), "list".into()])
        .await
        .contains("Radar South"));
    let writer = app.client_with(key);
    let response = writer
        .post(app.url("/api/v1/technologies"))
        .json(&json!({"title": "From the CLI key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["project_id"], project_id);
    // The event names the key as its actor, never the key itself.
    let metadata: Value = sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1")
        .bind(body["id"].as_str().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(metadata["actor"], key_id(key));
    let everything: String =
        sqlx::query_scalar("SELECT string_agg(payload::text || metadata::text, '') FROM events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!everything.contains(key) && !everything.contains(&app.admin_key));
}

#[tokio::test]
async fn serve_prints_one_admin_key_on_first_start_only() {
    let db = crate::helpers::TestDb::new();
    let nats = crate::helpers::nats_url();
    let prefix = format!("cctest_{}", uuid::Uuid::now_v7().simple());
    let data_dir = std::env::temp_dir().join(&prefix);
    let run = |port: u16| {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"))
            .args([
                "serve",
                "--no-workers",
                "--listen-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env("DATABASE_URL", &db.url)
            .env("NATS_URL", &nats)
            .env("CC_NATS_PREFIX", &prefix)
            .env("CC_DATA_DIR", &data_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        (child, stdout)
    };
    let port = free_port();
    let (mut child, stdout) = run(port);
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let key = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(token) = line.split_whitespace().find(|w| is_token(w)) {
                return token.to_string();
            }
        }
        panic!("no key printed");
    })
    .await
    .expect("the key is printed at start");
    let client = Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/keys");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed: Value = loop {
        if let Ok(response) = client.get(&url).bearer_auth(&key).send().await {
            assert_eq!(response.status(), 200);
            break response.json().await.unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed["keys"][0]["role"], "admin");
    assert_eq!(listed["keys"][0]["project_id"], Value::Null);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    child.kill().await.unwrap();

    // A second start prints no key.
    let port = free_port();
    let (mut child, stdout) = run(port);
    let health = format!("http://127.0.0.1:{port}/health/live");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.get(&health).send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
    let mut printed = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::BufReader::new(stdout), &mut printed)
        .await
        .unwrap();
    assert!(!printed.split_whitespace().any(is_token), "{printed}");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&sqlx::PgPool::connect(&db.url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(keys, 1);
    let _ = std::fs::remove_dir_all(&data_dir);
    let client = async_nats::connect(nats).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(commandcenter_event_store::EventStream::new(&prefix).name())
        .await;
}

fn is_token(word: &str) -> bool {
    word.len() == 84 && word.starts_with("cc_")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn ask(socket: &mut Socket, request: Value) -> Value {
    socket
        .send(tungstenite::Message::Text(request.to_string().into()))
        .await
        .unwrap();
    next_json(socket).await
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::test]
async fn socket_subscriptions_are_counted_per_key_across_its_sockets() {
    let app = spawn_app_with(|args| args.access.max_subscriptions_per_key = 3).await;
    let key = app.key(Some(OWN), "reader").await;
    let (mut first, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    let (mut second, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    let jobs = format!("jobs:{OWN}");
    let technologies = format!("technologies:{OWN}");
    let reply = ask(&mut first, json!({"subscribe": [jobs, technologies]})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    // Re-subscribing to what a socket holds costs nothing; swapping a topic for itself
    // frees nothing.
    let reply = ask(
        &mut first,
        json!({"subscribe": [jobs], "unsubscribe": [jobs]}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let job = app.create_job().await;
    let job_topic = format!("job:{}", job["id"].as_str().unwrap());
    let reply = ask(&mut second, json!({"subscribe": [job_topic]})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    // The key's fourth subscription, on either socket, is refused.
    let reply = ask(&mut second, json!({"subscribe": [jobs]})).await;
    assert_eq!(reply["type"], "error", "{reply}");
    let reply = ask(
        &mut first,
        json!({"subscribe": [jobs, technologies, job_topic]}),
    )
    .await;
    assert_eq!(reply["type"], "error", "{reply}");
    // Giving one back makes room; closing a socket gives back all it held.
    let reply = ask(&mut first, json!({"unsubscribe": [technologies]})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let reply = ask(&mut second, json!({"subscribe": [technologies]})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = ask(&mut second, json!({"subscribe": [jobs]})).await;
        if reply["type"] == "subscribed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
