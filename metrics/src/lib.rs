//! Every metric CommandCenter exports, in one registry per running service (not a
//! process-global one), handed to each component that reports. `GET /metrics` renders
//! it in the Prometheus text format; `deploy/grafana/commandcenter.json` queries these
//! names, and a test checks the two agree.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 0.5 ms to ~16 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.0, 16).unwrap_or_default()
}

/// The metrics of one service.
pub struct Metrics {
    registry: Registry,
    /// `http_requests_total{method,route,status}`.
    pub http_requests: IntCounterVec,
    /// `http_request_duration_seconds{method,route}`.
    pub http_duration: HistogramVec,
    /// `commands_total{aggregate,command,outcome}`; outcome `accepted`, `conflict`,
    /// `rejected`, `overloaded` (the commit queue was full) or `error`.
    pub commands: IntCounterVec,
    /// `events_appended_total{aggregate,event_type}`.
    pub events_appended: IntCounterVec,
    /// `append_duration_seconds`: one command's transaction, begin to commit.
    pub append_duration: Histogram,
    /// `command_states_total{aggregate,source}`: the states commands were decided on, one
    /// per decision (`new`, `recent`, `store`; `recent_rechecked` when a remembered
    /// state's decision was taken again, which then also counts as `store`; each retry
    /// counts again).
    pub command_states: IntCounterVec,
    /// `relay_published_total`.
    pub relay_published: IntCounter,
    /// `relay_lag_events`.
    pub relay_lag_events: IntGauge,
    /// `relay_lag_seconds`.
    pub relay_lag_seconds: Gauge,
    /// `projection_checkpoint_position{projection}` (the global position).
    pub projection_checkpoint: IntGaugeVec,
    /// `projection_lag_events{projection}`.
    pub projection_lag_events: IntGaugeVec,
    /// `projection_lag_seconds{projection}`.
    pub projection_lag_seconds: GaugeVec,
    /// `projection_gaps_total{projection}`: gaps ever detected (filled or not).
    pub projection_gaps: IntGaugeVec,
    /// `projection_gap_open{projection}`: 1 while a gap stops the read model.
    pub projection_gap_open: IntGaugeVec,
    /// `projection_batch_size{projection}`.
    pub projection_batch_size: HistogramVec,
    /// `projection_apply_duration_seconds{projection}`.
    pub projection_apply_duration: HistogramVec,
    /// `query_cache_hits_total`.
    pub cache_hits: IntCounter,
    /// `query_cache_misses_total`.
    pub cache_misses: IntCounter,
    /// `db_pool_connections{pool,state}`.
    pub db_pool_connections: IntGaugeVec,
    /// `db_replica_lag_seconds{replica}`: how long ago the last transaction a read
    /// replica replayed committed, while it is behind (0 when caught up).
    pub db_replica_lag_seconds: GaugeVec,
    /// `db_replica_lag_bytes{replica}`: WAL the primary wrote that a read replica has
    /// not replayed.
    pub db_replica_lag_bytes: IntGaugeVec,
    /// `http_connections_open`: HTTP connections open now (WebSockets while upgrading).
    pub http_connections_open: IntGauge,
    /// `http_connections_refused_total`: connections closed at once at the cap.
    pub http_connections_refused: IntCounter,
    /// `process_open_fds`: file descriptors the process has open.
    pub process_open_fds: IntGauge,
    /// `process_max_fds`: the process's open-file limit.
    pub process_max_fds: IntGauge,
    /// `websocket_connections_active`.
    pub websocket_connections: IntGauge,
    /// `websocket_messages_sent_total`.
    pub websocket_messages: IntCounter,
    /// `websocket_lagged_total`.
    pub websocket_lagged: IntCounter,
    /// `jobs_total{job_type,outcome}`.
    pub jobs: IntCounterVec,
    /// `job_duration_seconds{job_type}`.
    pub job_duration: HistogramVec,
    /// `jobs_running`.
    pub jobs_running: IntGauge,
    /// `job_queue_depth`: dispatched jobs waiting for a worker.
    pub job_queue_depth: IntGauge,
}

/// Builds and registers a metric; the names are constants, so failure is a bug.
macro_rules! register {
    ($registry:expr, $metric:expr) => {{
        let metric = $metric.expect("metric definition");
        $registry
            .register(Box::new(metric.clone()))
            .expect("metric registered once");
        metric
    }};
}

