//! `cc-bench`: latency probes against a running CommandCenter (loopback only).
//!
//! - `view-latency`: for each of N commands sent one after another, the time from the
//!   command's 2xx response to the announcement (core NATS, published by the projector
//!   right after the row's commit) that its row is visible in `technology_view`, matched
//!   by position.
//! - `ws-latency`: for each of N progress reports (`PATCH /api/v1/jobs/{id}`) on a
//!   running job, the time from the 2xx to the `progress` message carrying it on the
//!   job's WebSocket.
//!
//! - `submit-jobs` / `wait-jobs`: job throughput. Submit N `noop` jobs (created and
//!   dispatched) while no worker runs, then start the worker(s) and time how long the
//!   read model takes to show all N completed (`bench/jobs.sh` does both).
//! - `cqrs-ceiling`: the bare library's create loop, ceiling (a) of the write scenarios
//!   (`cqrs.rs`).
//! - `drop-stream`: deletes a benchmark deployment's JetStream stream.
//!
//! Latencies are reported as p50/p99/max from an HDR histogram.
#![forbid(unsafe_code)]

mod cqrs;
mod key;
mod load;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "cc-bench",
    about = "Latency probes against a running CommandCenter"
)]
struct Cli {
    /// API key sent with every request and socket (an admin key of the service measured).
    #[arg(long, env = "CC_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time from a progress command's 2xx to its WebSocket message.
    WsLatency {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Progress reports to time.
        #[arg(long, default_value_t = 2000)]
        samples: u64,
    },
    /// Time from a command's 2xx to its row being visible in technology_view.
    ViewLatency {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// NATS server.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// The service's subject prefix.
        #[arg(long, default_value = "cc")]
        nats_prefix: String,
        /// Commands to time.
        #[arg(long, default_value_t = 2000)]
        samples: u64,
        /// Project the probe technologies go to (registered: `commandcenter projects create`).
        #[arg(long, default_value_t = 1)]
        project_id: i64,
    },
    /// Create and dispatch `noop` jobs (steps=1, step_ms=0) in one project.
    SubmitJobs {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Jobs to submit.
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        /// Project of the jobs (registered: `commandcenter projects create`).
        #[arg(long, default_value_t = 1)]
        project_id: i64,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Wait until `jobs` jobs of the project are completed; print the rate.
    WaitJobs {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Jobs to wait for.
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        /// Project of the jobs (registered: `commandcenter projects create`).
        #[arg(long, default_value_t = 1)]
        project_id: i64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// Time from a running job's cancel command to its `JobCancelled` event (needs a
    /// worker): `noop` jobs of `step_ms` steps, which check for a stop between steps.
    CancelLatency {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Jobs to cancel.
        #[arg(long, default_value_t = 50)]
        samples: u64,
        /// Length of one step of the job (a step is not interrupted; past the worker's
        /// cancel grace the job is aborted).
        #[arg(long, default_value_t = 10)]
        step_ms: u64,
    },
    /// Closed-loop GET load on one URL path: req/s and latency percentiles.
    HttpLoad {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Path and query to GET.
        #[arg(long)]
        path: String,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Name of the result line.
        #[arg(long, default_value = "http_load")]
        name: String,
    },
    /// Closed-loop command load: `technologies` (POST, unique titles) or `progress`
    /// (PATCH progress on running jobs, one per client at a time).
    WriteLoad {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// `technologies` or `progress`.
        #[arg(long)]
        kind: String,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    /// Ceiling (a) of the write scenarios: the bare library (`cqrs-es` + `postgres-es`)
    /// creating one technology per new aggregate, no HTTP; on a database of its own.
    CqrsCeiling {
        /// A database used for nothing else (postgres-es's table is created in it).
        #[arg(long)]
        database_url: String,
        /// Concurrent tasks (and pool connections).
        #[arg(long, default_value_t = 32)]
        tasks: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    /// Serve a fixed 20-item JSON page on `GET /page` (the HTTP ceiling).
    FixedServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18100")]
        listen: String,
    },
    /// Core NATS publish → subscribe round trips (the push ceiling).
    NatsRtt {
        /// NATS server.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Round trips.
        #[arg(long, default_value_t = 5000)]
        samples: u64,
    },
    /// Walk a jobs list to a depth and print the cursor there.
    DeepCursor {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Path and query of the list (with a `?`).
        #[arg(long)]
        path: String,
        /// Rows deep.
        #[arg(long)]
        depth: u64,
    },
    /// Hold idle WebSocket clients and report the server's RSS per client.
    IdleSockets {
        /// Base URL of the service (must be on this machine).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The server's process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        /// Clients to open.
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
    },
    /// Delete the JetStream stream of a subject prefix (benchmark clean-up).
    DropStream {
        /// NATS server.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// The deployment's subject prefix.
        #[arg(long)]
        nats_prefix: String,
    },
}

fn loopback_only(url: &str) -> anyhow::Result<()> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    if host == "127.0.0.1" || host == "localhost" || host == "[::1]" {
        Ok(())
    } else {
        bail!("cc-bench only targets this machine (127.0.0.1, localhost, [::1]), not {host}")
    }
}

fn report(name: &str, histogram: &Histogram<u64>) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        histogram.len(),
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max())
    );
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    println!(
        "result {} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} n={}",
        slug.split('_')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("_"),
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
        histogram.len()
    );
}

