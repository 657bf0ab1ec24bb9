//! Test harness: every test gets its own PostgreSQL database (named by a UUID, dropped
//! when the test ends, pass or fail) and its own NATS subject prefix, and talks to a real
//! service started on port 0.

use std::time::Duration;

use commandcenter::config::{
    AccessArgs, AuditKeyArgs, DatabaseArgs, ListenArgs, NatsArgs, QueryArgs, ServeArgs, WorkerArgs,
};

/// Projects every test service has registered (ids 1 to this).
pub const TEST_PROJECTS: i64 = 8;

/// The audit key test services sign checkpoints with.
pub const AUDIT_KEY: &str = "test-audit-key";
use commandcenter::startup::Application;
use commandcenter_relay::EventStream;
use reqwest::{Client, Response};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The PostgreSQL server tests create their databases on.
pub fn server_url() -> String {
    std::env::var("CC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The `host:port` of the server at `server_url` (`postgres://user@host:port`): where a
/// test's TCP proxy connects.
pub fn server_address(server_url: &str) -> String {
    server_url
        .rsplit('@')
        .next()
        .expect("split yields one part")
        .trim_start_matches("postgres://")
        .to_string()
}

/// `database_url` with its host and port replaced by `address` (a test's TCP proxy).
pub fn url_through(database_url: &str, address: std::net::SocketAddr) -> String {
    let (scheme_user, rest) = database_url.split_once('@').expect("user@host");
    let (_, path) = rest.split_once('/').expect("a database");
    format!("{scheme_user}@{address}/{path}")
}

/// The NATS server tests use.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A database that is dropped, with every connection to it, when this value is dropped.
pub struct TestDb {
    name: String,
    server: String,
    /// Connection string of the test database.
    pub url: String,
}

impl TestDb {
    /// Names a fresh database (created by the service on start).
    pub fn new() -> Self {
        Self::on(&server_url())
    }

    /// Names a fresh database on the server at `server` (a URL without a database).
    pub fn on(server: &str) -> Self {
        let name = format!("cc_test_{}", Uuid::now_v7().simple());
        let url = format!("{server}/{name}");
        Self {
            name,
            server: server.to_string(),
            url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = format!("{}/postgres", self.server);
        // Drop runs inside the test's runtime, so the cleanup gets a thread and runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let pool = PgPool::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&pool)
                    .await?;
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        if let Ok(Err(err)) = cleanup.join() {
            eprintln!("could not drop test database {}: {err}", self.name);
        }
    }
}

/// A NATS subject prefix whose stream (with its consumers) is deleted when this value is
/// dropped.
pub struct TestNats {
    /// The prefix.
    pub prefix: String,
}

impl TestNats {
    fn new() -> Self {
        Self {
            prefix: format!("cctest_{}", Uuid::now_v7().simple()),
        }
    }

    /// The stream of this prefix.
    pub fn stream(&self) -> EventStream {
        EventStream::new(&self.prefix)
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let name = self.stream().name();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = async_nats::connect(nats_url()).await?;
                let js = async_nats::jetstream::new(client);
                // Absent when the test never started a relay or projector.
                let _ = js.delete_stream(&name).await;
                // The audit witness, when the test took checkpoints.
                let _ = js.delete_stream(name.replace("_EVENTS", "_AUDIT")).await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        });
        if let Ok(Err(err)) = cleanup.join() {
            eprintln!("could not delete test stream: {err}");
        }
    }
}

/// A running service with its own database.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// HTTP client, sending the deployment-wide admin key made on first start.
    pub client: Client,
    /// That key.
    pub admin_key: String,
    /// A pool on the test database, for assertions and for holding transactions open.
    pub pool: PgPool,
    /// This test's NATS prefix and stream.
    pub nats: TestNats,
    data_dir: std::path::PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Declared last: dropped after the pool and server are gone.
    _db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The configuration test services start with, on database `database_url`, NATS server
/// `nats_url` and subject prefix `prefix`.
pub fn serve_args(database_url: &str, nats_url: &str, prefix: &str) -> ServeArgs {
    ServeArgs {
        database: DatabaseArgs {
            database_url: database_url.to_string(),
        },
        nats: NatsArgs {
            nats_url: nats_url.to_string(),
            nats_prefix: prefix.to_string(),
            nats_stream_replicas: 1,
        },
        listen_addr: "127.0.0.1:0".parse().expect("valid address"),
        listen: ListenArgs {
            max_connections: 10_000,
            header_read_timeout_ms: 10_000,
        },
        checkpoint_every: None,
        data_dir: std::env::temp_dir().join(prefix),
        max_body_bytes: 64 * 1024,
        db_max_connections: 20,
        idle_tx_timeout_ms: 30_000,
        query: QueryArgs {
            read_database_urls: Vec::new(),
            min_position_wait_ms: 2000,
            cache_entries: 1000,
            socket_queue: 64,
            read_statement_timeout_ms: 10_000,
            expensive_reads: 0,
        },
        ready_max_lag_events: 10_000,
        no_relay: false,
        no_projectors: false,
        // Tests that exercise workers turn them on; the others drive jobs through PATCH.
        no_workers: true,
        worker: WorkerArgs::standard(),
        audit: AuditKeyArgs {
            audit_key: Some(AUDIT_KEY.into()),
        },
        // Tests send bursts from one key; the rate-limit test turns limiting on.
        access: AccessArgs {
            rate_limit_per_second: 0.0,
            ..AccessArgs::standard()
        },
        demo: false,
    }
}

/// Starts the service on a fresh database and a fresh NATS prefix.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with a chance to adjust the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn_app_on(&server_url(), &nats_url(), adjust).await
}

