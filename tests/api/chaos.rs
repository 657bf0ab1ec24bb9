//! Failure tests of projection completeness (issue 14), with real processes and real
//! servers: projector processes killed with SIGKILL at random moments and at a pause
//! point between apply and commit, a private PostgreSQL restarted (fast and immediate)
//! under load, a private nats-server killed and restarted, and one whose store lost its
//! tail. Each ends by comparing both read models with an independent fold of the event
//! store (the domain's own aggregates, not the projection code), the counts tables with a
//! `GROUP BY` over the views, and by running `commandcenter projections verify`. Workers:
//! one killed between claim and acknowledgement, and a job that ends while PostgreSQL is
//! down (its outcome recorded by the worker's retries, in the same attempt).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use commandcenter_event_store::{pause, Position};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{assert_store_consistent, spawn_app, spawn_app_on, spawn_app_with, TestApp};
use crate::oracle::{fold_store, wait_views_equal_store, Expected};
use crate::projections::assert_counts_match_views;

// ---------------------------------------------------------------- processes and servers

/// A child process killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cc-{what}-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PostgreSQL server of the test's own (never the shared one), on a free port.
pub(crate) struct PrivatePostgres {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    /// Extra server settings (`-c name=value …`).
    settings: String,
    _dir: TempDir,
}