async fn view_latency(
    url: &str,
    nats_url: &str,
    prefix: &str,
    samples: u64,
    project_id: i64,
) -> anyhow::Result<()> {
    loopback_only(url)?;
    let nats = async_nats::connect(nats_url).await.context("NATS")?;
    let mut announcements = nats
        // `<prefix>.<deployment>.views…`: the run has one deployment per prefix.
        .subscribe(format!("{prefix}.*.views.technology_view.{project_id}.>"))
        .await?;
    nats.flush().await?;
    let http = crate::key::client();
    let run = std::process::id();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // Announcements that arrive before the 2xx is read are kept here by position.
    let mut early: HashMap<String, Instant> = HashMap::new();
    for n in 0..samples {
        let response = http
            .post(format!("{url}/api/v1/technologies"))
            .json(&json!({"project_id": project_id, "title": format!("probe {run}-{n}")}))
            .send()
            .await?;
        let acknowledged = Instant::now();
        if response.status().as_u16() != 201 {
            bail!(
                "command failed: {} {}",
                response.status(),
                response.text().await?
            );
        }
        let body: Value = response.json().await?;
        let position = body["position"].as_str().context("position")?.to_string();
        let visible = match early.remove(&position) {
            Some(at) => at,
            None => loop {
                let message = tokio::time::timeout(Duration::from_secs(10), announcements.next())
                    .await
                    .context("no announcement within 10 s")?
                    .context("subscription closed")?;
                let at = Instant::now();
                let change: Value = serde_json::from_slice(&message.payload)?;
                let seen = change["position"].as_str().unwrap_or_default().to_string();
                if seen == position {
                    break at;
                }
                early.insert(seen, at);
            },
        };
        let micros = visible.saturating_duration_since(acknowledged).as_micros() as u64;
        histogram.record(micros.max(1))?;
    }
    report("2xx -> row visible in technology_view", &histogram);
    Ok(())
}

