//! Hardened edges (issue 19): honest 503s when the database goes away, a job socket
//! that accepts a job created a moment ago.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::chaos::PrivatePostgres;
use crate::helpers::spawn_app_on;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_shutdown_answers_503_and_commits_nothing_it_refused() {
    let postgres = PrivatePostgres::start().await;
    let app = spawn_app_on(&postgres.url(), &crate::helpers::nats_url(), |_| {}).await;
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let client = app.client.clone();
            let url = app.url("/api/v1/technologies");
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(6);
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let title = format!("shutdown {w}-{n}");
                    let Ok(response) = client
                        .post(&url)
                        .json(&json!({"project_id": 1, "title": title, "domain": "other"}))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let status = response.status().as_u16();
                    let retry_after = response.headers().get("retry-after").is_some();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    outcomes.push((title, status, retry_after, body));
                }
                outcomes
            })
        })
        .collect();
    for mode in ["fast", "fast", "immediate"] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        postgres.restart(mode);
    }
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.extend(writer.await.unwrap());
    }
    let failures: Vec<&(String, u16, bool, Value)> =
        outcomes.iter().filter(|(_, s, _, _)| *s >= 500).collect();
    assert!(
        failures
            .iter()
            .all(|(_, status, retry, body)| *status == 503
                && *retry
                && matches!(
                    body["type"].as_str().unwrap_or_default(),
                    "urn:commandcenter:problem:unavailable"
                        | "urn:commandcenter:problem:outcome-unknown"
                )),
        "every failure is a 503 with Retry-After: {:?}",
        failures
            .iter()
            .map(|(_, s, _, b)| format!("{s} {b}"))
            .collect::<Vec<_>>()
    );
    // A fresh pool: the test's own connections died with the server.
    let pool = sqlx::PgPool::connect(&app.database_url()).await.unwrap();
    let stored: HashSet<String> =
        sqlx::query_scalar("SELECT jsonb_path_query_first(payload, '$.**.title') #>> '{}' FROM events WHERE sequence = 1")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    // A 503 `unavailable` applied nothing; a 503 `outcome-unknown` (a COMMIT whose answer
    // was lost while the server stayed down) may have either way.
    let mut unknown = 0;
    for (title, status, _, body) in &outcomes {
        match status {
            201 => assert!(
                stored.contains(title),
                "{title} answered 201 but is not stored"
            ),
            503 if body["type"] == "urn:commandcenter:problem:outcome-unknown" => unknown += 1,
            503 => assert!(
                !stored.contains(title),
                "{title} answered 503 but was committed"
            ),
            _ => {}
        }
    }
    println!(
        "database shutdowns: {} commands, {} answered 503 ({unknown} of them outcome-unknown)",
        outcomes.len(),
        failures.len()
    );
    assert!(!failures.is_empty(), "the restarts met commands in flight");
    app.stop().await;
}

/// Log lines captured from the test's own thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The default single-threaded runtime runs the server on this thread, so a thread-local
// subscriber sees every line it logs.
#[tokio::test]
async fn a_client_caused_503_is_not_logged_as_an_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let app = crate::helpers::spawn_app_with(|args| args.query.min_position_wait_ms = 100).await;
    let response = app
        .client
        .get(app.url("/api/v1/technologies"))
        .header("x-cc-min-position", "7fffffffffffffff7fffffffffffffff")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["type"], "urn:commandcenter:problem:not-caught-up",
        "{body}"
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "logged at ERROR: {errors:?}");
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("503")),
        "the 503 is still logged, at WARN:\n{logs}"
    );
}

