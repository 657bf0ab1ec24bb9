//! The HTTP listener: hyper's HTTP/1 connections with the limits `axum::serve` lacks.
//!
//! - **Header-read and keep-alive timeout**: a connection that has not sent a whole
//!   request head within `header_read_timeout` of waiting for one — after connecting, or
//!   after its previous response — is closed. That covers slow and silent clients and
//!   kept-alive connections nobody uses alike (hyper runs the timer whenever it waits for
//!   a request head). A request in flight is never cut by it; upgraded connections
//!   (WebSockets) leave HTTP, and are pinged by the socket itself instead.
//! - **Connection cap**: at most `max_connections` connections (WebSockets included) are
//!   open at once, kept below the process's descriptor limit so the process can always
//!   accept, reach its database and answer `/health/live`. A connection past the cap is
//!   closed at once, counted in `http_connections_refused_total` and logged (at most once
//!   per 10 s, with the count since the last line).
//! - Open descriptors are sampled into `process_open_fds`; past 80 % of the limit a
//!   warning is logged (at most once a minute).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Descriptors kept free beyond the connection cap: database pools, NATS, files, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The listener's limits.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Most connections open at once (capped below the descriptor limit).
    pub max_connections: usize,
    /// Longest time to receive a request's head (also the keep-alive idle time).
    pub header_read_timeout: Duration,
}

/// The descriptor limit of this process, raised to its hard limit when allowed.
pub fn descriptor_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(%err, "cannot read the open-file limit; assuming 1024");
            1024
        }
    }
}

/// The connection cap for `wanted` connections under a descriptor limit of `limit`.
pub fn connection_cap(wanted: usize, limit: u64) -> usize {
    let room = limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(limit / 2)
        .max(16);
    wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// A TCP stream that holds its slot under the cap for as long as it lives (through an
/// upgrade too).
struct Slotted {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Logs at most once per `every`, with how many times it was asked since.
struct RateLimitedLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(count)` when a line is due (the count includes this one).
    fn due(&mut self) -> Option<u64> {
        self.suppressed += 1;
        if self.last.is_some_and(|at| at.elapsed() < self.every) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Serves `router` on `listener` under `config` until `shutdown`, then lets open
/// requests finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ListenerConfig,
    metrics: Arc<commandcenter_metrics::Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let stop = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut refused_log = RateLimitedLog::new(Duration::from_secs(10));
    let mut accept_log = RateLimitedLog::new(Duration::from_secs(10));
    let refused_total = Arc::new(AtomicU64::new(0));
    tokio::pin!(shutdown);
    tracing::info!(
        max_connections = config.max_connections,
        header_read_timeout_ms = config.header_read_timeout.as_millis() as u64,
        "HTTP listener limits"
    );
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, or a connection reset before it was accepted:
                // never a busy loop, never silent.
                if let Some(count) = accept_log.due() {
                    tracing::error!(%err, count, "cannot accept connections");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            refused_total.fetch_add(1, Ordering::Relaxed);
            if let Some(count) = refused_log.due() {
                tracing::warn!(
                    count,
                    total = refused_total.load(Ordering::Relaxed),
                    max_connections = config.max_connections,
                    "connection cap reached: connections refused"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            slot,
            router.clone(),
            config.clone(),
            metrics.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    stop.cancel();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown grace; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// One connection: HTTP/1 with the header-read timeout, closed gracefully on shutdown.
async fn connection(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    router: Router,
    config: ListenerConfig,
    metrics: Arc<commandcenter_metrics::Metrics>,
    stop: CancellationToken,
) {
    metrics.http_connections_open.inc();
    let io = TokioIo::new(Slotted {
        inner: stream,
        _slot: slot,
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    let served = builder
        .serve_connection(io, TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(served);
    let outcome = tokio::select! {
        outcome = served.as_mut() => outcome,
        () = stop.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(err) = outcome {
        tracing::debug!(%err, "connection ended with an error");
    }
    metrics.http_connections_open.dec();
}

/// Samples open descriptors every second into `process_open_fds` and warns (at most
/// once a minute) when more than 80 % of `limit` are in use.
pub async fn watch_descriptors(
    metrics: Arc<commandcenter_metrics::Metrics>,
    limit: u64,
    stop: CancellationToken,
) {
    let mut warn = RateLimitedLog::new(Duration::from_secs(60));
    metrics
        .process_max_fds
        .set(i64::try_from(limit).unwrap_or(i64::MAX));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let open = entries.count() as u64;
        metrics
            .process_open_fds
            .set(i64::try_from(open).unwrap_or(i64::MAX));
        if open * 5 > limit * 4 {
            if let Some(count) = warn.due() {
                tracing::warn!(open, limit, count, "open file descriptors are running low");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(10_000, 20_000), 10_000);
        assert_eq!(connection_cap(50_000, 20_000), 19_744);
        assert_eq!(connection_cap(10_000, 1024), 768);
        assert_eq!(connection_cap(10_000, 100), 50);
        assert_eq!(connection_cap(0, 20_000), 1);
    }

    #[test]
    fn a_rate_limited_log_counts_what_it_held_back() {
        let mut log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.due(), Some(1));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        log.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(log.due(), Some(3));
    }
}