async fn ws_latency(url: &str, samples: u64) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    loopback_only(url)?;
    let http = crate::key::client();
    let id = load::create_noop_job(&http, url).await?;
    let path = format!("{url}/api/v1/jobs/{id}");
    http.post(format!("{path}/dispatch"))
        .send()
        .await?
        .error_for_status()?;
    http.patch(&path)
        .json(&json!({"status": "running"}))
        .send()
        .await?
        .error_for_status()?;
    // Wait until the job's row is running, so the socket starts from it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row: Value = http.get(&path).send().await?.json().await?;
        if row["status"] == "running" {
            break;
        }
        if Instant::now() > deadline {
            bail!("job never showed as running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ws_url = format!("{}/api/v1/jobs/ws/{id}", url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(crate::key::ws(ws_url)).await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for n in 0..samples {
        let step = format!("step {n}");
        let progress = (n * 99 / samples.max(1)).min(99);
        let response = http
            .patch(&path)
            .json(&json!({"progress": progress, "current_step": step}))
            .send()
            .await?;
        let acknowledged = Instant::now();
        if !response.status().is_success() {
            bail!(
                "progress failed: {} {}",
                response.status(),
                response.text().await?
            );
        }
        let arrived = loop {
            let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .context("no WebSocket message within 10 s")?
                .context("socket closed")??;
            let at = Instant::now();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text)?;
                if value["type"] == "progress" && value["current_step"] == step.as_str() {
                    break at;
                }
            }
        };
        let micros = arrived.saturating_duration_since(acknowledged).as_micros() as u64;
        histogram.record(micros.max(1))?;
    }
    report("progress 2xx -> WebSocket message", &histogram);
    Ok(())
}

