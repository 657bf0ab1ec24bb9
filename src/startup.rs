//! Builds the application from its configuration: database (created and migrated),
//! NATS connection, event store, routes and background tasks (relay, projectors,
//! housekeeping). `main` and the tests both start the service through
//! [`Application::build`]; `relay` and `projector` run the same components alone.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::response::IntoResponse;
use axum::Router;
use commandcenter_auth::http::AuthState;
use commandcenter_auth::{Guard, NewKey};
use commandcenter_commands::CommandState;
use commandcenter_event_store::{connect, connect_replica, AppendSignal, Deployment, EventStore};
use commandcenter_executor::idempotency;
use commandcenter_projections::{JobView, Projector, ProjectorConfig, TechnologyView};
use commandcenter_query_api::bounded::ExpensiveReads;
use commandcenter_query_api::AuditState;
use commandcenter_query_api::{Hub, QueryCache, QueryConfig, QueryState, ReadPools};
use commandcenter_relay::{EventStream, Relay, RelayConfig};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::config::{DatabaseArgs, NatsArgs, QueryArgs, ServeArgs};
use crate::database::{ensure_database, migrate, redact};
use crate::health::{self, HealthState};

/// How often expired idempotency keys are deleted.
const IDEMPOTENCY_PURGE_EVERY: Duration = Duration::from_secs(15 * 60);
/// How long background tasks get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The connections every role needs.
pub struct Services {
    /// Primary database pool.
    pub pool: PgPool,
    /// NATS client (connected, or retrying in the background).
    pub nats: async_nats::Client,
    /// Post-commit wake-ups.
    pub signal: AppendSignal,
    /// The event stream's names.
    pub stream: EventStream,
    /// The event store's identity.
    pub deployment: Deployment,
    /// The prefix of this deployment's core NATS subjects (`<prefix>.<deployment>`).
    pub core_prefix: String,
    /// This process's metrics.
    pub metrics: Arc<commandcenter_metrics::Metrics>,
}

impl Services {
    /// Creates and migrates the database, connects the pool and NATS.
    pub async fn connect(
        database: &DatabaseArgs,
        nats: &NatsArgs,
        max_connections: u32,
        idle_tx_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let url = &database.database_url;
        ensure_database(url).await?;
        let pool = connect(url, max_connections, idle_tx_timeout)
            .await
            .with_context(|| format!("cannot connect to {}", redact(url)))?;
        migrate(&pool).await?;
        let deployment = Deployment::load(&pool)
            .await
            .context("cannot read the deployment id")?;
        // Retrying the first connect lets the service start (not ready) while NATS is down.
        let client = async_nats::ConnectOptions::new()
            .name("commandcenter")
            .retry_on_initial_connect()
            .connect(nats.servers())
            .await
            .with_context(|| format!("invalid NATS URL {}", nats.nats_url))?;
        let stream = nats.stream();
        check_stream_owner(&client, &stream, &deployment, &pool).await?;
        let core_prefix = deployment.core_prefix(&nats.nats_prefix);
        Ok(Self {
            pool,
            signal: AppendSignal::with_nats(client.clone(), &core_prefix),
            nats: client,
            stream,
            deployment,
            core_prefix,
            metrics: commandcenter_metrics::Metrics::new(),
        })
    }

