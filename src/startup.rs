//! Builds the application from its configuration: database (created and migrated),
//! NATS connection, event store, routes and background tasks. `main` and the tests both
//! start the service through [`Application::build`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use commandcenter_commands::{idempotency, CommandState};
use commandcenter_event_store::{connect, AppendSignal, EventStore};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_http::trace::TraceLayer;

use crate::config::ServeArgs;
use crate::database::{ensure_database, migrate, redact};
use crate::health::{self, HealthState};

/// How often expired idempotency keys are deleted.
const IDEMPOTENCY_PURGE_EVERY: Duration = Duration::from_secs(15 * 60);

/// A built service, bound to its address, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    tasks: JoinSet<()>,
}

impl Application {
    /// Connects to everything, applies migrations and binds the listener.
    pub async fn build(args: &ServeArgs) -> anyhow::Result<Self> {
        let url = &args.database.database_url;
        ensure_database(url).await?;
        let pool = connect(url, args.db_max_connections, args.idle_tx_timeout())
            .await
            .with_context(|| format!("cannot connect to {}", redact(url)))?;
        migrate(&pool).await?;
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;

        // Retrying the first connect lets the service start (not ready) while NATS is down.
        let nats = async_nats::ConnectOptions::new()
            .name("commandcenter")
            .retry_on_initial_connect()
            .connect(args.nats_url.as_str())
            .await
            .with_context(|| format!("invalid NATS URL {}", args.nats_url))?;
        let signal = AppendSignal::with_nats(nats.clone(), &args.nats_prefix);
        let mut tasks = JoinSet::new();
        if let Some(bridge) = signal
            .bridge_from_nats()
            .await
            .context("cannot subscribe to append wake-ups")?
        {
            tasks.spawn(bridge);
        }
        let store = EventStore::new(pool.clone(), signal);
        if args.demo && crate::demo::seed_if_empty(&store).await? {
            tracing::info!("demo dataset seeded");
        }
        tasks.spawn(purge_idempotency_keys(pool.clone()));

        let router = commandcenter_commands::router(CommandState { store }, args.max_body_bytes)
            .merge(health::router(HealthState { pool, nats }))
            .layer(TraceLayer::new_for_http());
        let listener = TcpListener::bind(args.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
        Ok(Self {
            listener,
            router,
            tasks,
        })
    }

    /// The address the service listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish and stops
    /// the background tasks.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            mut tasks,
        } = self;
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server failed")?;
        tasks.shutdown().await;
        Ok(())
    }
}

async fn purge_idempotency_keys(pool: sqlx::PgPool) {
    let mut every = tokio::time::interval(IDEMPOTENCY_PURGE_EVERY);
    loop {
        every.tick().await;
        match idempotency::purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency keys purged"),
            Err(err) => tracing::warn!(%err, "idempotency key purge failed; will retry"),
        }
    }
}