async fn submit_jobs(
    url: &str,
    jobs: u64,
    project_id: i64,
    concurrency: usize,
) -> anyhow::Result<()> {
    loopback_only(url)?;
    let http = crate::key::client();
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..jobs)
        .map(|_| {
            let http = http.clone();
            async move {
                let body = json!({"project_id": project_id, "job_type": "noop", "parameters": {"steps": 1, "step_ms": 0}});
                let created = http.post(format!("{url}/api/v1/jobs")).json(&body).send().await?;
                if created.status() != 201 {
                    bail!("create answered {}", created.status());
                }
                let job: Value = created.json().await?;
                let id = job["id"].as_str().context("job id")?;
                let dispatched = http
                    .post(format!("{url}/api/v1/jobs/{id}/dispatch"))
                    .send()
                    .await?;
                if dispatched.status() != 200 {
                    bail!("dispatch answered {}", dispatched.status());
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(err)) = results.into_iter().find(Result::is_err) {
        bail!("{failed} of {jobs} submissions failed; first: {err}");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "submitted {jobs} jobs in {seconds:.1} s ({:.0} jobs/s, 2 commands each)",
        jobs as f64 / seconds
    );
    Ok(())
}

async fn wait_jobs(url: &str, jobs: u64, project_id: i64, timeout: Duration) -> anyhow::Result<()> {
    loopback_only(url)?;
    let http = crate::key::client();
    let started = Instant::now();
    loop {
        let summary: Value = http
            .get(format!(
                "{url}/api/v1/jobs/statistics/summary?project_id={project_id}"
            ))
            .send()
            .await?
            .json()
            .await?;
        let completed = summary["by_status"]["completed"].as_u64().unwrap_or(0);
        if completed >= jobs {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "completed {completed} jobs in {seconds:.1} s: {:.0} jobs/s = {:.0} jobs/hour",
                completed as f64 / seconds,
                completed as f64 / seconds * 3600.0
            );
            println!(
                "result noop_jobs jobs={completed} seconds={seconds:.2} jobs_per_hour={:.0}",
                completed as f64 / seconds * 3600.0
            );
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("only {completed} of {jobs} jobs completed after {timeout:?}: {summary}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cancel_latency(url: &str, samples: u64, step_ms: u64) -> anyhow::Result<()> {
    loopback_only(url)?;
    let http = crate::key::client();
    let mut histogram = Histogram::<u64>::new(3)?;
    for _ in 0..samples {
        let body = json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 100_000, "step_ms": step_ms}});
        let job: Value = http
            .post(format!("{url}/api/v1/jobs"))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let id = job["id"].as_str().context("job id")?.to_string();
        http.post(format!("{url}/api/v1/jobs/{id}/dispatch"))
            .send()
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let progress: Value = http
                .get(format!("{url}/api/v1/jobs/{id}/progress"))
                .send()
                .await?
                .json()
                .await?;
            if progress["status"] == "running" {
                break;
            }
            if Instant::now() > deadline {
                bail!("job {id} did not start: is a worker running?");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let it run a little, mid-step.
        tokio::time::sleep(Duration::from_millis(step_ms.min(200) * 3 + 7)).await;
        let cancelled = http
            .post(format!("{url}/api/v1/jobs/{id}/cancel"))
            .send()
            .await?;
        if cancelled.status() != 200 {
            bail!("cancel answered {}", cancelled.status());
        }
        let history = loop {
            let history: Value = http
                .get(format!("{url}/api/v1/jobs/{id}/history"))
                .send()
                .await?
                .json()
                .await?;
            let events = history["events"].as_array().cloned().unwrap_or_default();
            if events.iter().any(|e| e["event_type"] == "JobCancelled") {
                break events;
            }
            if Instant::now() > deadline {
                bail!("job {id} was not cancelled");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let recorded = |kind: &str| {
            history
                .iter()
                .find(|e| e["event_type"] == kind)
                .and_then(|e| e["recorded_at"].as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        let (Some(asked), Some(done)) = (recorded("JobCancelRequested"), recorded("JobCancelled"))
        else {
            bail!("job {id}: cancel events missing from its history");
        };
        let micros = (done - asked).num_microseconds().unwrap_or(0).max(0);
        histogram.record(u64::try_from(micros).unwrap_or(0))?;
    }
    report("cancel command -> JobCancelled", &histogram);
    Ok(())
}

async fn drop_stream(nats_url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(nats_url).await.context("NATS")?;
    let js = async_nats::jetstream::new(client);
    let name = format!("{}_EVENTS", prefix.to_uppercase().replace('-', "_"));
    js.delete_stream(&name)
        .await
        .with_context(|| format!("delete stream {name}"))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    key::init(cli.api_key);
    match cli.command {
        Command::WsLatency { url, samples } => ws_latency(&url, samples).await,
        Command::ViewLatency {
            url,
            nats_url,
            nats_prefix,
            samples,
            project_id,
        } => view_latency(&url, &nats_url, &nats_prefix, samples, project_id).await,
        Command::SubmitJobs {
            url,
            jobs,
            project_id,
            concurrency,
        } => submit_jobs(&url, jobs, project_id, concurrency).await,
        Command::WaitJobs {
            url,
            jobs,
            project_id,
            timeout_seconds,
        } => wait_jobs(&url, jobs, project_id, Duration::from_secs(timeout_seconds)).await,
        Command::CancelLatency {
            url,
            samples,
            step_ms,
        } => cancel_latency(&url, samples, step_ms).await,
        Command::DropStream {
            nats_url,
            nats_prefix,
        } => drop_stream(&nats_url, &nats_prefix).await,
        Command::HttpLoad {
            url,
            path,
            clients,
            seconds,
            warmup,
            name,
        } => {
            loopback_only(&url)?;
            let target = format!("{url}{path}");
            load::run_load(
                &name,
                &url,
                load::Request::Get(target),
                clients,
                seconds,
                warmup,
            )
            .await
        }
        Command::CqrsCeiling {
            database_url,
            tasks,
            seconds,
            warmup,
        } => cqrs::ceiling(&database_url, tasks, seconds, warmup).await,
        Command::WriteLoad {
            url,
            kind,
            clients,
            seconds,
            warmup,
        } => {
            loopback_only(&url)?;
            let (name, request) = match kind.as_str() {
                "technologies" => ("post_technologies", load::Request::CreateTechnology),
                "progress" => ("job_progress", load::Request::Progress),
                other => bail!("unknown kind {other:?}: technologies or progress"),
            };
            load::run_load(name, &url, request, clients, seconds, warmup).await
        }
        Command::FixedServer { listen } => load::fixed_server(&listen).await,
        Command::NatsRtt { nats_url, samples } => load::nats_rtt(&nats_url, samples).await,
        Command::DeepCursor { url, path, depth } => {
            loopback_only(&url)?;
            load::deep_cursor(&url, &path, depth).await
        }
        Command::IdleSockets { url, pid, clients } => {
            loopback_only(&url)?;
            load::idle_sockets(&url, pid, clients).await
        }
    }
}
