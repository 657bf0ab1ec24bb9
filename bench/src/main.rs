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
//! Reported as p50/p99/max from an HDR histogram.

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
        /// Project the probe technologies go to.
        #[arg(long, default_value_t = 999)]
        project_id: i64,
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
        .subscribe(format!("{prefix}.views.technology_view.{project_id}.>"))
        .await?;
    nats.flush().await?;
    let http = reqwest::Client::new();
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
    let http = reqwest::Client::new();
    let job: Value = http
        .post(format!("{url}/api/v1/jobs"))
        .json(&json!({"project_id": 999, "job_type": "noop"}))
        .send()
        .await?
        .json()
        .await?;
    let id = job["id"].as_str().context("job id")?.to_string();
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
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await?;
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::WsLatency { url, samples } => ws_latency(&url, samples).await,
        Command::ViewLatency {
            url,
            nats_url,
            nats_prefix,
            samples,
            project_id,
        } => view_latency(&url, &nats_url, &nats_prefix, samples, project_id).await,
    }
}