    /// Starts the post-commit wake-up bridge from other processes.
    pub async fn spawn_wakeup_bridge(
        &self,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        if let Some(bridge) = self
            .signal
            .bridge_from_nats()
            .await
            .context("cannot subscribe to append wake-ups")?
        {
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = bridge => {}
                }
            });
        }
        Ok(())
    }

    /// Starts the relay.
    pub fn spawn_relay(&self, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        let relay = Relay::new(
            self.pool.clone(),
            self.signal.clone(),
            self.nats.clone(),
            self.stream.clone(),
            RelayConfig::default(),
        )
        .with_metrics(self.metrics.clone());
        tasks.spawn(relay.run(shutdown.clone()));
    }

    /// Starts a job worker.
    pub fn spawn_worker(
        &self,
        config: commandcenter_worker::WorkerConfig,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let worker = commandcenter_worker::Worker::new(
            EventStore::new(self.pool.clone(), self.signal.clone()),
            self.nats.clone(),
            self.stream.clone(),
            config,
            self.metrics.clone(),
        )?;
        tasks.spawn(worker.run(shutdown.clone()));
        Ok(())
    }

    /// Starts one projector per read model.
    pub fn spawn_projectors(&self, tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
        let technologies = Projector::new(
            TechnologyView,
            self.pool.clone(),
            self.nats.clone(),
            self.stream.clone(),
            ProjectorConfig::default(),
        )
        .with_metrics(self.metrics.clone());
        tasks.spawn(technologies.run(shutdown.clone()));
        let jobs = Projector::new(
            JobView,
            self.pool.clone(),
            self.nats.clone(),
            self.stream.clone(),
            ProjectorConfig::default(),
        )
        .with_metrics(self.metrics.clone());
        tasks.spawn(jobs.run(shutdown.clone()));
    }
}

/// Refuses to start on a subject prefix whose stream belongs to another event store. When
/// NATS cannot be asked now, the relay, projectors and workers check again before they
/// consume or publish anything.
async fn check_stream_owner(
    client: &async_nats::Client,
    stream: &EventStream,
    deployment: &Deployment,
    pool: &PgPool,
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    match tokio::time::timeout(Duration::from_secs(3), stream.ensure(&js, deployment, pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) if err.is_permanent() => Err(err.into()),
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot check the event stream now; checked again before use");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                "NATS did not answer in time; the event stream is checked again before use"
            );
            Ok(())
        }
    }
}

/// Builds the query API's state and starts its hub and replica health checks.
pub async fn query_state(
    services: &Services,
    args: &QueryArgs,
    data_dir: &std::path::Path,
    max_connections: u32,
    idle_tx_timeout: Duration,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> anyhow::Result<QueryState> {
    let mut replicas = Vec::new();
    for url in args
        .read_database_urls
        .iter()
        .filter(|u| !u.trim().is_empty())
    {
        replicas.push(
            connect_replica(url.trim(), max_connections, idle_tx_timeout)
                .with_context(|| format!("invalid read replica URL {}", redact(url)))?,
        );
    }
    let pools = ReadPools::new(services.pool.clone(), replicas);
    tasks.spawn(pools.clone().check_health(shutdown.clone()));
    let cache = Arc::new(QueryCache::new(args.cache_entries));
    let hub = Arc::new(Hub::new(cache.clone(), args.socket_queue));
    tasks.spawn(hub.clone().run(
        services.nats.clone(),
        services.core_prefix.clone(),
        shutdown.clone(),
    ));
    Ok(QueryState {
        pools,
        primary: services.pool.clone(),
        cache,
        hub,
        config: QueryConfig {
            min_position_wait: Duration::from_millis(args.min_position_wait_ms),
            data_dir: data_dir.to_path_buf(),
            expensive: ExpensiveReads::new(
                if args.expensive_reads == 0 {
                    (max_connections as usize / 2).max(1)
                } else {
                    args.expensive_reads
                },
                Duration::from_millis(args.read_statement_timeout_ms),
            ),
        },
        metrics: services.metrics.clone(),
        search_words: Arc::new(commandcenter_query_api::search_words::SearchWords::new()),
    })
}

/// How long background tasks get to stop: 10 s, or longer when a worker's shutdown and
/// cancel graces need it (so its unfinished jobs are released, not abandoned).
pub fn stop_grace(worker: Option<&commandcenter_worker::WorkerConfig>) -> Duration {
    worker.map_or(SHUTDOWN_GRACE, |w| {
        SHUTDOWN_GRACE.max(w.shutdown_grace + w.cancel_grace + Duration::from_secs(2))
    })
}

/// Cancels `shutdown`, then waits for `tasks` (aborting what outlives `grace`).
pub async fn stop(mut tasks: JoinSet<()>, shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancel();
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("background tasks did not stop in time; aborting them");
        tasks.shutdown().await;
    }
}

