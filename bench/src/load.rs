//! Load generators and ceilings for `bench/run.sh`: closed-loop HTTP clients with HDR
//! latency histograms, a fixed-page HTTP server (the HTTP ceiling), a NATS round trip
//! (the push ceiling), idle WebSocket clients (server memory per client).
//!
//! Every measurement ends with one machine-readable line:
//! `result <name> <key>=<value> ...`, which `bench/run.sh` collects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Prints the `result` line of a load run.
pub(crate) fn print_result(name: &str, requests: u64, seconds: f64, histogram: &Histogram<u64>) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "result {name} rps={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} n={requests}",
        requests as f64 / seconds,
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
    );
}

/// One closed-loop client's latencies (µs) and how many requests it measured.
pub(crate) type Measured = anyhow::Result<(Histogram<u64>, u64)>;

/// The latencies and request counts of every client of a run, merged.
pub(crate) async fn merged(
    clients: Vec<tokio::task::JoinHandle<Measured>>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut total = 0;
    for client in clients {
        let (histogram, count) = client.await??;
        all.add(histogram)?;
        total += count;
    }
    Ok((all, total))
}

/// What each request of a load run is.
#[derive(Debug, Clone)]
pub enum Request {
    /// `GET url`.
    Get(String),
    /// `POST /api/v1/technologies` with a title unique per run, client and request.
    CreateTechnology,
    /// `PATCH /api/v1/jobs/{id}` progress 1..=99 on a job the client owns, then the
    /// next job (created, dispatched and started outside the measurement).
    Progress,
}

struct Client {
    http: reqwest::Client,
    base: String,
    run: String,
    client: usize,
    counter: u64,
    job: Option<(String, u64)>,
}

/// Creates a `noop` job in project 1 on the service at `base`; returns its id.
pub async fn create_noop_job(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let job: Value = http
        .post(format!("{base}/api/v1/jobs"))
        .json(&json!({"project_id": 1, "job_type": "noop"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(job["id"].as_str().context("job id")?.to_string())
}

impl Client {
    async fn new_job(&mut self) -> anyhow::Result<()> {
        let base = &self.base;
        let id = create_noop_job(&self.http, base).await?;
        self.http
            .post(format!("{base}/api/v1/jobs/{id}/dispatch"))
            .send()
            .await?
            .error_for_status()?;
        self.http
            .patch(format!("{base}/api/v1/jobs/{id}"))
            .json(&json!({"status": "running"}))
            .send()
            .await?
            .error_for_status()?;
        self.job = Some((id, 0));
        Ok(())
    }

    /// Prepares the next request; returns it ready to send.
    async fn next(&mut self, request: &Request) -> anyhow::Result<reqwest::RequestBuilder> {
        self.counter += 1;
        Ok(match request {
            Request::Get(url) => self.http.get(url),
            Request::CreateTechnology => self
                .http
                .post(format!("{}/api/v1/technologies", self.base))
                .json(&json!({
                    "project_id": 1,
                    "title": format!("bench-{}-{}-{}", self.run, self.client, self.counter),
                    "domain": "audio-dsp",
                    "tags": ["bench"],
                })),
            Request::Progress => {
                if self.job.as_ref().is_none_or(|(_, p)| *p >= 99) {
                    self.new_job().await?;
                }
                let (id, progress) = self.job.as_mut().context("job")?;
                *progress += 1;
                self.http
                    .patch(format!("{}/api/v1/jobs/{id}", self.base))
                    .json(&json!({"progress": *progress}))
            }
        })
    }
}

/// `clients` closed-loop clients sending `request` for `seconds` (after `warmup`
/// seconds not counted); prints req/s and latency percentiles.
pub async fn run_load(
    name: &str,
    base: &str,
    request: Request,
    clients: usize,
    seconds: f64,
    warmup: f64,
) -> anyhow::Result<()> {
    let http = crate::key::client_builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let run = format!("{:x}{nanos:x}", std::process::id());
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(warmup);
    let stop_at = measure_from + Duration::from_secs_f64(seconds);
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let mut state = Client {
            http: http.clone(),
            base: base.to_string(),
            run: run.clone(),
            client,
            counter: 0,
            job: None,
        };
        let request = request.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut count = 0_u64;
            loop {
                let builder = state.next(&request).await?;
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let response = builder.send().await;
                let done = Instant::now();
                let ok = match response {
                    Ok(r) => {
                        let ok = r.status().is_success();
                        let _ = r.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                if sent >= measure_from {
                    histogram.record((done - sent).as_micros().max(1) as u64)?;
                    count += 1;
                }
            }
            Ok::<_, anyhow::Error>((histogram, count))
        }));
    }
    let (all, total) = merged(tasks).await?;
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} requests of {name} failed");
    }
    print_result(name, total, seconds, &all);
    Ok(())
}

