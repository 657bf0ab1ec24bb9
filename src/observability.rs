//! Metrics plumbing of the service: the HTTP middleware that times every request by
//! route template, `GET /metrics`, and the sampler that turns lag, pool and job-queue
//! state into gauges when `/metrics` is read (at most once a second): nobody reading
//! them, nothing is sampled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use commandcenter_metrics::Metrics;
use commandcenter_relay::EventStream;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Gauges are sampled at most this often (a read of `/metrics` within it answers the
/// last sample).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Counts and times a request under its route template (`unmatched` for no route).
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics
        .http_requests
        .with_label_values(&[&method, &route, &status])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A sample of the database's state waits at most this long (the database may be down):
/// `/metrics` then answers with the gauges of the last sample.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition of every metric", body = String, content_type = "text/plain")))]
async fn metrics_text(State(sampler): State<Arc<Sampler>>) -> Response {
    sampler.refresh().await;
    let mut response = sampler.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// `GET /metrics`, documented.
pub fn api() -> OpenApiRouter<Arc<Sampler>> {
    OpenApiRouter::new().routes(routes!(metrics_text))
}

/// Samples relay, projection and read replica lag, pool connections and the job queue into
/// the gauges of `metrics`, when they are read.
pub struct Sampler {
    metrics: Arc<Metrics>,
    pool: PgPool,
    replicas: commandcenter_query_api::ReadPools,
    stream: EventStream,
    /// When the last sample was taken; held while one is taken, so concurrent reads of
    /// `/metrics` share it.
    last: tokio::sync::Mutex<Option<Instant>>,
}

impl Sampler {
    /// A sampler of the databases behind `pool` and `replicas` and of the relay to
    /// `stream`, into `metrics`.
    pub fn new(
        metrics: Arc<Metrics>,
        pool: PgPool,
        replicas: commandcenter_query_api::ReadPools,
        stream: EventStream,
    ) -> Self {
        Self {
            metrics,
            pool,
            replicas,
            stream,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Samples the gauges unless the last sample is younger than [`SAMPLE_EVERY`]; gives
    /// up after [`SAMPLE_TIMEOUT`] (gauges keep their last values).
    pub async fn refresh(&self) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|at| at.elapsed() < SAMPLE_EVERY) {
            return;
        }
        if tokio::time::timeout(SAMPLE_TIMEOUT, self.sample())
            .await
            .is_err()
        {
            tracing::debug!("the gauges' sample timed out");
        }
        *last = Some(Instant::now());
    }

    async fn sample(&self) {
        let Self {
            metrics,
            pool,
            replicas,
            stream,
            ..
        } = self;
        let pools = std::iter::once(("primary".to_string(), pool.size(), pool.num_idle()))
            .chain(replicas.replica_connections());
        for (name, size, idle) in pools {
            let (size, idle) = (i64::from(size), idle as i64);
            metrics
                .db_pool_connections
                .with_label_values(&[&name, "idle"])
                .set(idle);
            metrics
                .db_pool_connections
                .with_label_values(&[&name, "active"])
                .set(size - idle);
        }
        match commandcenter_projections::status(pool, stream).await {
            Ok(report) => {
                metrics.relay_lag_events.set(report.relay.lag_events);
                metrics.relay_lag_seconds.set(report.relay.lag_seconds);
                for lag in &report.projections {
                    let name = lag.name.as_str();
                    let position = lag.checkpoint.map_or(0, |p| p.global_position);
                    metrics
                        .projection_checkpoint
                        .with_label_values(&[name])
                        .set(position);
                    metrics
                        .projection_lag_events
                        .with_label_values(&[name])
                        .set(lag.lag_events);
                    metrics
                        .projection_lag_seconds
                        .with_label_values(&[name])
                        .set(lag.lag_seconds);
                    metrics
                        .projection_gaps
                        .with_label_values(&[name])
                        .set(lag.gaps_detected);
                    metrics
                        .projection_gap_open
                        .with_label_values(&[name])
                        .set(i64::from(lag.open_gap.is_some()));
                }
            }
            Err(err) => tracing::debug!(%err, "lag sample failed"),
        }
        let queue: Result<(i64, i64), _> = sqlx::query_as(
            "SELECT (SELECT coalesce(sum(n), 0)::bigint FROM job_counts WHERE status = 'running'), \
                    (SELECT count(*) FROM job_view WHERE status = 'pending' AND scheduled_for <= now())",
        )
        .fetch_one(pool)
        .await;
        if let Ok((running, queued)) = queue {
            metrics.jobs_running.set(running);
            metrics.job_queue_depth.set(queued);
        }
        // Last: each replica that does not answer takes its own bound (1 s) of the
        // sample's time, and must not hold back the primary's gauges.
        for lag in replicas.replica_lag().await {
            metrics
                .db_replica_lag_seconds
                .with_label_values(&[&lag.name])
                .set(lag.seconds);
            metrics
                .db_replica_lag_bytes
                .with_label_values(&[&lag.name])
                .set(lag.bytes);
        }
    }
}