/// A built service, bound to its address, not yet serving.
pub struct Application {
    listener: TcpListener,
    limits: crate::listener::ListenerConfig,
    metrics: Arc<commandcenter_metrics::Metrics>,
    router: Router,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
    grace: Duration,
    first_admin_key: Option<NewKey>,
}

impl Application {
    /// Connects to everything, applies migrations, binds the listener and starts the
    /// background tasks.
    pub async fn build(args: &ServeArgs) -> anyhow::Result<Self> {
        let services = Services::connect(
            &args.database,
            &args.nats,
            args.db_max_connections,
            args.idle_tx_timeout(),
        )
        .await?;
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        services.spawn_wakeup_bridge(&mut tasks, &shutdown).await?;
        let store = EventStore::new(services.pool.clone(), services.signal.clone());
        let guard = Guard::new(services.pool.clone(), args.access.guard());
        if args.demo && crate::demo::seed_if_empty(&store).await? {
            tracing::info!("demo dataset seeded");
        }
        // Never locked out, never left open: the first start makes one admin key.
        let first_admin_key = guard
            .keys()
            .ensure_first_admin()
            .await
            .context("cannot create the first admin key")?;
        tasks.spawn(guard.clone().watch_revocations(
            services.nats.clone(),
            services.core_prefix.clone(),
            shutdown.clone(),
        ));
        if !args.no_relay {
            services.spawn_relay(&mut tasks, &shutdown);
        }
        if !args.no_projectors {
            services.spawn_projectors(&mut tasks, &shutdown);
        }
        let mut grace = stop_grace(None);
        if !args.no_workers {
            let config = args.worker.config(&args.data_dir);
            grace = stop_grace(Some(&config));
            services.spawn_worker(config, &mut tasks, &shutdown)?;
        }
        tasks.spawn(purge_idempotency_keys(
            services.pool.clone(),
            shutdown.clone(),
        ));

        let query = query_state(
            &services,
            &args.query,
            &args.data_dir,
            args.db_max_connections,
            args.idle_tx_timeout(),
            &mut tasks,
            &shutdown,
        )
        .await?;
        let read_pools = query.pools.clone();
        let router = crate::openapi::assemble(vec![
            commandcenter_commands::api(args.max_body_bytes, args.access.json()).with_state(
                CommandState {
                    store: store.clone(),
                    metrics: services.metrics.clone(),
                },
            ),
            commandcenter_query_api::api().with_state(query),
            commandcenter_query_api::audit_api().with_state(AuditState {
                store,
                audit_key: args.audit.bytes().map(Arc::new),
            }),
            health::api().with_state(HealthState {
                pool: services.pool.clone(),
                nats: services.nats.clone(),
                stream: services.stream.clone(),
                max_lag_events: args.ready_max_lag_events,
            }),
            crate::observability::api().with_state(Arc::new(crate::observability::Sampler::new(
                services.metrics.clone(),
                services.pool.clone(),
                read_pools,
                services.stream.clone(),
            ))),
            commandcenter_auth::http::api(args.max_body_bytes).with_state(AuthState {
                guard: guard.clone(),
                nats: services.nats.clone(),
                prefix: services.core_prefix.clone(),
            }),
            crate::web::session::api(),
        ])
        // The dashboard page and its assets (public in the policy table, not API operations).
        .merge(crate::web::router())
        // An unknown route (404) or method (405) answers like every other error.
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        // After routing, so the guard knows the route template; every route passes it.
        .route_layer(axum::middleware::from_fn_with_state(guard, Guard::enforce))
        .layer(axum::middleware::from_fn_with_state(
            services.metrics.clone(),
            crate::observability::track,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        // Spans name the path only: queries may carry a socket's access token. A 5xx is
        // logged here at WARN (a client-caused 503, such as an X-CC-Min-Position wait that
        // ran out, is no fault of ours); server faults are logged at ERROR where they are
        // known to be faults (internal errors, unavailable dependencies, panics).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        );
        let router = trim_trailing_slash(router);
        let listener = TcpListener::bind(args.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
        if let Some(every) = args.checkpoint_every {
            let key = args.audit.bytes().context(
                "--checkpoint-every needs CC_AUDIT_KEY (or --audit-key): checkpoints are signed",
            )?;
            let witness = commandcenter_relay::witness::Witness::new(
                services.nats.clone(),
                &services.stream,
                services.deployment.clone(),
            );
            tasks.spawn(checkpoint_schedule(
                services.pool.clone(),
                witness,
                key,
                every,
                shutdown.clone(),
            ));
        }
        let descriptors = crate::listener::descriptor_limit();
        tasks.spawn(crate::listener::watch_descriptors(
            services.metrics.clone(),
            descriptors,
            shutdown.clone(),
        ));
        Ok(Self {
            listener,
            limits: args.listen.config(descriptors),
            metrics: services.metrics.clone(),
            router,
            tasks,
            shutdown,
            grace,
            first_admin_key,
        })
    }

    /// The admin key made on this first start against an empty key table, to be shown
    /// to the operator once (`None` on every later start).
    pub fn first_admin_key(&self) -> Option<&NewKey> {
        self.first_admin_key.as_ref()
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
            limits,
            metrics,
            router,
            tasks,
            shutdown: token,
            grace,
            ..
        } = self;
        let served = crate::listener::serve(listener, router, limits, metrics, shutdown, grace)
            .await
            .context("HTTP server failed");
        stop(tasks, &token, grace).await;
        served
    }
}

/// Takes a checkpoint every `every` (unless another server took one in the last half
/// interval) and publishes every checkpoint the witness lacks.
async fn checkpoint_schedule(
    pool: PgPool,
    witness: commandcenter_relay::witness::Witness,
    key: Vec<u8>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let recent: Result<bool, sqlx::Error> = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM audit_checkpoints WHERE created_at > now() - $1::interval)",
        )
        .bind(format!("{} milliseconds", every.as_millis() / 2))
        .fetch_one(&pool)
        .await;
        match recent {
            Ok(true) => {}
            Ok(false) => {
                match commandcenter_event_store::audit::create_checkpoint(&pool, &key, Some(every))
                    .await
                {
                    Ok(checkpoint) => {
                        tracing::info!(id = checkpoint.id, head = %checkpoint.head, "audit checkpoint taken")
                    }
                    Err(commandcenter_event_store::StoreError::Empty) => {}
                    Err(err) => tracing::error!(%err, "cannot take the scheduled audit checkpoint"),
                }
            }
            Err(err) => tracing::warn!(%err, "cannot read the latest audit checkpoint"),
        }
        if let Err(err) = witness.publish_pending(&pool).await {
            tracing::error!(%err, "checkpoints not witnessed yet; retrying at the next one");
        }
    }
}

async fn no_route(uri: axum::http::Uri) -> commandcenter_api_error::ApiError {
    commandcenter_api_error::ApiError::NoRoute(uri.path().to_string())
}

async fn wrong_method(method: axum::http::Method) -> commandcenter_api_error::ApiError {
    commandcenter_api_error::ApiError::MethodNotAllowed(method.to_string())
}

/// Collection paths with a trailing slash (`/api/v1/technologies/`, as the previous API
/// spelled them) answer like the slash-less ones: the slash is trimmed before routing,
/// so nothing redirects.
fn trim_trailing_slash(router: Router) -> Router {
    Router::new()
        .fallback_service(tower_http::normalize_path::NormalizePath::trim_trailing_slash(router))
}

/// A handler that panicked answers 500 with a problem document (the panic is logged),
/// instead of dropping the connection.
fn panic_response(cause: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let cause = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(cause, "request handler panicked");
    commandcenter_api_error::ApiError::internal("handler panicked").into_response()
}

async fn purge_idempotency_keys(pool: PgPool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(IDEMPOTENCY_PURGE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match idempotency::purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired idempotency keys purged"),
            Err(err) => tracing::warn!(%err, "idempotency key purge failed; will retry"),
        }
    }
}
