//! The production topology on loopback (issue 15), started by `scripts/cluster.sh` itself
//! (a private instance: its own directory and ports): a PostgreSQL primary with a
//! streaming hot-standby replica, a 3-node NATS JetStream cluster holding the event
//! stream in 3 copies, two API processes reading from the replica, two relays, two
//! projectors and two workers. One test drives the scenarios in turn on one cluster
//! (starting it costs ~10 s), each naming itself in its assertions and printing its
//! figures as `FIGURE …` lines (`cargo test --test api cluster:: -- --nocapture`):
//!
//! 1. read-your-writes with the replica's replay paused: `X-CC-Min-Position` answers from
//!    the primary after the bound, reads without it stay on the (stale) replica, the lag
//!    shows in `/metrics`, `projections status` and `cluster.sh status`; resumed, the
//!    replica serves again;
//! 2. the replica stopped under read load: reads fall back to the primary with no 5xx
//!    after an API's first failed read, and go back to the replica once it is restarted;
//! 3. the NATS node leading the stream killed (SIGKILL) under write load: nothing lost or
//!    doubled in the stream, projections and workers continue, every dispatched job
//!    completes once, both APIs' sockets keep receiving pushes; restarted, it rejoins;
//! 4. a command to API 1 pushed to a socket on API 2: latency from the 2xx to the push;
//! 5. the primary restarted (fast, then immediate) under write load: clean 503s, no
//!    request past the timeout, every process recovers alone, every 2xx's events stored;
//! 6. the active relay and the active projector SIGKILLed: the standby takes over
//!    within 2 s, nothing lost or doubled.
//!
//! `CC_CLUSTER_SCENARIOS=1,2` runs only those (development); the default is all.
//!
//! A test target of its own (`cargo test --test cluster`), so it never runs beside the
//! `api` tests: its timings (failover within 2 s, push latency) are measured on a machine
//! that is not also running a hundred other tests.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use commandcenter_event_store::{read_feed, Position, StoredEvent};
use commandcenter_relay::EventStream;
use futures::{SinkExt, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Client;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[path = "../shared/oracle.rs"]
mod oracle;

use oracle::{assert_counts_match_views_on, lock_holders, read_stream, wait_views_equal_store};

/// What the scripts' processes get on top of their defaults.
const PROCESS_ENV: &[(&str, &str)] = &[
    ("CC_MIN_POSITION_WAIT_MS", "1000"),
    ("CC_REQUEST_TIMEOUT_MS", "5000"),
    ("CC_JOB_LEASE_SECONDS", "5"),
    ("CC_JOB_HEARTBEAT_MS", "500"),
    ("CC_LEASE_SWEEP_MS", "500"),
    // One key drives the whole load: no per-key rate limit.
    ("CC_RATE_LIMIT_PER_SECOND", "0"),
    ("RUST_LOG", "warn"),
];

/// The request timeout set above, in milliseconds.
const REQUEST_TIMEOUT_MS: u64 = 5000;

// ---------------------------------------------------------------- the cluster

/// A cluster started by `scripts/cluster.sh up`, taken down (every process it started,
/// and its directory) when dropped.
struct Cluster {
    dir: PathBuf,
    base: u16,
    client: Client,
    apis: Vec<String>,
    monitors: Vec<String>,
    nats_urls: Vec<String>,
    key: String,
    primary: PgPool,
    replica_url: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh")
}

/// A first port with the next 50 free, below the kernel's ephemeral range (from 32768):
/// a port in that range can be taken at any moment as the source of an outgoing
/// connection (one node's route to another), and the server meant for it fails to bind.
fn port_base() -> u16 {
    for _ in 0..50 {
        let base = 20_000 + (uuid::Uuid::now_v7().as_u128() % 120) as u16 * 100;
        let free = (base..base + 50).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no range of 50 free ports");
}

impl Cluster {
    async fn up() -> Self {
        let dir =
            std::env::temp_dir().join(format!("cc-cluster-{}", uuid::Uuid::now_v7().simple()));
        let base = port_base();
        let mut cluster = Self {
            dir,
            base,
            client: Client::new(),
            apis: Vec::new(),
            monitors: Vec::new(),
            nats_urls: Vec::new(),
            key: String::new(),
            primary: PgPool::connect_lazy("postgres://localhost/none").expect("lazy pool"),
            replica_url: String::new(),
        };
        let started = Instant::now();
        cluster.run(&["up"]);
        let env: HashMap<String, String> = cluster
            .run(&["env"])
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let list = |k: &str| -> Vec<String> { env[k].split(',').map(str::to_string).collect() };
        cluster.apis = list("API_URLS");
        cluster.monitors = list("NATS_MONITOR_URLS");
        cluster.nats_urls = list("NATS_URL");
        cluster.key = env["CC_API_KEY"].clone();
        cluster.replica_url = env["READ_DATABASE_URLS"].clone();
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", cluster.key)).expect("header"),
        );
        cluster.client = Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        cluster.primary = PgPool::connect(&env["DATABASE_URL"])
            .await
            .expect("primary");
        println!(
            "FIGURE cluster up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for name in ["p1", "p2", "p3"] {
            let response = cluster
                .client
                .post(format!("{}/api/v1/projects", cluster.apis[0]))
                .json(&json!({"name": name}))
                .send()
                .await
                .expect("project");
            assert_eq!(response.status(), 201, "project {name} created");
        }
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(script());
        command
            .args(args)
            .env("CC_CLUSTER_DIR", &self.dir)
            .env("CC_CLUSTER_PORT_BASE", self.base.to_string())
            .env("CC_BIN", env!("CARGO_BIN_EXE_commandcenter"))
            .env("CC_CLUSTER_STREAM_REPLICAS", "3");
        for (key, value) in PROCESS_ENV {
            command.env(format!("CC_CLUSTER_ENV_{key}"), value);
        }
        command
    }

    /// `scripts/cluster.sh ARGS`: its standard output; panics when it fails.
    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("cluster.sh runs");
        assert!(
            output.status.success(),
            "cluster.sh {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// [`Self::run`] off the runtime's threads (it may wait seconds).
    async fn run_async(&self, args: &[&str]) -> String {
        let mut command = self.command(args);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let output = command.output().expect("cluster.sh runs");
            assert!(
                output.status.success(),
                "cluster.sh {args:?} failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .await
        .expect("cluster.sh task")
    }

    /// The pid of process `name`, if it runs.
    fn pid(&self, name: &str) -> Option<u32> {
        let output = self
            .command(&["pid", name])
            .output()
            .expect("cluster.sh runs");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
            .flatten()
    }

    /// The process name (`relay-2`) of `pid`.
    fn name_of(&self, pid: u32) -> String {
        ["relay-1", "relay-2", "projector-1", "projector-2"]
            .into_iter()
            .find(|name| self.pid(name) == Some(pid))
            .unwrap_or_else(|| panic!("pid {pid} is none of the cluster's relays and projectors"))
            .to_string()
    }

    /// Pids holding the advisory locks whose name contains `what` (`relay:`, `projector:`).
    async fn lock_holders(&self, what: &str) -> Vec<u32> {
        lock_holders(&self.primary, what).await
    }

    /// The stream's leader (`nats-2`), as the first answering node sees it.
    async fn stream_leader(&self) -> Option<String> {
        for n in 0..self.monitors.len() {
            let leader = self.stream_leader_seen_by(n).await;
            if leader.is_some() {
                return leader;
            }
        }
        None
    }

    /// The stream's leader as node `n` (0-based) reports it (`None` when it does not
    /// answer or names none).
    async fn stream_leader_seen_by(&self, n: usize) -> Option<String> {
        let stream = self.stream_detail(n).await?;
        stream["cluster"]["leader"].as_str().map(str::to_string)
    }

    /// How many messages node `n` (0-based) reports in its copy of the stream (`None` when
    /// it does not answer or holds no copy).
    async fn node_messages(&self, n: usize) -> Option<u64> {
        self.stream_detail(n).await?["state"]["messages"].as_u64()
    }

    /// Node `n`'s (0-based) monitoring details of the event stream.
    async fn stream_detail(&self, n: usize) -> Option<Value> {
        let response = self
            .client
            .get(format!("{}/jsz?streams=true", self.monitors[n]))
            .send()
            .await
            .ok()?;
        let info = response.json::<Value>().await.ok()?;
        info["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == "CC_EVENTS")
            .cloned()
    }

    fn url(&self, api: usize, path: &str) -> String {
        format!("{}{path}", self.apis[api])
    }

    fn ws_url(&self, api: usize, path: &str) -> String {
        format!(
            "{}{path}?access_token={}",
            self.apis[api].replace("http://", "ws://"),
            self.key
        )
    }

    /// Creates a technology through API `api`; returns its body.
    async fn create(&self, api: usize, title: &str) -> Value {
        let response = self
            .client
            .post(self.url(api, "/api/v1/technologies"))
            .json(&json!({"project_id": 1, "title": title, "domain": "other"}))
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), 201, "create {title}");
        response.json().await.expect("body")
    }

    /// Writes a technology and a job through API 1 and waits (up to 30 s) until the relay
    /// has published both and both are readable with their positions: the pipeline works.
    /// Returns how long that took.
    async fn wait_pipeline(&self, what: &str) -> Duration {
        let started = Instant::now();
        let technology = self
            .create(0, &format!("probe {}", uuid::Uuid::now_v7().simple()))
            .await;
        let job: Value = self
            .client
            .post(self.url(0, "/api/v1/jobs"))
            .json(&json!({"project_id": 1, "job_type": "noop"}))
            .send()
            .await
            .expect("job")
            .json()
            .await
            .expect("job body");
        // The relay published them (the projectors could also have read them from the
        // store: that alone would not show the relay works).
        let newest = [&technology, &job]
            .iter()
            .map(|b| {
                b["position"]
                    .as_str()
                    .expect("position")
                    .parse::<Position>()
                    .expect("a position")
            })
            .max()
            .expect("positions");
        loop {
            let relayed = commandcenter_projections::status(&self.primary, &EventStream::new("cc"))
                .await
                .ok()
                .and_then(|report| report.relay.checkpoint);
            if relayed >= Some(newest) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what}: the relay did not publish a new write within 30 s (at {relayed:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (path, body) in [("technologies", &technology), ("jobs", &job)] {
            let url = self.url(
                0,
                &format!("/api/v1/{path}/{}", body["id"].as_str().expect("id")),
            );
            loop {
                let status = self
                    .client
                    .get(&url)
                    .header(
                        "x-cc-min-position",
                        body["position"].as_str().expect("position"),
                    )
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status == 200 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{what}: a new {path} write was not readable within 30 s (last status {status})"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        started.elapsed()
    }

    /// Every message of the stream, decoded, in stream order.
    async fn stream_events(&self) -> Vec<StoredEvent> {
        let client = async_nats::connect(self.nats_urls.clone())
            .await
            .expect("nats");
        read_stream(client, "CC_EVENTS").await
    }

    /// Waits until the relay and both read models have processed every committed event.
    async fn wait_caught_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report =
                commandcenter_projections::status(&self.primary, &EventStream::new("cc")).await;
            if let Ok(report) = &report {
                if std::iter::once(&report.relay)
                    .chain(&report.projections)
                    .all(|lag| lag.lag_events == 0)
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "not caught up: {report:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stream holds every event of the store once, in the store's feed order; the
    /// views equal a fold of the store; the counts tables equal the views.
    async fn assert_nothing_lost_or_doubled(&self, scenario: &str) {
        self.wait_caught_up().await;
        let mut feed = Vec::new();
        let mut after = Position::ZERO;
        loop {
            let page = read_feed(&self.primary, after, 5000).await.expect("feed");
            let Some(last) = page.last() else { break };
            after = last.position;
            feed.extend(page);
        }
        let stream = self.stream_events().await;
        let key = |e: &StoredEvent| (e.aggregate_id.clone(), e.sequence);
        let mut seen = HashSet::new();
        let doubled: Vec<_> = stream
            .iter()
            .filter(|e| !seen.insert(key(e)))
            .map(key)
            .collect();
        assert!(
            doubled.is_empty(),
            "{scenario}: events doubled in the stream: {doubled:?}"
        );
        let stream_order: Vec<_> = stream.iter().map(key).collect();
        let feed_order: Vec<_> = feed.iter().map(key).collect();
        if stream_order != feed_order {
            let first = stream_order
                .iter()
                .zip(&feed_order)
                .position(|(a, b)| a != b)
                .unwrap_or(stream_order.len().min(feed_order.len()));
            panic!(
                "{scenario}: the stream ({} events) differs from the store's feed ({} events) from \
                 index {first}: stream {:?}, store {:?}",
                stream_order.len(),
                feed_order.len(),
                stream_order.get(first),
                feed_order.get(first)
            );
        }
        wait_views_equal_store(&self.primary, &format!("{scenario}: "), || {
            self.wait_caught_up()
        })
        .await;
        assert_counts_match_views_on(&self.primary).await;
        println!(
            "FIGURE {scenario}: stream = store feed = views, {} events",
            feed.len()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("CC_CLUSTER_KEEP").is_some() {
            eprintln!(
                "CC_CLUSTER_KEEP: the cluster keeps running: CC_CLUSTER_DIR={} CC_CLUSTER_PORT_BASE={} scripts/cluster.sh status|down",
                self.dir.display(),
                self.base
            );
            return;
        }
        let output = self.command(&["down"]).output();
        if let Ok(output) = output {
            if !output.status.success() {
                eprintln!(
                    "cluster.sh down failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

// ---------------------------------------------------------------- load and probes

/// One command the load sent, and what came back.
#[derive(Debug, Clone)]
struct Sent {
    status: Option<u16>,
    started: Instant,
    elapsed: Duration,
    /// `(aggregate id, version)` of a 2xx answer.
    committed: Option<(String, i64)>,
    dispatched_job: Option<String>,
    /// A 503 with `Retry-After` and a problem document.
    clean_503: bool,
}

/// Commands from `tasks` clients, alternating between the two APIs, until stopped:
/// technologies created and updated, `noop` jobs created and dispatched.
struct WriteLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WriteLoad {
    fn start(cluster: &Cluster, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..tasks)
            .map(|worker| {
                let client = cluster.client.clone();
                let apis = cluster.apis.clone();
                let (stop, sent) = (stop.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut technologies: Vec<String> = Vec::new();
                    let mut jobs: Vec<String> = Vec::new();
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let base = &apis[(n as usize + worker) % apis.len()];
                        let (request, dispatching) = match n % 5 {
                            1 if !technologies.is_empty() => {
                                let id = &technologies[n as usize % technologies.len()];
                                (
                                    client
                                        .patch(format!("{base}/api/v1/technologies/{id}"))
                                        .json(&json!({"relevance_score": (n * 7 % 100) as i64})),
                                    None,
                                )
                            }
                            2 => (
                                client
                                    .post(format!("{base}/api/v1/jobs"))
                                    .json(&json!({"project_id": 1 + (n % 3) as i64, "job_type": "noop"})),
                                None,
                            ),
                            3 if !jobs.is_empty() => {
                                let id = jobs.swap_remove(0);
                                (
                                    client.post(format!("{base}/api/v1/jobs/{id}/dispatch")),
                                    Some(id),
                                )
                            }
                            _ => (
                                client.post(format!("{base}/api/v1/technologies")).json(&json!({
                                    "project_id": 1 + (n % 3) as i64,
                                    "title": format!("load {worker}-{n}-{}", uuid::Uuid::now_v7().simple()),
                                    "domain": "other",
                                })),
                                None,
                            ),
                        };
                        let started = Instant::now();
                        let response = request.send().await;
                        let elapsed = started.elapsed();
                        let mut record = Sent {
                            status: None,
                            started,
                            elapsed,
                            committed: None,
                            dispatched_job: None,
                            clean_503: false,
                        };
                        if let Ok(response) = response {
                            let status = response.status();
                            record.status = Some(status.as_u16());
                            record.clean_503 = status == 503
                                && response.headers().contains_key("retry-after")
                                && response
                                    .headers()
                                    .get("content-type")
                                    .is_some_and(|v| v == "application/problem+json");
                            if status.is_success() {
                                if let Ok(body) = response.json::<Value>().await {
                                    let id = body["id"].as_str().unwrap_or_default().to_string();
                                    let version = body["version"].as_i64().unwrap_or_default();
                                    if status == 201 && body.get("job_type").is_some() {
                                        jobs.push(id.clone());
                                    } else if status == 201 {
                                        technologies.push(id.clone());
                                    }
                                    record.committed = Some((id, version));
                                    record.dispatched_job = dispatching;
                                }
                            }
                        }
                        let failed = record.status.is_none_or(|s| s >= 500);
                        sent.lock().expect("sent").push(record);
                        if failed {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Self { stop, sent, tasks }
    }

    fn count(&self) -> usize {
        self.sent.lock().expect("sent").len()
    }

    /// Waits until `more` further commands got a 2xx.
    async fn wait_for_successes(&self, more: usize, what: &str) {
        let ok = |sent: &Vec<Sent>| sent.iter().filter(|s| s.committed.is_some()).count();
        let target = ok(&self.sent.lock().expect("sent")) + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while ok(&self.sent.lock().expect("sent")) < target {
            assert!(
                Instant::now() < deadline,
                "{what}: fewer than {more} commands succeeded in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        Arc::try_unwrap(self.sent)
            .expect("load tasks ended")
            .into_inner()
            .expect("sent")
    }
}

/// Asserts every 2xx command's events are in the store (its aggregate at its version).
async fn assert_committed_in_store(cluster: &Cluster, sent: &[Sent], scenario: &str) {
    let committed: Vec<&(String, i64)> = sent.iter().filter_map(|s| s.committed.as_ref()).collect();
    let ids: Vec<String> = committed.iter().map(|c| c.0.clone()).collect();
    let versions: Vec<i64> = committed.iter().map(|c| c.1).collect();
    let missing: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.id, c.version FROM unnest($1::text[], $2::bigint[]) AS c(id, version) \
          WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.aggregate_id = c.id AND e.sequence = c.version)",
    )
    .bind(&ids)
    .bind(&versions)
    .fetch_all(&cluster.primary)
    .await
    .expect("committed check");
    assert!(
        missing.is_empty(),
        "{scenario}: {} of {} 2xx commands have no events in the store: {:?}",
        missing.len(),
        committed.len(),
        &missing[..missing.len().min(10)]
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket at `url` subscribed to `technologies:1`.
async fn subscribed_socket(url: String) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("socket opens");
    socket
        .send(Message::text(
            json!({"subscribe": ["technologies:1"]}).to_string(),
        ))
        .await
        .expect("subscribe");
    let subscribed = next_change(&mut socket, Duration::from_secs(10))
        .await
        .expect("subscribed");
    assert_eq!(subscribed["type"], "subscribed");
    socket
}

/// The next JSON message within `wait`, skipping pings.
async fn next_change(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
            .ok()?;
        match message {
            Message::Text(text) => return serde_json::from_str(&text).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Records the arrival of every push a socket on API `api` (subscribed to
/// `technologies:1`) receives, until aborted or closed.
fn record_pushes(
    cluster: &Cluster,
    api: usize,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Instant>>>) {
    let url = cluster.ws_url(api, "/api/v1/ws");
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let recorded = arrivals.clone();
    let task = tokio::spawn(async move {
        let mut socket = subscribed_socket(url).await;
        while let Some(message) = next_change(&mut socket, Duration::from_secs(60)).await {
            if message["type"] == "change" {
                recorded.lock().expect("arrivals").push(Instant::now());
            }
        }
    });
    (task, arrivals)
}

// ---------------------------------------------------------------- the scenarios

/// 4. A command to API 1, pushed to a socket on API 2.
async fn cross_process_push(cluster: &Cluster) {
    let mut socket = subscribed_socket(cluster.ws_url(1, "/api/v1/ws")).await;
    let mut from_2xx = Vec::new();
    let mut from_send = Vec::new();
    for i in 0..200 {
        let sent = Instant::now();
        let created = cluster.create(0, &format!("push {i}")).await;
        let answered = Instant::now();
        let id = created["id"].as_str().expect("id").to_string();
        loop {
            let message = next_change(&mut socket, Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("scenario 4: no push for command {i} within 5 s"));
            if message["type"] == "change" && message["row"]["id"] == id.as_str() {
                break;
            }
        }
        from_2xx.push(answered.elapsed());
        from_send.push(sent.elapsed());
    }
    from_2xx.sort();
    from_send.sort();
    let (p50, p99, max) = (
        percentile(&from_2xx, 0.5),
        percentile(&from_2xx, 0.99),
        *from_2xx.last().expect("samples"),
    );
    println!(
        "FIGURE scenario 4: command 2xx on API 1 -> push on API 2: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         (send -> push: p50 {:.2} ms, p99 {:.2} ms), n={}",
        ms(p50),
        ms(p99),
        ms(max),
        ms(percentile(&from_send, 0.5)),
        ms(percentile(&from_send, 0.99)),
        from_2xx.len()
    );
    // The target (p99 20 ms, quiet machine, release build) is the benchmark's to check;
    // this test runs debug binaries beside the rest of the suite and reports the figure.
    // It asserts only what would mean a broken path — pushes that wait for a poll, a
    // timeout or a reconnect — on the median, which a busy machine does not move far.
    assert!(
        p50 < Duration::from_millis(250),
        "scenario 4: push p50 {p50:?}"
    );
}

/// GET the technology `id` on API `api` with an optional minimum position: status and
/// `X-CC-Source`.
async fn read_detail(cluster: &Cluster, api: usize, id: &str, min: Option<&str>) -> (u16, String) {
    let (status, source, _) =
        read_list(cluster, api, &format!("/api/v1/technologies/{id}"), min).await;
    (status, source)
}

/// GET `path` on API `api`, with an optional minimum position: status, `X-CC-Source`
/// and body.
async fn read_list(
    cluster: &Cluster,
    api: usize,
    path: &str,
    min: Option<&str>,
) -> (u16, String, Value) {
    let mut request = cluster.client.get(cluster.url(api, path));
    if let Some(min) = min {
        request = request.header("x-cc-min-position", min);
    }
    let response = request.send().await.expect("read");
    let source = response
        .headers()
        .get("x-cc-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let status = response.status().as_u16();
    (status, source, response.json().await.unwrap_or(Value::Null))
}

/// The value of `name{replica="replica-1"}` in API `api`'s `/metrics`.
async fn replica_metric(cluster: &Cluster, api: usize, name: &str) -> Option<f64> {
    let text = cluster
        .client
        .get(cluster.url(api, "/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name}{{replica=\"replica-1\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// 1. Read-your-writes with the replica's replay paused.
async fn read_your_writes_on_a_paused_replica(cluster: &Cluster) {
    let replica = PgPool::connect(&cluster.replica_url)
        .await
        .expect("replica");
    // Before: the replica serves, and has what the primary has.
    let before = cluster.create(0, "before the pause").await;
    let before_id = before["id"].as_str().expect("id");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, source) =
            read_detail(cluster, 0, before_id, before["position"].as_str()).await;
        if status == 200 && source == "replica-1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scenario 1: the replica never served ({status} {source})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&replica)
        .await
        .expect("pause");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, String>("SELECT pg_get_wal_replay_pause_state()")
        .fetch_one(&replica)
        .await
        .expect("pause state")
        != "paused"
    {
        assert!(
            Instant::now() < deadline,
            "scenario 1: replay did not pause"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let written = cluster.create(0, "while paused").await;
    let id = written["id"].as_str().expect("id");
    let position = written["position"].as_str().expect("position");

    // With the position: the answer includes the write, from the primary, after the bound.
    for api in [0, 1] {
        let asked = Instant::now();
        let (status, source) = read_detail(cluster, api, id, Some(position)).await;
        let took = asked.elapsed();
        assert_eq!(
            (status, source.as_str()),
            (200, "primary"),
            "scenario 1: a read needing the write, replica paused (API {})",
            api + 1
        );
        println!(
            "FIGURE scenario 1: X-CC-Min-Position read with the replica paused: 200 from the primary in {:.0} ms (bound 1000 ms)",
            ms(took)
        );
    }
    let (status, source, list) = read_list(
        cluster,
        1,
        "/api/v1/technologies?project_id=1&limit=1000",
        Some(position),
    )
    .await;
    assert_eq!(
        (status, source.as_str()),
        (200, "primary"),
        "scenario 1: the list, too"
    );
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|t| t["id"] == id),
        "scenario 1: the list includes the write"
    );
    // Without it: the replica answers, stale (it has not replayed the write). A search
    // for the new title is a fresh cache key, so a pool answers.
    let (status, source, stale) = read_list(
        cluster,
        0,
        "/api/v1/technologies?project_id=1&search=while%20paused",
        None,
    )
    .await;
    assert_eq!(
        (status, source.as_str()),
        (200, "replica-1"),
        "scenario 1: a read without a position stays on the paused replica"
    );
    assert_eq!(
        stale["total"], 0,
        "scenario 1: the paused replica has not got the write"
    );
    // The lag shows: /metrics (seconds and bytes), projections status, cluster.sh status.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (bytes, seconds) = loop {
        let bytes = replica_metric(cluster, 0, "db_replica_lag_bytes")
            .await
            .unwrap_or(0.0);
        let seconds = replica_metric(cluster, 0, "db_replica_lag_seconds")
            .await
            .unwrap_or(0.0);
        if bytes > 0.0 && seconds > 0.0 {
            break (bytes, seconds);
        }
        assert!(
            Instant::now() < deadline,
            "scenario 1: /metrics shows no replica lag (bytes {bytes}, seconds {seconds})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("FIGURE scenario 1: paused replica lag in /metrics: {bytes} bytes, {seconds:.3} s");
    let output = Command::new(env!("CARGO_BIN_EXE_commandcenter"))
        .args(["projections", "status", "--json"])
        .env(
            "DATABASE_URL",
            format!(
                "postgres://postgres@127.0.0.1:{}/commandcenter",
                cluster.base
            ),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("projections status");
    let report: Value = serde_json::from_slice(&output.stdout).expect("status JSON");
    assert!(
        report["replicas"][0]["lag_bytes"].as_i64().unwrap_or(0) > 0,
        "scenario 1: projections status shows the replica's lag: {}",
        report["replicas"]
    );
    let status = cluster.run_async(&["status"]).await;
    let behind = status
        .lines()
        .find_map(|l| l.trim().strip_prefix("walreceiver streaming: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|b| b.parse::<u64>().ok());
    assert!(
        status.contains("replay PAUSED") && behind.is_some_and(|b| b > 0),
        "scenario 1: cluster.sh status shows the paused replica behind:\n{status}"
    );

    // Resumed: the replica catches up and serves reads needing the write.
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica)
        .await
        .expect("resume");
    let resumed = Instant::now();
    loop {
        let (status, source) = read_detail(cluster, 0, id, Some(position)).await;
        if status == 200 && source == "replica-1" {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "scenario 1: the resumed replica never served the write ({status} {source})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "FIGURE scenario 1: replay resumed -> replica serves the write again in {:.0} ms",
        ms(resumed.elapsed())
    );
    let (status, source) = read_detail(cluster, 1, id, None).await;
    assert_eq!(
        (status, source.as_str()),
        (200, "replica-1"),
        "scenario 1: resumed, no header"
    );
    replica.close().await;
}

/// One read of the read load.
#[derive(Debug, Clone)]
struct Read {
    api: usize,
    started: Instant,
    finished: Instant,
    status: u16,
    source: String,
}

/// 2. The replica stopped under read load, then restarted.
async fn replica_down_and_back(cluster: &Cluster) {
    let target = cluster.create(0, "read under load").await;
    let id = target["id"].as_str().expect("id").to_string();
    cluster.wait_caught_up().await;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(Vec::<Read>::new()));
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (client, stop, reads) = (cluster.client.clone(), stop.clone(), reads.clone());
            let api = i % 2;
            let url = cluster.url(api, &format!("/api/v1/technologies/{id}"));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let (status, source) = match client.get(&url).send().await {
                        Ok(r) => (
                            r.status().as_u16(),
                            r.headers()
                                .get("x-cc-source")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string(),
                        ),
                        Err(_) => (0, String::new()),
                    };
                    reads.lock().expect("reads").push(Read {
                        api,
                        started,
                        finished: Instant::now(),
                        status,
                        source,
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let count_since = |since: Instant, source: &str| {
        reads
            .lock()
            .expect("reads")
            .iter()
            .filter(|r| r.started >= since && r.status == 200 && r.source == source)
            .count()
    };
    let began = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_since(began, "replica-1") < 20 {
        assert!(
            Instant::now() < deadline,
            "scenario 2: no reads from the replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.run_async(&["pg", "replica", "stop", "fast"]).await;
    let stopped = Instant::now();
    // Reads carry on from the primary: wait for 100 of them and at least 3 s.
    let deadline = stopped + Duration::from_secs(30);
    while count_since(stopped, "primary") < 100 || stopped.elapsed() < Duration::from_secs(3) {
        assert!(
            Instant::now() < deadline,
            "scenario 2: reads did not fall back to the primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_primary = reads
        .lock()
        .expect("reads")
        .iter()
        .filter(|r| r.started >= stopped && r.source == "primary")
        .map(|r| r.finished)
        .min()
        .expect("a primary read");
    cluster.run_async(&["pg", "replica", "start"]).await;
    let restarted = Instant::now();
    let mut back = Vec::new();
    for api in [0, 1] {
        let deadline = restarted + Duration::from_secs(30);
        loop {
            let served = reads.lock().expect("reads").iter().any(|r| {
                r.api == api && r.started >= restarted && r.status == 200 && r.source == "replica-1"
            });
            if served {
                back.push(restarted.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "scenario 2: API {} never read from the restarted replica",
                api + 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("reader");
    }
    let reads = reads.lock().expect("reads").clone();
    let unexpected: Vec<&Read> = reads
        .iter()
        .filter(|r| r.status != 200 && r.status < 500 && r.status != 0)
        .collect();
    assert!(
        unexpected.is_empty(),
        "scenario 2: unexpected answers {unexpected:?}"
    );
    let bad: Vec<&Read> = reads.iter().filter(|r| r.status != 200).collect();
    for api in [0, 1] {
        let mut failures: Vec<&&Read> = bad.iter().filter(|r| r.api == api).collect();
        failures.sort_by_key(|r| r.finished);
        if let Some(first) = failures.first() {
            let later: Vec<_> = failures
                .iter()
                .filter(|r| r.started > first.finished)
                .map(|r| (r.status, r.source.clone(), r.started - stopped))
                .collect();
            assert!(
                later.is_empty(),
                "scenario 2: API {} failed reads after its first failure: {later:?}",
                api + 1
            );
        }
    }
    println!(
        "FIGURE scenario 2: replica stopped under read load: {} reads, {} failed (in flight at the stop), \
         first read from the primary {:.0} ms after the stop; restarted: back on the replica after {:.0} ms (API 1) / {:.0} ms (API 2)",
        reads.len(),
        bad.len(),
        ms(first_primary - stopped),
        ms(back[0]),
        ms(back[1])
    );
}

/// Samples API 1's replica lag gauges every 100 ms until finished.
struct LagSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, f64, f64)>,
}

impl LagSampler {
    /// Samples taken, the largest lag in bytes and in seconds.
    async fn finish(self) -> (usize, f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("sampler")
    }
}

fn sample_replica_lag(cluster: &Cluster) -> LagSampler {
    let stop = Arc::new(AtomicBool::new(false));
    let (client, url, flag) = (
        cluster.client.clone(),
        cluster.url(0, "/metrics"),
        stop.clone(),
    );
    let task = tokio::spawn(async move {
        let (mut samples, mut bytes, mut seconds) = (0, 0.0_f64, 0.0_f64);
        while !flag.load(Ordering::Relaxed) {
            if let Ok(text) = client
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
            {
                let text = text.text().await.unwrap_or_default();
                let value = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}{{replica=\"replica-1\"}} ")))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                };
                if let (Some(b), Some(s)) = (
                    value("db_replica_lag_bytes"),
                    value("db_replica_lag_seconds"),
                ) {
                    samples += 1;
                    bytes = bytes.max(b);
                    seconds = seconds.max(s);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (samples, bytes, seconds)
    });
    LagSampler { stop, task }
}

/// 6. The active relay, then the active projector, killed under write load.
async fn relay_and_projector_failover(cluster: &Cluster) {
    let load = WriteLoad::start(cluster, 2);
    load.wait_for_successes(50, "scenario 6").await;
    // Sampled from here: the gauges were sampled under this load (at each read of
    // /metrics, at most once a second).
    let lag = sample_replica_lag(cluster);
    for (role, what) in [("relay", "relay:"), ("projector", "projector:")] {
        // The active one has been working: what it published or applied is what its
        // successor must neither lose nor repeat.
        cluster.wait_pipeline("scenario 6").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let active = loop {
            let holders = cluster.lock_holders(what).await;
            if let Some(first) = holders.first() {
                break *first;
            }
            assert!(Instant::now() < deadline, "scenario 6: no active {role}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let name = cluster.name_of(active);
        cluster.run_async(&["kill", &name]).await;
        let killed = Instant::now();
        let locks = if role == "relay" { 1 } else { 2 };
        loop {
            let holders = cluster.lock_holders(what).await;
            if holders.len() == locks && holders.iter().all(|p| *p != active) {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "scenario 6: no standby {role} took over within 10 s (holders {holders:?})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let takeover = killed.elapsed();
        // And it works: the relay publishes, the projector applies, past the kill.
        let flowing = cluster.wait_pipeline("scenario 6").await;
        println!(
            "FIGURE scenario 6: active {role} ({name}) SIGKILLed under load: standby holds its lock{} after {:.0} ms; \
             a write made then was readable {:.0} ms later",
            if locks > 1 { "s" } else { "" },
            ms(takeover),
            ms(flowing)
        );
        assert!(
            takeover <= Duration::from_secs(2),
            "scenario 6: the standby {role} took {takeover:?} (target 2 s)"
        );
        cluster.run_async(&["start", &name]).await;
    }
    load.wait_for_successes(20, "scenario 6").await;
    let sent = load.finish().await;
    let (samples, max_bytes, max_seconds) = lag.finish().await;
    assert!(samples > 0, "scenario 6: replica lag sampled from /metrics");
    println!(
        "FIGURE scenario 6: replica lag under the write load ({} commands, {samples} samples of /metrics): max {max_bytes} bytes, max {max_seconds:.3} s",
        sent.len()
    );
    assert_committed_in_store(cluster, &sent, "scenario 6").await;
    cluster.assert_nothing_lost_or_doubled("scenario 6").await;
}

/// 5. The primary restarted, fast then immediate, under write load.
async fn primary_restarts(cluster: &Cluster) {
    let load = WriteLoad::start(cluster, 4);
    load.wait_for_successes(30, "scenario 5").await;
    let mut recoveries = Vec::new();
    for mode in ["fast", "immediate"] {
        let before = load.count();
        let asked = Instant::now();
        cluster.run_async(&["pg", "primary", "restart", mode]).await;
        let restarted = Instant::now();
        load.wait_for_successes(30, "scenario 5").await;
        // The first success after the restart.
        let first_ok = load.sent.lock().expect("sent")[before..]
            .iter()
            .filter(|s| s.committed.is_some() && s.started >= restarted)
            .map(|s| s.started + s.elapsed)
            .min()
            .unwrap_or_else(Instant::now);
        recoveries.push((
            mode,
            restarted - asked,
            first_ok.saturating_duration_since(restarted),
        ));
    }
    let sent = load.finish().await;
    let slowest = sent.iter().map(|s| s.elapsed).max().unwrap_or_default();
    let statuses: HashMap<Option<u16>, usize> = sent.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.status).or_default() += 1;
        m
    });
    let unclean: Vec<&Sent> = sent
        .iter()
        .filter(|s| !matches!(s.status, Some(200..=299)) && !s.clean_503)
        .collect();
    assert!(
        unclean.is_empty(),
        "scenario 5: answers other than 2xx and 503 with Retry-After (or no answer): {:?}",
        &unclean[..unclean.len().min(10)]
    );
    assert!(
        slowest <= Duration::from_millis(REQUEST_TIMEOUT_MS + 2000),
        "scenario 5: a command took {slowest:?} (request timeout {REQUEST_TIMEOUT_MS} ms)"
    );
    assert_committed_in_store(cluster, &sent, "scenario 5").await;
    // Every process recovered by itself: all still running, both APIs ready, the relay
    // and projectors active again, the replica streaming again.
    for name in [
        "relay-1",
        "relay-2",
        "projector-1",
        "projector-2",
        "worker-1",
        "worker-2",
        "api-1",
        "api-2",
    ] {
        assert!(cluster.pid(name).is_some(), "scenario 5: {name} died");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ready = true;
        for api in [0, 1] {
            let ok = cluster
                .client
                .get(cluster.url(api, "/health/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            ready &= ok;
        }
        let streaming: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE state = 'streaming')",
        )
        .fetch_one(&cluster.primary)
        .await
        .unwrap_or(false);
        if ready
            && streaming
            && cluster.lock_holders("relay:").await.len() == 1
            && cluster.lock_holders("projector:").await.len() == 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "scenario 5: the cluster did not recover (ready {ready}, replica streaming {streaming})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (mode, restart, recovery) in &recoveries {
        println!(
            "FIGURE scenario 5: primary restart -m {mode} took {:.0} ms; first 2xx command {:.0} ms after it returned",
            ms(*restart),
            ms(*recovery)
        );
    }
    println!(
        "FIGURE scenario 5: {} commands: {statuses:?}; slowest {:.0} ms",
        sent.len(),
        ms(slowest)
    );
    cluster.assert_nothing_lost_or_doubled("scenario 5").await;
}

/// 3. The stream leader's NATS node killed under write load, then restarted.
async fn nats_leader_killed(cluster: &Cluster) {
    let client = async_nats::connect(cluster.nats_urls.clone())
        .await
        .expect("nats");
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("CC_EVENTS")
        .await
        .expect("stream");
    let replicas = stream
        .info()
        .await
        .expect("stream info")
        .config
        .num_replicas;
    assert_eq!(replicas, 3, "scenario 3: the stream is kept in 3 copies");
    let pushes = [record_pushes(cluster, 0), record_pushes(cluster, 1)];
    let load = WriteLoad::start(cluster, 4);
    load.wait_for_successes(50, "scenario 3").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(leader) = cluster.stream_leader().await {
            break leader;
        }
        assert!(Instant::now() < deadline, "scenario 3: no stream leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster.run_async(&["kill", &leader]).await;
    let killed = Instant::now();
    // Any surviving node that names another leader has seen the election (one may still
    // name the killed node for a while). The bound is generous: a CI run on a slow,
    // loaded 2-core machine once saw no new leader within 30 s, where 2-8 s is usual.
    let deadline = killed + Duration::from_secs(60);
    let new_leader = loop {
        let mut seen = Vec::with_capacity(cluster.monitors.len());
        for n in 0..cluster.monitors.len() {
            seen.push(cluster.stream_leader_seen_by(n).await);
        }
        if let Some(new) = seen.iter().flatten().find(|l| **l != leader) {
            break new.clone();
        }
        assert!(
            Instant::now() < deadline,
            "scenario 3: no new stream leader 60 s after killing {leader}; \
             each node's view: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elected = killed.elapsed();
    // Writes, projections and pushes carry on without the node.
    load.wait_for_successes(100, "scenario 3").await;
    cluster.wait_pipeline("scenario 3").await;
    let caught_up = killed.elapsed();
    cluster.run_async(&["start", &leader]).await;
    let node: usize = leader
        .trim_start_matches("nats-")
        .parse::<usize>()
        .expect("node")
        - 1;
    load.wait_for_successes(50, "scenario 3").await;
    let sent = load.finish().await;
    let failed = sent.iter().filter(|s| s.committed.is_none()).count();
    let slowest = sent.iter().map(|s| s.elapsed).max().unwrap_or_default();
    cluster.wait_caught_up().await;
    // The restarted node catches up: its copy holds every message. At least: jobs the
    // load dispatched may still be running, and their events reach the stream (and the
    // node) while it is watched, so its count can pass this one between two readings.
    let messages = cluster.stream_events().await.len() as u64;
    let restarted = Instant::now();
    loop {
        let held = cluster.node_messages(node).await;
        if held.is_some_and(|held| held >= messages) {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "scenario 3: the restarted {leader} did not catch up to {messages} messages \
             (it reports {held:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rejoined = restarted.elapsed();
    // Every dispatched job completes, once.
    let dispatched: Vec<String> = sent
        .iter()
        .filter_map(|s| s.dispatched_job.clone())
        .collect();
    assert!(
        !dispatched.is_empty(),
        "scenario 3: the load dispatched jobs"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT d.id, (SELECT count(*) FROM events e WHERE e.aggregate_id = d.id AND e.event_type = 'JobCompleted') \
               FROM unnest($1::text[]) AS d(id)",
        )
        .bind(&dispatched)
        .fetch_all(&cluster.primary)
        .await
        .expect("completions");
        let doubled: Vec<_> = counts.iter().filter(|c| c.1 > 1).collect();
        assert!(
            doubled.is_empty(),
            "scenario 3: jobs completed twice: {doubled:?}"
        );
        let pending = counts.iter().filter(|c| c.1 == 0).count();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scenario 3: {pending} dispatched jobs never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut pushed = Vec::new();
    let mut pauses = Vec::new();
    for (api, (task, arrivals)) in pushes.into_iter().enumerate() {
        let arrivals = arrivals.lock().expect("arrivals").clone();
        let after = arrivals.iter().filter(|t| **t > killed).count();
        // The longest silence of the socket across the kill: how long pushes stopped.
        let pause = arrivals
            .windows(2)
            .filter(|w| w[1] > killed)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        pauses.push(pause);
        assert!(
            !task.is_finished(),
            "scenario 3: the socket on API {} closed",
            api + 1
        );
        task.abort();
        assert!(
            after >= 10,
            "scenario 3: the socket on API {} got {after} pushes after the kill",
            api + 1
        );
        pushed.push(after);
    }
    cluster.assert_nothing_lost_or_doubled("scenario 3").await;
    println!(
        "FIGURE scenario 3: stream leader {leader} SIGKILLed under load: new leader {new_leader} seen after {:.0} ms, \
         longest pause of pushes across the kill {:.0} ms (API 1 socket) / {:.0} ms (API 2 socket); \
         100 commands later a probe write was relayed and projected {:.0} ms after the kill; \
         restarted node caught up ({messages} messages) in {:.0} ms; \
         {} dispatched jobs each completed once; pushes after the kill: {} (API 1 socket), {} (API 2 socket); \
         {} commands, {failed} without a 2xx, slowest {:.0} ms",
        ms(elected),
        ms(pauses[0]),
        ms(pauses[1]),
        ms(caught_up),
        ms(rejoined),
        dispatched.len(),
        pushed[0],
        pushed[1],
        sent.len(),
        ms(slowest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_keeps_its_promises() {
    let only: Option<HashSet<String>> = std::env::var("CC_CLUSTER_SCENARIOS")
        .ok()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let wanted = |n: &str| only.as_ref().is_none_or(|o| o.contains(n));
    let started = Instant::now();
    let cluster = Cluster::up().await;
    // `cluster.sh up` waits for the APIs only; the relay and projector roles start beside
    // them. Right after it, the first of scenario 4's pushes took up to 3.1 s in 14 runs and
    // over its 5 s in 2 of about 25 (where the time goes was not traced). The scenarios
    // measure a running cluster: the pipeline is shown to flow end to end first.
    let flowing = cluster.wait_pipeline("start").await;
    println!(
        "FIGURE pipeline flowing {:.1} s after up",
        flowing.as_secs_f64()
    );
    if wanted("4") {
        cross_process_push(&cluster).await;
    }
    if wanted("1") {
        read_your_writes_on_a_paused_replica(&cluster).await;
    }
    if wanted("2") {
        replica_down_and_back(&cluster).await;
    }
    if wanted("6") {
        relay_and_projector_failover(&cluster).await;
    }
    if wanted("5") {
        primary_restarts(&cluster).await;
    }
    if wanted("3") {
        nats_leader_killed(&cluster).await;
    }
    drop(cluster);
    println!(
        "FIGURE cluster suite: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