/// Serves a fixed 20-item JSON page on `listen`: the most an axum handler can answer on
/// this machine, the HTTP ceiling.
pub async fn fixed_server(listen: &str) -> anyhow::Result<()> {
    let items: Vec<Value> = (0..20)
        .map(|i| {
            json!({
                "id": format!("0190b6c2-0000-7000-8000-{i:012}"),
                "project_id": 3, "job_type": "noop", "status": "completed", "progress": 100,
                "attempts": 1, "max_attempts": 3, "created_at": "2026-11-29T06:00:00Z",
                "parameters": {"steps": 1, "step_ms": 0}, "tags": [], "is_terminal": true,
            })
        })
        .collect();
    let body = bytes::Bytes::from(serde_json::to_vec(
        &json!({"jobs": items, "total": 20, "skip": 0, "limit": 20, "next_cursor": null}),
    )?);
    let app = axum::Router::new().route(
        "/page",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Core NATS publish → subscribe round trips, one at a time: the push ceiling.
pub async fn nats_rtt(nats_url: &str, samples: u64) -> anyhow::Result<()> {
    let client = async_nats::connect(nats_url).await.context("NATS")?;
    let subject = format!("ccbench.rtt.{}", std::process::id());
    let mut subscriber = client.subscribe(subject.clone()).await?;
    client.flush().await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for n in 0..samples {
        let sent = Instant::now();
        client
            .publish(subject.clone(), n.to_string().into_bytes().into())
            .await?;
        tokio::time::timeout(Duration::from_secs(5), subscriber.next())
            .await
            .context("no message within 5 s")?
            .context("subscription closed")?;
        histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
    }
    print_result("nats_rtt", samples, 1.0, &histogram);
    Ok(())
}

/// Walks `path` (a jobs list) page by page with `limit=1000` until `depth` rows deep and
/// prints the cursor found there.
pub async fn deep_cursor(base: &str, path: &str, depth: u64) -> anyhow::Result<()> {
    let http = crate::key::client();
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    while seen < depth {
        let url = match &cursor {
            Some(c) => format!("{base}{path}&limit=1000&cursor={c}"),
            None => format!("{base}{path}&limit=1000"),
        };
        let page: Value = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        seen += page["jobs"].as_array().map_or(0, |j| j.len() as u64);
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            bail!("the list ends at {seen} rows, before {depth}");
        }
    }
    println!(
        "result deep_cursor depth={seen} cursor={}",
        cursor.unwrap_or_default()
    );
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS not found")
}

/// A failed WebSocket connect, on standard error (the bench has no logger).
fn report_retry(err: &tokio_tungstenite::tungstenite::Error) {
    eprintln!("idle-sockets: a connect failed ({err}); retrying");
}

/// Opens `clients` WebSocket clients on `/api/v1/ws`, each subscribed to one job topic,
/// holds them idle, and prints the server's (process `pid`) RSS growth per client.
pub async fn idle_sockets(base: &str, pid: u32, clients: usize) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let ws = format!("{}/api/v1/ws", base.replacen("http", "ws", 1));
    let before = rss_kib(pid)?;
    let mut sockets = Vec::with_capacity(clients);
    let opened = Instant::now();
    // What is measured is the memory of idle clients, not the handshake: a connection cut
    // during its handshake (seen once, with 256 handshakes in flight on a loaded machine)
    // is retried twice, and the retries are reported.
    let retries = Arc::new(AtomicU64::new(0));
    let mut batch = futures::stream::iter(0..clients)
        .map(|n| {
            let (ws, retries) = (ws.clone(), retries.clone());
            async move {
                let mut attempt = 0;
                let (mut socket, _) = loop {
                    match tokio_tungstenite::connect_async(crate::key::ws(ws.clone())).await {
                        Ok(connected) => break connected,
                        Err(err) if attempt < 2 => {
                            attempt += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                            report_retry(&err);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(err) => return Err(err.into()),
                    }
                };
                let subscribe = json!({"subscribe": [format!("job:idle-{n}")]}).to_string();
                futures::SinkExt::send(&mut socket, Message::text(subscribe)).await?;
                Ok::<_, anyhow::Error>(socket)
            }
        })
        .buffer_unordered(256);
    while let Some(socket) = batch.next().await {
        sockets.push(socket?);
    }
    // Let the server settle its buffers before reading its memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid)?;
    let per_client = (after.saturating_sub(before)) as f64 / clients as f64;
    println!(
        "result idle_ws_{clients} clients={clients} rss_before_kib={before} rss_after_kib={after} per_client_kib={per_client:.2} open_seconds={:.1} connect_retries={}",
        opened.elapsed().as_secs_f64(),
        retries.load(Ordering::Relaxed)
    );
    drop(sockets);
    Ok(())
}