/// Like [`spawn_app_with`], on the PostgreSQL server at `server` (a URL without a
/// database) and the NATS server at `nats` (private servers a failure test restarts).
pub async fn spawn_app_on(
    server: &str,
    nats: &str,
    adjust: impl FnOnce(&mut ServeArgs),
) -> TestApp {
    let db = TestDb::on(server);
    let nats_server = nats.to_string();
    let nats = TestNats::new();
    let data_dir = std::env::temp_dir().join(&nats.prefix);
    let mut args = serve_args(&db.url, &nats_server, &nats.prefix);
    args.data_dir = data_dir.clone();
    adjust(&mut args);
    let app = Application::build(&args).await.expect("service starts");
    let admin_key = app
        .first_admin_key()
        .expect("a fresh database gets a first admin key")
        .token
        .clone();
    let base = format!("http://{}", app.local_addr().expect("bound"));
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    let pool = PgPool::connect(&db.url).await.expect("test pool");
    sqlx::query(
        "INSERT INTO projects (id, name) SELECT g, 'project ' || g FROM generate_series(1, $1) g \
         ON CONFLICT DO NOTHING",
    )
    .bind(TEST_PROJECTS)
    .execute(&pool)
    .await
    .expect("test projects registered");
    sqlx::query("SELECT cc_register_event_projects()")
        .execute(&pool)
        .await
        .expect("project ids move on");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {admin_key}").parse().expect("header value"),
    );
    TestApp {
        base,
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .expect("client"),
        admin_key,
        pool,
        nats,
        data_dir,
        shutdown: Some(shutdown),
        server: Some(server),
        _db: db,
    }
}

impl TestApp {
    /// Stops the service and waits for its background tasks, so nothing recreates the
    /// test's stream while it is being deleted. Tests on a multi-threaded runtime call
    /// this; on the default single-threaded one, dropping the app is enough.
    pub async fn stop(mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
    }

    /// The prefix of this deployment's core NATS subjects (view changes, wake-ups).
    pub async fn core_prefix(&self) -> String {
        commandcenter_event_store::Deployment::load(&self.pool)
            .await
            .expect("deployment id")
            .core_prefix(&self.nats.prefix)
    }

    /// Connection string of this test's database.
    pub fn database_url(&self) -> String {
        self._db.url.clone()
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A WebSocket URL for `path`, carrying `key` as `access_token` (as a browser would).
    pub fn ws_url(&self, path: &str, key: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!(
            "{}{path}{separator}access_token={key}",
            self.base.replace("http://", "ws://")
        )
    }

    /// Creates a key for `project` (or deployment-wide) with `role`; returns its token.
    pub async fn key(&self, project: Option<i64>, role: &str) -> String {
        commandcenter_auth::KeyStore::new(self.pool.clone())
            .create(project, role.parse().expect("role"), "test", None)
            .await
            .expect("key created")
            .token
    }

    /// A client sending `key`.
    pub fn client_with(&self, key: &str) -> Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("header value"),
        );
        Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .expect("client")
    }

    /// POSTs JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// PATCHes JSON.
    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// GETs.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// DELETEs.
    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a technology in project 1 and returns its body.
    pub async fn create_technology(&self, title: &str) -> Value {
        let response = self
            .post(
                "/api/v1/technologies",
                &json!({ "project_id": 1, "title": title }),
            )
            .await;
        assert_eq!(response.status(), 201, "create {title}");
        response.json().await.expect("json body")
    }

    /// Creates a `noop` job in project 1 and returns its body.
    pub async fn create_job(&self) -> Value {
        let response = self
            .post(
                "/api/v1/jobs",
                &json!({ "project_id": 1, "job_type": "noop" }),
            )
            .await;
        assert_eq!(response.status(), 201);
        response.json().await.expect("json body")
    }

    /// Every event in the store, as `(aggregate_id, sequence)` in global-position order.
    pub async fn stored_events(&self) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT aggregate_id, sequence FROM events ORDER BY global_position")
            .fetch_all(&self.pool)
            .await
            .expect("events readable")
    }

    /// The gap-safe feed after `after`, read page by page through the API until it holds
    /// at least `expected` events (other tests' open transactions anywhere in the cluster
    /// hold the feed back for a moment: it delays, never loses).
    pub async fn feed_until(&self, after: &str, expected: usize) -> Vec<Value> {
        let mut after = after.to_string();
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while all.len() < expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "feed stalled at {} of {expected}",
                all.len()
            );
            let page: Value = self
                .get(&format!("/api/v1/events?after={after}&limit=7"))
                .await
                .json()
                .await
                .expect("feed page");
            let events = page["events"].as_array().expect("events").clone();
            if events.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            after = page["next_after"].as_str().expect("next_after").to_string();
            all.extend(events);
        }
        // Nothing beyond what was expected.
        let rest: Value = self
            .get(&format!("/api/v1/events?after={after}"))
            .await
            .json()
            .await
            .expect("feed page");
        all.extend(rest["events"].as_array().expect("events").iter().cloned());
        all
    }
}