impl Metrics {
    /// A fresh registry with every metric.
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let h = |name: &str, help: &str| HistogramOpts::new(name, help).buckets(latency_buckets());
        Arc::new(Self {
            http_requests: register!(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "http_requests_total",
                        "HTTP requests by route template and status"
                    ),
                    &["method", "route", "status"]
                )
            ),
            http_duration: register!(
                r,
                HistogramVec::new(
                    h("http_request_duration_seconds", "HTTP request latency"),
                    &["method", "route"]
                )
            ),
            commands: register!(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "commands_total",
                        "Commands by aggregate, command and outcome"
                    ),
                    &["aggregate", "command", "outcome"]
                )
            ),
            events_appended: register!(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "events_appended_total",
                        "Events appended to the event store"
                    ),
                    &["aggregate", "event_type"]
                )
            ),
            append_duration: register!(
                r,
                Histogram::with_opts(h(
                    "append_duration_seconds",
                    "A command's write transaction, begin to commit"
                ))
            ),
            command_states: register!(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "command_states_total",
                        "The states commands were decided on, per decision: new, recent (this process's own), store, recent_rechecked"
                    ),
                    &["aggregate", "source"]
                )
            ),
            relay_published: register!(
                r,
                IntCounter::new(
                    "relay_published_total",
                    "Events published to JetStream and acknowledged"
                )
            ),
            relay_lag_events: register!(
                r,
                IntGauge::new(
                    "relay_lag_events",
                    "Committed events the relay has not published"
                )
            ),
            relay_lag_seconds: register!(
                r,
                Gauge::new("relay_lag_seconds", "Age of the oldest unpublished event")
            ),
            projection_checkpoint: register!(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "projection_checkpoint_position",
                        "Global position of each read model's checkpoint"
                    ),
                    &["projection"]
                )
            ),
            projection_lag_events: register!(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "projection_lag_events",
                        "Committed events a read model has not applied"
                    ),
                    &["projection"]
                )
            ),
            projection_lag_seconds: register!(
                r,
                GaugeVec::new(
                    Opts::new(
                        "projection_lag_seconds",
                        "Age of the oldest event a read model has not applied"
                    ),
                    &["projection"]
                )
            ),
            projection_gaps: register!(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "projection_gaps_total",
                        "Gaps a read model met: events the stream did not deliver, or an aggregate whose versions did not continue its row"
                    ),
                    &["projection"]
                )
            ),
            projection_gap_open: register!(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "projection_gap_open",
                        "1 while a read model is stopped at a gap the event store cannot fill"
                    ),
                    &["projection"]
                )
            ),
            projection_batch_size: register!(
                r,
                HistogramVec::new(
                    HistogramOpts::new("projection_batch_size", "Events per applied batch")
                        .buckets(exponential_buckets(1.0, 2.0, 12).unwrap_or_default()),
                    &["projection"]
                )
            ),
            projection_apply_duration: register!(
                r,
                HistogramVec::new(
                    h(
                        "projection_apply_duration_seconds",
                        "One batch's apply transaction"
                    ),
                    &["projection"]
                )
            ),
            cache_hits: register!(
                r,
                IntCounter::new(
                    "query_cache_hits_total",
                    "Answers served from the query cache"
                )
            ),
            cache_misses: register!(
                r,
                IntCounter::new("query_cache_misses_total", "Answers computed")
            ),
            db_pool_connections: register!(
                r,
                IntGaugeVec::new(
                    Opts::new("db_pool_connections", "Database pool connections"),
                    &["pool", "state"]
                )
            ),
            db_replica_lag_seconds: register!(
                r,
                GaugeVec::new(
                    Opts::new(
                        "db_replica_lag_seconds",
                        "Age of the newest transaction a read replica has replayed, while it is behind"
                    ),
                    &["replica"]
                )
            ),
            db_replica_lag_bytes: register!(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "db_replica_lag_bytes",
                        "WAL bytes written on the primary and not yet replayed on a read replica"
                    ),
                    &["replica"]
                )
            ),
            http_connections_open: register!(
                r,
                IntGauge::new(
                    "http_connections_open",
                    "HTTP connections open now (a WebSocket until its upgrade)"
                )
            ),
            http_connections_refused: register!(
                r,
                IntCounter::new(
                    "http_connections_refused_total",
                    "Connections closed at once because the connection cap was reached"
                )
            ),
            process_open_fds: register!(
                r,
                IntGauge::new("process_open_fds", "File descriptors the process has open")
            ),
            process_max_fds: register!(
                r,
                IntGauge::new("process_max_fds", "The process's open-file limit")
            ),
            websocket_connections: register!(
                r,
                IntGauge::new("websocket_connections_active", "Open WebSocket connections")
            ),
            websocket_messages: register!(
                r,
                IntCounter::new("websocket_messages_sent_total", "WebSocket messages sent")
            ),
            websocket_lagged: register!(
                r,
                IntCounter::new(
                    "websocket_lagged_total",
                    "Lagged notices sent to slow WebSocket clients"
                )
            ),
            jobs: register!(
                r,
                IntCounterVec::new(
                    Opts::new("jobs_total", "Jobs that reached an outcome"),
                    &["job_type", "outcome"]
                )
            ),
            job_duration: register!(
                r,
                HistogramVec::new(
                    h("job_duration_seconds", "Run time of finished jobs"),
                    &["job_type"]
                )
            ),
            jobs_running: register!(r, IntGauge::new("jobs_running", "Jobs running now")),
            job_queue_depth: register!(
                r,
                IntGauge::new("job_queue_depth", "Dispatched jobs waiting for a worker")
            ),
            registry: r,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// The name of every metric, whether or not it has samples yet.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .registry
            .gather()
            .iter()
            .map(|family| family.name().to_string())
            .collect();
        // Labelled metrics without samples are not gathered: take them from the fields.
        for name in [
            "http_requests_total",
            "http_request_duration_seconds",
            "commands_total",
            "command_states_total",
            "events_appended_total",
            "projection_checkpoint_position",
            "projection_lag_events",
            "projection_lag_seconds",
            "projection_gaps_total",
            "projection_gap_open",
            "projection_batch_size",
            "projection_apply_duration_seconds",
            "db_pool_connections",
            "db_replica_lag_seconds",
            "db_replica_lag_bytes",
            "jobs_total",
            "job_duration_seconds",
        ] {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        names.sort();
        names
    }
}