fn as_postgres_user(program: &Path) -> Command {
    // initdb and postgres refuse to run as root.
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePostgres {
    pub(crate) async fn start() -> Self {
        Self::start_with("").await
    }

    /// Started with `settings` (`-c name=value …`) beside the usual ones.
    pub(crate) async fn start_with(settings: &str) -> Self {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version with pg_ctl");
        let dir = TempDir::new("pg");
        let data = dir.0.join("data");
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir.0)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let status = as_postgres_user(&bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let server = Self {
            bindir,
            data,
            port: free_port(),
            settings: settings.to_string(),
            _dir: dir,
        };
        server.pg_ctl(&["start"]);
        wait_for_port(server.port, "PostgreSQL").await;
        server
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=300 -c fsync=off {}",
            self.port,
            self.data.display(),
            self.settings
        );
        let status = as_postgres_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .args(["-w", "-o", &options])
            .args(action)
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl {action:?} failed");
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// `pg_ctl restart -m <mode>`: every session is cut.
    pub(crate) fn restart(&self, mode: &str) {
        self.pg_ctl(&["restart", "-m", mode]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A nats-server with JetStream of the test's own, on a free port.
struct PrivateNats {
    port: u16,
    store: PathBuf,
    process: Option<Proc>,
    _dir: TempDir,
}

impl PrivateNats {
    async fn start() -> Self {
        let dir = TempDir::new("nats");
        let mut nats = Self {
            port: free_port(),
            store: dir.0.join("store"),
            process: None,
            _dir: dir,
        };
        nats.spawn().await;
        nats
    }

    async fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.process = Some(Proc { child });
        wait_for_port(self.port, "nats-server").await;
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGTERM and wait, so the store on disk is complete.
    fn stop_cleanly(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &process.pid().to_string()])
                .status();
            let _ = process.child.wait();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying {} failed", from.display());
}

/// Background roles of one deployment, as separate `commandcenter` processes.
struct Roles {
    database_url: String,
    nats_url: String,
    prefix: String,
    logs: TempDir,
    pauses: TempDir,
    started: u32,
}

impl Roles {
    fn new(app: &TestApp, nats_url: &str) -> Self {
        Self {
            database_url: app.database_url(),
            nats_url: nats_url.to_string(),
            prefix: app.nats.prefix.clone(),
            logs: TempDir::new("logs"),
            pauses: TempDir::new("pauses"),
            started: 0,
        }
    }

    /// Starts `commandcenter <role>`; with `pause_at`, it stops for good at that point.
    fn spawn(&mut self, role: &str, pause_at: Option<&str>) -> Proc {
        self.spawn_with(&[role], &[], pause_at)
    }

    /// Starts `commandcenter <args…>` with `env` added; with `pause_at`, it stops for
    /// good at that point.
    fn spawn_with(
        &mut self,
        args: &[&str],
        env: &[(&str, String)],
        pause_at: Option<&str>,
    ) -> Proc {
        self.started += 1;
        let name = format!("{}-{}", args[0], self.started);
        let log = std::fs::File::create(self.logs.0.join(format!("{name}.log"))).expect("log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_commandcenter"));
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("DATABASE_URL", &self.database_url)
            .env("NATS_URL", &self.nats_url)
            .env("CC_NATS_PREFIX", &self.prefix)
            .env("RUST_LOG", "warn")
            .env("CC_JOB_LEASE_SECONDS", "3")
            .env("CC_JOB_HEARTBEAT_MS", "500")
            .env("CC_LEASE_SWEEP_MS", "500")
            .env_remove("CC_TEST_PAUSE_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(point) = pause_at {
            command
                .env("CC_TEST_PAUSE_AT", point)
                .env("CC_TEST_PAUSE_DIR", &self.pauses.0);
        }
        Proc {
            child: command.spawn().expect("commandcenter starts"),
        }
    }

    /// Waits until a process reached `point`; returns its pid.
    async fn paused(&self, point: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = std::fs::read_dir(&self.pauses.0)
                .expect("pause dir")
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .find_map(|name| name.strip_prefix(&format!("{point}."))?.parse().ok());
            if let Some(pid) = found {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no process reached {point}; logs in {}",
                self.logs.0.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The pids of the processes holding the projector locks now (from the locks'
/// `application_name`, `commandcenter pid=<pid> …`).
async fn active_projectors(pool: &PgPool) -> Vec<u32> {
    crate::oracle::lock_holders(pool, "projector:").await
}

// ---------------------------------------------------------------- load

/// A mixed command load (creates, updates, deletes, jobs created, dispatched and
/// cancelled) from `tasks` concurrent clients until `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(app: &TestApp, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let handles = (0..tasks)
            .map(|worker| {
                let client = app.client.clone();
                let base = app.base.clone();
                let stop = stop.clone();
                let sent = sent.clone();
                tokio::spawn(async move {
                    let mut technologies: Vec<String> = Vec::new();
                    let mut jobs: Vec<String> = Vec::new();
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let url = |path: &str| format!("{base}{path}");
                        let domain = ["ai-ml", "audio-dsp", "other"][(n % 3) as usize];
                        let request = match n % 8 {
                            0 | 1 => client.post(url("/api/v1/technologies")).json(&json!({
                                "project_id": 1 + (n % 3) as i64,
                                "title": format!("chaos {worker}-{n}"),
                                "domain": domain,
                                "relevance_score": (n % 100) as i64,
                            })),
                            2 | 3 if !technologies.is_empty() => {
                                let id = &technologies[(n as usize * 7) % technologies.len()];
                                client
                                    .patch(url(&format!("/api/v1/technologies/{id}")))
                                    .json(&json!({ "relevance_score": (n * 13 % 100) as i64 }))
                            }
                            4 if technologies.len() > 5 => {
                                let id = technologies.swap_remove(n as usize % technologies.len());
                                client.delete(url(&format!("/api/v1/technologies/{id}")))
                            }
                            5 => client.post(url("/api/v1/jobs")).json(&json!({
                                "project_id": 1 + (n % 2) as i64, "job_type": "noop"
                            })),
                            6 if !jobs.is_empty() => {
                                let id = jobs.swap_remove(n as usize % jobs.len());
                                client.post(url(&format!("/api/v1/jobs/{id}/dispatch")))
                            }
                            7 if !jobs.is_empty() => {
                                let id = &jobs[n as usize % jobs.len()];
                                client.post(url(&format!("/api/v1/jobs/{id}/cancel")))
                            }
                            _ => client.post(url("/api/v1/jobs")).json(&json!({
                                "project_id": 1, "job_type": "noop"
                            })),
                        };
                        // Failures (a restarting database) are part of the weather.
                        let Ok(response) = request.send().await else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        sent.fetch_add(1, Ordering::Relaxed);
                        let created = response.status() == 201;
                        if created {
                            if let Ok(body) = response.json::<Value>().await {
                                let id = body["id"].as_str().unwrap_or_default().to_string();
                                if body.get("job_type").is_some() {
                                    jobs.push(id);
                                } else {
                                    technologies.push(id);
                                }
                            }
                        } else if response.status().is_server_error() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            tasks: handles,
        }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        self.sent.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------- the oracle

/// Asserts both views equal the store's fold row for row, and the counts tables equal a
/// `GROUP BY` over the views, once the read models have caught up with a store that may
/// still be moving (workers finishing jobs, leases lapsing): waits, with a deadline, for a
/// moment when they are equal. Returns the number of events checked.
async fn assert_views_equal_the_store(app: &TestApp) -> usize {
    wait_views_equal_store(&app.pool, "", || async {
        app.wait_caught_up().await;
    })
    .await;
    assert_counts_match_views(app).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    usize::try_from(events).unwrap_or_default()
}

/// `commandcenter projections verify` on the app's database: exit status and output.
fn projections_verify(app: &TestApp) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_commandcenter"))
        .args(["projections", "verify"])
        .env("DATABASE_URL", app.database_url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("commandcenter runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

async fn gaps_recorded(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), coalesce(sum(events_filled), 0)::bigint FROM projection_gaps")
        .fetch_one(pool)
        .await
        .expect("gaps")
}

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projectors_killed_at_random_and_mid_batch_lose_nothing() {
    let app = spawn_app_with(|args| {
        args.no_relay = true;
        args.no_projectors = true;
        args.no_workers = true;
    })
    .await;
    let nats = crate::helpers::nats_url();
    let mut roles = Roles::new(&app, &nats);
    let _relay = roles.spawn("relay", None);
    let _workers = [roles.spawn("worker", None), roles.spawn("worker", None)];
    let mut projectors = vec![
        roles.spawn("projector", None),
        roles.spawn("projector", None),
    ];
    let load = Load::start(&app, 4);

    // Random moments: whichever process holds a projector lock dies.
    let mut random_kills = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    for _ in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(150 + seed % 600)).await;
        let active = active_projectors(&app.pool).await;
        if let Some(index) = projectors.iter().position(|p| active.contains(&p.pid())) {
            projectors.swap_remove(index).kill();
            random_kills += 1;
            projectors.push(roles.spawn("projector", None));
        }
    }

    // The exact moment: a batch applied inside its transaction, not committed.
    let mut paused_kills = 0;
    for _ in 0..4 {
        let pausing = roles.spawn("projector", Some(pause::PROJECTOR_BEFORE_COMMIT));
        for other in projectors.drain(..) {
            other.kill();
        }
        let pid = roles.paused(pause::PROJECTOR_BEFORE_COMMIT).await;
        assert_eq!(pid, pausing.pid(), "the pausing projector took over");
        pausing.kill();
        std::fs::remove_file(
            roles
                .pauses
                .0
                .join(format!("{}.{pid}", pause::PROJECTOR_BEFORE_COMMIT)),
        )
        .expect("marker");
        paused_kills += 1;
        projectors.push(roles.spawn("projector", None));
        projectors.push(roles.spawn("projector", None));
    }

    let commands = load.finish().await;
    app.wait_caught_up().await;
    let events = assert_views_equal_the_store(&app).await;
    let (ok, report) = projections_verify(&app);
    assert!(ok, "projections verify:\n{report}");
    let (gaps, filled) = gaps_recorded(&app.pool).await;
    println!(
        "chaos: {random_kills} random + {paused_kills} mid-batch projector kills, {commands} commands, \
         {events} events checked, {gaps} gaps filled from the store ({filled} events)\n{report}"
    );
    assert!(
        random_kills >= 4,
        "most random rounds found an active projector"
    );
    drop(projectors);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarts_under_load_lose_nothing() {
    let postgres = PrivatePostgres::start().await;
    let app = spawn_app_on(&postgres.url(), &crate::helpers::nats_url(), |args| {
        args.no_workers = false;
        args.worker.lease_seconds = 3;
        args.worker.heartbeat_ms = 500;
        args.worker.sweep_ms = 500;
    })
    .await;
    let load = Load::start(&app, 4);
    for mode in ["fast", "immediate", "fast"] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        postgres.restart(mode);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let commands = load.finish().await;
    app.wait_caught_up().await;
    let events = assert_views_equal_the_store(&app).await;
    let (ok, report) = projections_verify(&app);
    assert!(ok, "projections verify:\n{report}");
    println!("postgres: 3 restarts (fast, immediate, fast), {commands} commands, {events} events checked");
    app.stop().await;
}

/// Sessions the database ended while they sat in the service's pool (a restart, an
/// administrator's `pg_terminate_backend`, a proxy's idle cut). The pool checks a session
/// idle for longer than `CHECK_IDLE_SESSION_AFTER`, and only then (not before every use),
/// so requests after that meet none; a batch of commands that meets one used more
/// recently fails at BEGIN, before writing anything, and goes on another session. The
/// relay's and projectors' sessions, leadership locks included, are ended too: they step
/// down, take over again and catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_the_database_ended_are_not_handed_out() {
    let app = spawn_app().await;
    let service = &app;
    // The test's own pool does not name itself "commandcenter", so it survives the cuts.
    let cut = move || async move {
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE datname = current_database() AND application_name LIKE 'commandcenter%'",
        )
        .fetch_one(&service.pool)
        .await
        .expect("sessions ended");
        assert!(ended >= 4, "only {ended} service sessions to end");
    };
    let create = move |title: String| async move {
        let created = service
            .post(
                "/api/v1/technologies",
                &json!({"title": title, "project_id": 1}),
            )
            .await;
        assert_eq!(created.status().as_u16(), 201, "{:?}", created.text().await);
    };
    // Fill the pool with sessions: writes and reads side by side.
    let fill = move |round: &'static str| {
        let mut opened = tokio::task::JoinSet::new();
        for n in 0..32 {
            let client = service.client.clone();
            let list = service.url("/api/v1/technologies?project_id=1&limit=5");
            let post = service.url("/api/v1/technologies");
            opened.spawn(async move {
                let created = client
                    .post(&post)
                    .json(&json!({"title": format!("{round} {n}"), "project_id": 1}))
                    .send()
                    .await
                    .expect("create sent");
                assert_eq!(created.status().as_u16(), 201, "{:?}", created.text().await);
                let listed = client.get(&list).send().await.expect("list sent");
                assert_eq!(listed.status().as_u16(), 200);
            });
        }
        opened
    };
    let mut opened = fill("before the first cut");
    while let Some(done) = opened.join_next().await {
        done.expect("request task");
    }
    // At once: commands meet sessions used a moment ago, lent unchecked.
    cut().await;
    for n in 0..16 {
        create(format!("right after the cut {n}")).await;
    }
    let mut opened = fill("before the second cut");
    while let Some(done) = opened.join_next().await {
        done.expect("request task");
    }
    cut().await;
    tokio::time::sleep(
        commandcenter_event_store::CHECK_IDLE_SESSION_AFTER + Duration::from_millis(200),
    )
    .await;
    // One request at a time, so each takes the pool's next idle session: reads too meet
    // none of the ended ones.
    for n in 0..24 {
        create(format!("after the cut {n}")).await;
        let listed = app.get("/api/v1/technologies?project_id=1&limit=5").await;
        assert_eq!(listed.status().as_u16(), 200, "{:?}", listed.text().await);
    }
    app.wait_caught_up().await;
    assert_eq!(assert_views_equal_the_store(&app).await, 104);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_killed_and_a_stream_that_lost_its_tail_lose_nothing() {
    let mut nats = PrivateNats::start().await;
    let app = spawn_app_on(&crate::helpers::server_url(), &nats.url(), |_| {}).await;

    // Killed and restarted under load.
    let load = Load::start(&app, 3);
    tokio::time::sleep(Duration::from_millis(800)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    nats.spawn().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    load.finish().await;
    app.wait_caught_up().await;
    assert_views_equal_the_store(&app).await;

    // A host crash loses what JetStream had not written to disk: the store as it was
    // at a clean stop comes back after more events were published and applied.
    nats.stop_cleanly();
    let snapshot = nats._dir.0.join("snapshot");
    copy_dir(&nats.store, &snapshot);
    nats.spawn().await;
    for n in 0..20 {
        app.create_technology(&format!("published then lost {n}"))
            .await;
    }
    app.wait_caught_up().await;
    nats.kill();
    std::fs::remove_dir_all(&nats.store).expect("remove store");
    std::fs::rename(&snapshot, &nats.store).expect("restore store");
    nats.spawn().await;
    for n in 0..5 {
        app.create_technology(&format!("after the loss {n}")).await;
    }
    app.wait_caught_up().await;
    // The relay republished the lost tail: the stream again holds every event, in order.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stream: Vec<(String, i64)> = app
            .stream_events_at(&nats.url())
            .await
            .into_iter()
            .map(|e| (e.aggregate_id, e.sequence))
            .collect();
        // The feed's order (tx_id, global_position), which the relay publishes in.
        let stored: Vec<(String, i64)> = sqlx::query_as(
            "SELECT aggregate_id, sequence FROM events ORDER BY tx_id, global_position",
        )
        .fetch_all(&app.pool)
        .await
        .expect("store");
        if stream == stored {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream ({} messages) does not hold the store's {} events in order",
            stream.len(),
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_views_equal_the_store(&app).await;
    let (ok, report) = projections_verify(&app);
    assert!(ok, "projections verify:\n{report}");
    app.stop().await;
}

#[tokio::test]
async fn a_lost_event_is_detected_and_a_gap_is_filled_from_the_store() {
    let app = spawn_app().await;
    let first = app.create_technology("Gap first").await;
    let second = app.create_technology("Gap second").await;
    app.wait_caught_up().await;
    let (ok, report) = projections_verify(&app);
    assert!(ok, "clean views verify:\n{report}");

    // A lost event (as the bug lost them): the row and its count are gone; another row
    // is stale. Verify names each and fails.
    sqlx::query(
        "WITH gone AS (DELETE FROM technology_view WHERE id = $1 \
                        RETURNING project_id, domain, status) \
         UPDATE technology_counts c SET n = c.n - 1 FROM gone \
          WHERE (c.project_id, c.domain, c.status) = (gone.project_id, gone.domain, gone.status)",
    )
    .bind(first["id"].as_str())
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE technology_view SET relevance_score = relevance_score + 1 WHERE id = $1")
        .bind(second["id"].as_str())
        .execute(&app.pool)
        .await
        .unwrap();
    let (ok, report) = projections_verify(&app);
    assert!(!ok, "verify must fail:\n{report}");
    let id = first["id"].as_str().unwrap();
    assert!(
        report.contains(&format!(
            "technology_view [\"{id}\"]: missing from the read model"
        )),
        "{report}"
    );
    assert!(report.contains("relevance_score: read model"), "{report}");
    assert!(report.contains("technology_counts"), "{report}");

    // The next event of the lost aggregate finds no row at version 1: the projector
    // reads the missing event from the store instead of folding over the hole.
    let started = Instant::now();
    let patched = app
        .patch(
            &format!("/api/v1/technologies/{id}"),
            &json!({ "relevance_score": 77 }),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row: Option<(i64, i16)> =
            sqlx::query_as("SELECT version, relevance_score FROM technology_view WHERE id = $1")
                .bind(id)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if row == Some((2, 77)) {
            break;
        }
        assert!(Instant::now() < deadline, "gap not filled: {row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("gap detected and closed in {:?}", started.elapsed());
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM projection_gaps WHERE kind = 'aggregate' AND resolved_at IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(detail.contains(id), "{detail}");
    let status = commandcenter_projections::status(&app.pool, &app.nats.stream())
        .await
        .unwrap();
    assert_eq!(status.projections[0].gaps_detected, 1);
    assert!(status.projections[0].open_gap.is_none());
    // The stale row is overwritten by its next event; then nothing differs.
    let patched = app
        .patch(
            &format!("/api/v1/technologies/{}", second["id"].as_str().unwrap()),
            &json!({ "relevance_score": 60 }),
        )
        .await;
    assert_eq!(patched.status(), 200);
    app.wait_caught_up().await;
    let (ok, report) = projections_verify(&app);
    assert!(ok, "repaired views verify:\n{report}");
    assert_views_equal_the_store(&app).await;
}

#[tokio::test]
async fn a_second_deployment_on_the_same_prefix_is_refused() {
    let first = spawn_app().await;
    first.create_technology("First deployment").await;
    first.wait_caught_up().await;
    let prefix = first.nats.prefix.clone();
    let second = crate::helpers::TestDb::new();
    let mut args = crate::helpers::serve_args(&second.url, &crate::helpers::nats_url(), &prefix);
    args.data_dir = std::env::temp_dir().join(format!("cc-second-{}", Uuid::now_v7().simple()));
    let refused = commandcenter::startup::Application::build(&args)
        .await
        .err()
        .expect("the second deployment must not start on the first one's stream");
    let message = format!("{refused:#}");
    assert!(
        message.contains("belongs to another deployment"),
        "{message}"
    );
    assert!(message.contains("CC_NATS_PREFIX"), "{message}");

    // A core NATS message of another deployment never reaches this one's subscribers.
    let client = async_nats::connect(crate::helpers::nats_url())
        .await
        .unwrap();
    let foreign = format!("{prefix}.{}", "f".repeat(32));
    let ours = first.core_prefix().await;
    let mut heard = client.subscribe(format!("{ours}.views.>")).await.unwrap();
    client.flush().await.unwrap();
    client
        .publish(format!("{foreign}.views.technology_view.1.x"), "{}".into())
        .await
        .unwrap();
    let created = first.create_technology("Only ours").await;
    let message = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut heard),
    )
    .await
    .expect("our change is announced")
    .expect("message");
    assert!(
        message
            .subject
            .as_str()
            .ends_with(created["id"].as_str().unwrap()),
        "{}",
        message.subject
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_claim_and_acknowledgement_loses_no_job() {
    let app = spawn_app_with(|args| args.no_workers = true).await;
    let mut roles = Roles::new(&app, &crate::helpers::nats_url());
    let doomed = roles.spawn("worker", Some(pause::WORKER_AFTER_CLAIM));
    let created = app
        .post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 3, "step_ms": 10}}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dispatched = app
        .post(&format!("/api/v1/jobs/{id}/dispatch"), &json!({}))
        .await;
    assert_eq!(dispatched.status(), 200);
    let pid = roles.paused(pause::WORKER_AFTER_CLAIM).await;
    assert_eq!(pid, doomed.pid());
    doomed.kill();
    // The claim committed, the trigger was never acknowledged, the worker is gone: the
    // lease lapses and another worker runs the job.
    let _survivor = roles.spawn("worker", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = app
            .get(&format!("/api/v1/jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if job["status"] == "completed" {
            assert_eq!(job["attempts"], 2, "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "the job never completed: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.wait_caught_up().await;
    assert_views_equal_the_store(&app).await;
    app.stop().await;
}

/// Group commit (issue 16): a `serve` process SIGKILLed while a batch of commands is
/// written in its transaction but not committed. Every command answered 2xx is in the
/// store exactly as answered; the cut batch (two commands or more, never answered) left
/// nothing; the hash chain is intact. The oracle is an independent fold of the store.
/// (Other committers may commit commands whose answers the kill cut off: an unanswered
/// command may be in the store, but at least the cut batch's are not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_by_a_crash_commits_nothing_and_every_2xx_is_durable() {
    let app = spawn_app().await;
    let mut roles = Roles::new(&app, &crate::helpers::nats_url());
    let port = free_port();
    let data = TempDir::new("batch-crash-data");
    let serve = roles.spawn_with(
        &["serve", "--no-relay", "--no-projectors", "--no-workers"],
        &[
            ("CC_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("CC_DATA_DIR", data.0.display().to_string()),
        ],
        Some(pause::BATCH_BEFORE_COMMIT),
    );
    wait_for_port(port, "serve").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let post = |title: String| {
        let client = client.clone();
        let url = format!("http://127.0.0.1:{port}/api/v1/technologies");
        let key = app.admin_key.clone();
        async move {
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"project_id": 1, "title": title}))
                .send()
                .await;
            let answered = match response {
                // An answer the kill cut off after its status line is no answer.
                Ok(response) if response.status() == 201 => {
                    response.json::<Value>().await.ok().map(|body| {
                        (
                            body["id"].as_str().unwrap().to_string(),
                            body["version"].as_i64().unwrap(),
                            body["position"]
                                .as_str()
                                .unwrap()
                                .parse::<Position>()
                                .unwrap(),
                        )
                    })
                }
                Ok(response) => panic!("unexpected status {}", response.status()),
                Err(_) => None,
            };
            (title, answered)
        }
    };
    // Commands one at a time commit alone, at once: the pause point is for batches.
    let mut requests = Vec::new();
    for i in 0..5 {
        let (title, answered) = post(format!("lone {i}")).await;
        assert!(answered.is_some(), "a lone command is answered");
        requests.push(tokio::spawn(async move { (title, answered) }));
    }
    // Then waves of concurrent commands until a batch of two or more reaches the point.
    let mut wave = 0;
    while std::fs::read_dir(&roles.pauses.0).unwrap().next().is_none() {
        assert!(wave < 50, "no batch of two commands ever formed");
        for i in 0..16 {
            requests.push(tokio::spawn(post(format!("wave {wave} #{i}"))));
        }
        wave += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = roles.paused(pause::BATCH_BEFORE_COMMIT).await;
    assert_eq!(pid, serve.pid());
    serve.kill();

    let mut answered = Vec::new();
    let mut unanswered = Vec::new();
    for request in requests {
        match request.await.unwrap() {
            (title, Some(answer)) => answered.push((title, answer)),
            (title, None) => unanswered.push(title),
        }
    }
    // The cut batch held at least two commands, none of them answered.
    assert!(unanswered.len() >= 2, "{} unanswered", unanswered.len());
    // The killed process's session ends with its transaction rolled back; wait for it.
    crate::helpers::wait_until_no_transaction_is_open(&app.pool).await;

    // The gap-safe feed lags behind any transaction open in the cluster (other tests'):
    // fold until it covers every committed event.
    let deadline = Instant::now() + Duration::from_secs(60);
    let technologies = loop {
        let (technologies, jobs) = fold_store(&app.pool).await;
        let folded: i64 = technologies
            .values()
            .chain(jobs.values())
            .map(|e| e.version)
            .sum();
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if folded == stored {
            break technologies;
        }
        assert!(
            Instant::now() < deadline,
            "the feed never covered the store"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_title: HashMap<String, (&String, &Expected)> = technologies
        .iter()
        .filter_map(|(id, e)| Some((e.fields["title"].as_str()?.to_string(), (id, e))))
        .collect();
    for (title, (id, version, position)) in &answered {
        let (stored_id, expected) = by_title
            .get(title)
            .unwrap_or_else(|| panic!("{title:?} was answered 201 but is not in the store"));
        assert_eq!(*stored_id, id);
        assert!(expected.live);
        assert_eq!((expected.version, expected.position), (*version, *position));
    }
    let left_nothing = unanswered
        .iter()
        .filter(|title| !by_title.contains_key(*title))
        .count();
    assert!(
        left_nothing >= 2,
        "the cut batch (two commands or more) left nothing: {left_nothing} of {} unanswered are absent",
        unanswered.len()
    );
    assert_store_consistent(&app.pool).await;
    eprintln!(
        "batch crash: {} answered, {} cut or queued, {wave} wave(s)",
        answered.len(),
        unanswered.len()
    );
    app.stop().await;
}

/// The event types of aggregate `id`, in order, read from the event store itself (`None`
/// while the database cannot answer).
async fn event_types_of(pool: &PgPool, id: &str) -> Option<Vec<String>> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence")
        .bind(id)
        .fetch_all(pool)
        .await
        .ok()
}

/// A job that ends while PostgreSQL is down: its worker keeps trying to record the
/// outcome, backing off, and records it once the database is back, within the same
/// attempt — no lapsed lease, no second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_ends_while_postgres_is_down_records_its_outcome_when_it_returns() {
    let postgres = PrivatePostgres::start().await;
    let app = spawn_app_on(&postgres.url(), &crate::helpers::nats_url(), |args| {
        args.no_workers = false;
        args.worker.lease_seconds = 40;
        args.worker.sweep_ms = 500;
    })
    .await;
    let created = app
        .post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 2, "step_ms": 1000}}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dispatched = app
        .post(&format!("/api/v1/jobs/{id}/dispatch"), &json!({}))
        .await;
    assert_eq!(dispatched.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !event_types_of(&app.pool, &id)
        .await
        .is_some_and(|types| types.iter().any(|t| t == "JobStarted"))
    {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The job runs for 2 s; the database is away from now for 18 s. Each report waits up
    // to 5 s for a connection: the progress writer's last report fails at about 11 s, the
    // first report of the outcome at about 16 s, and only trying again records it.
    postgres.pg_ctl(&["stop", "-m", "fast"]);
    tokio::time::sleep(Duration::from_secs(18)).await;
    postgres.pg_ctl(&["start"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let types = loop {
        if let Some(types) = event_types_of(&app.pool, &id).await {
            if types
                .iter()
                .any(|t| t == "JobCompleted" || t == "JobFailed")
            {
                break types;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the job's outcome was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let count = |name: &str| types.iter().filter(|t| *t == name).count();
    assert_eq!(count("JobStarted"), 1, "{types:?}");
    assert_eq!(count("JobCompleted"), 1, "{types:?}");
    assert_eq!(count("JobFailed"), 0, "{types:?}");
    app.stop().await;
}