impl TestApp {
    /// Waits until the relay and every projection have processed every committed event.
    pub async fn wait_caught_up(&self) -> commandcenter_projections::StatusReport {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let report = commandcenter_projections::status(&self.pool, &self.nats.stream())
                .await
                .expect("status readable");
            let behind = std::iter::once(&report.relay)
                .chain(&report.projections)
                .any(|lag| lag.lag_events > 0);
            if !behind {
                return report;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not caught up: {report:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every message of this test's stream, decoded, in stream order.
    pub async fn stream_events(&self) -> Vec<commandcenter_event_store::StoredEvent> {
        self.stream_events_at(&nats_url()).await
    }

    /// [`Self::stream_events`] on the NATS server at `url`.
    pub async fn stream_events_at(&self, url: &str) -> Vec<commandcenter_event_store::StoredEvent> {
        let client = async_nats::connect(url).await.expect("nats");
        crate::oracle::read_stream(client, &self.nats.stream().name()).await
    }
}

/// The public id of a key token (`cc_<id>_<secret>`), as recorded in `actor`.
pub fn key_id(token: &str) -> String {
    token
        .strip_prefix("cc_")
        .and_then(|rest| rest.split('_').next())
        .expect("a key token")
        .to_string()
}

/// Asserts `response` is a problem document with `status` naming `field` (`""`: naming
/// none); returns it.
pub async fn assert_problem(response: Response, status: u16, field: &str) -> Value {
    assert_eq!(response.status(), status, "status for field {field}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    if field.is_empty() {
        assert!(
            body.get("field").is_none(),
            "problem names no field: {body}"
        );
    } else {
        assert_eq!(body["field"], field, "problem: {body}");
    }
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

/// Waits until no session of `pool`'s database but this one is inside a transaction that
/// wrote (commands finishing on their own tasks, a killed process's session being ended
/// by the server); fails after 20 s.
pub async fn wait_until_no_transaction_is_open(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
               AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if busy == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{busy} transaction(s) still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every aggregate's stored events: sequences 1..n with no gap, and the whole hash chain
/// intact.
pub async fn assert_store_consistent(pool: &PgPool) {
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT sequence, row_number() OVER \
             (PARTITION BY aggregate_type, aggregate_id ORDER BY sequence) AS n FROM events) s \
          WHERE sequence <> n",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(gaps, 0, "sequences without gaps");
    let report = commandcenter_event_store::audit::verify(
        pool,
        &commandcenter_event_store::audit::VerifyScope::default(),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.broken_count, 0, "hash chain intact");
}

/// The technology `id`'s event at `version` is stored, at `position`.
pub async fn assert_stored_at(
    pool: &PgPool,
    id: &str,
    version: i64,
    position: commandcenter_event_store::Position,
) {
    let (tx_text, global_position): (String, i64) = sqlx::query_as(
        "SELECT tx_id::text, global_position FROM events \
          WHERE aggregate_type = 'technology' AND aggregate_id = $1 AND sequence = $2",
    )
    .bind(id)
    .bind(version)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|err| panic!("{id} v{version} answered but not stored: {err}"));
    assert_eq!(
        position,
        commandcenter_event_store::Position::new(tx_text.parse().unwrap(), global_position),
        "{id} v{version}'s answered position"
    );
}