/// Fills `job_view` (and `job_counts`) with `n` completed jobs of project 1 directly:
/// read-side data for read-side tests, without projecting millions of events.
async fn synthetic_jobs(app: &crate::helpers::TestApp, n: i64) {
    sqlx::query(
        "INSERT INTO job_view (id, project_id, job_type, status, progress, parameters, tags, \
                               attempts, max_attempts, cancel_requested, created_at, updated_at, \
                               is_terminal, version, position, created_position) \
         SELECT 'synthetic-' || g, 1, 'noop', 'completed', 100, '{}'::jsonb, '{}'::text[], \
                1, 3, false, now(), now(), true, 5, lpad(to_hex(g), 32, '0'), lpad(to_hex(g), 32, '0') \
           FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(&app.pool)
    .await
    .expect("synthetic jobs");
    sqlx::query(
        "INSERT INTO job_counts (project_id, job_type, status, n, duration_sum_us, duration_n) \
         VALUES (1, 'noop', 'completed', $1, 0, 0)",
    )
    .bind(n)
    .execute(&app.pool)
    .await
    .expect("synthetic counts");
    sqlx::query("ANALYZE job_view")
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deep_offset_readers_cannot_starve_other_requests() {
    let app = crate::helpers::spawn_app().await;
    synthetic_jobs(&app, 200_000).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deep: Vec<_> = (0..24)
        .map(|c| {
            let client = app.client.clone();
            let base = app.base.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    // Each request its own offset: the answer cache cannot help.
                    let skip = 190_000 + c * 100 + n;
                    let url = format!(
                        "{base}/api/v1/jobs?project_id=1&status_filter=completed&limit=100&skip={skip}"
                    );
                    match client.get(url).send().await {
                        Ok(response) => statuses.push(response.status().as_u16()),
                        Err(_) => statuses.push(0),
                    }
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Small requests meanwhile answer in their normal time (milliseconds; the bound
    // below is generous: it catches starvation, not slowness).
    let mut slowest = Duration::ZERO;
    for _ in 0..15 {
        let started = Instant::now();
        let response = app.get("/api/v1/technologies?limit=1").await;
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = Vec::new();
    for task in deep {
        statuses.extend(task.await.unwrap());
    }
    println!(
        "deep offsets: {} requests ({} answered 200, {} refused 503); slowest small request {slowest:?}",
        statuses.len(),
        statuses.iter().filter(|s| **s == 200).count(),
        statuses.iter().filter(|s| **s == 503).count()
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a small request waited {slowest:?} behind deep-offset readers"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "deep readers get pages or 503s, nothing else: {statuses:?}"
    );
    // The deep page is right: the rows after the offset, newest first.
    let page: Value = app
        .get("/api/v1/jobs?project_id=1&status_filter=completed&limit=3&skip=199998")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["synthetic-2", "synthetic-1"]);
    assert_eq!(page["total"], 200_000);
}

/// An app with 5,000 jobs whose `job_view` a transaction holds locked: a deep read
/// blocks on it, as a slow statement would run.
async fn app_with_locked_jobs(
    statement_timeout_ms: u64,
) -> (
    crate::helpers::TestApp,
    sqlx::Transaction<'static, sqlx::Postgres>,
) {
    let app = crate::helpers::spawn_app_with(|args| {
        args.query.read_statement_timeout_ms = statement_timeout_ms;
    })
    .await;
    synthetic_jobs(&app, 5_000).await;
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE job_view IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    (app, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_deep_read_is_cancelled_and_a_slow_one_answers_503() {
    let (app, holder) = app_with_locked_jobs(30_000).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gave_up = impatient
        .get(app.url("/api/v1/jobs?project_id=1&limit=10&skip=4000"))
        .bearer_auth(&app.admin_key)
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up");
    let running = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity \
              WHERE state = 'active' AND query LIKE 'WITH %OFFSET%' AND pid <> pg_backend_pid() \
                AND datname = current_database()",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while running().await > 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned read still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.rollback().await.unwrap();

    // A deep read past its statement time limit is a 503 with Retry-After, not a 500.
    let (app, holder) = app_with_locked_jobs(200).await;
    let slow = app
        .get("/api/v1/jobs?project_id=1&limit=10&skip=4000")
        .await;
    assert_eq!(slow.status(), 503);
    assert_eq!(slow.headers()["retry-after"], "1");
    holder.rollback().await.unwrap();
    let fine = app
        .get("/api/v1/jobs?project_id=1&limit=10&skip=4000")
        .await;
    assert_eq!(fine.status(), 200);
}

/// How long until the server closes `stream` (EOF or reset), reading whatever it sends;
/// `None` if it is still open after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0_u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The value of metric `name`. A connection the server closes is retried for 5 s: past a
/// flood, the cap may still be full for a moment.
async fn metric(app: &crate::helpers::TestApp, name: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        match reqwest::get(app.url("/metrics")).await {
            Ok(response) => break response.text().await.unwrap(),
            Err(err) if Instant::now() < deadline => {
                println!("reading /metrics again after: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("/metrics unreachable: {err}"),
        }
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not exported"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_silent_and_surplus_connections_are_cut_and_others_still_served() {
    use tokio::io::AsyncWriteExt;
    let app = crate::helpers::spawn_app_with(|args| {
        args.listen.max_connections = 40;
        args.listen.header_read_timeout_ms = 1_000;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();

    // Headers at one byte every 200 ms: cut off by the header-read timeout.
    let slow: Vec<_> = (0..30)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let started = Instant::now();
                stream
                    .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await
                    .unwrap();
                while started.elapsed() < Duration::from_secs(6) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if stream.write_all(b"a").await.is_err() {
                        return Some(started.elapsed());
                    }
                    if closed_within(&mut stream, Duration::from_millis(1))
                        .await
                        .is_some()
                    {
                        return Some(started.elapsed());
                    }
                }
                None
            })
        })
        .collect();
    for task in slow {
        let cut = task.await.unwrap().expect("a slow client is cut off");
        assert!(cut < Duration::from_secs(4), "cut after {cut:?}");
    }

    // A kept-alive connection nobody uses: closed once the next request head is late.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let cut = closed_within(&mut idle, Duration::from_secs(6))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(cut >= Duration::from_millis(1_000), "closed after {cut:?}");

    // A flood of silent connections: those past the cap are closed at once, the others
    // when their header time runs out; a well-behaved client is served meanwhile.
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let closed = futures::future::join_all(
        flood
            .iter_mut()
            .map(|stream| closed_within(stream, Duration::from_millis(300))),
    )
    .await;
    let at_once = closed.iter().filter(|c| c.is_some()).count();
    assert!(
        (20..=30).contains(&at_once),
        "{at_once} of 60 were closed at once at a cap of 40"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let fresh = reqwest::Client::new();
    loop {
        if let Ok(response) = fresh.get(app.url("/health/live")).send().await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the API stopped serving");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&app, "http_connections_refused_total").await >= 20.0);
    assert!(metric(&app, "process_open_fds").await > 0.0);
    println!("flood: {at_once} of 60 connections refused at once at a cap of 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_count_against_the_cap_and_outlive_the_keep_alive_timeout() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let app = crate::helpers::spawn_app_with(|args| {
        args.listen.max_connections = 3;
        args.listen.header_read_timeout_ms = 500;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let open = || async {
        tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &app.admin_key))
            .await
            .expect("socket opens")
            .0
    };
    let mut first = open().await;
    let second = open().await;
    // Quiet for four header timeouts: sockets are not idle HTTP connections.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    first
        .send(Message::Text(
            json!({"subscribe": ["technologies:1"]}).to_string().into(),
        ))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), first.next())
        .await
        .expect("a reply")
        .expect("open")
        .unwrap();
    assert!(reply.to_text().unwrap().contains("subscribed"), "{reply:?}");

    // Two sockets and one more connection fill the cap of 3: the next is refused.
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut fourth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_millis(500))
            .await
            .is_some(),
        "a connection past the cap is refused at once"
    );
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut third).await;
    drop(second);
    // Slots come back when connections close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(response) = reqwest::Client::new()
            .get(app.url("/health/live"))
            .send()
            .await
        {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "no slot came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
