//! `commandcenter`: one binary, one subcommand per role. See `--help`.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use commandcenter::config::{
    Cli, Command, DatabaseArgs, DemoCommand, NatsArgs, ProjectionsCommand, RebuildArgs, SeedArgs,
    StatusArgs, WorkerProcessArgs,
};
use commandcenter::database::{ensure_database, migrate, redact};
use commandcenter::demo::{seed, SeedPlan};
use commandcenter::startup::{stop, Application, Services};
use commandcenter::telemetry;
use commandcenter_event_store::{AppendSignal, EventStore, EventStream};
use commandcenter_projections::{rebuild, status, JobView, ProjectionError, TechnologyView};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Transactions idle this long are ended on the pools of the background roles.
const BACKGROUND_IDLE_TX_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Migrate(db) => {
            let pool = open(&db.database_url).await?;
            migrate(&pool).await?;
            tracing::info!(database = %redact(&db.database_url), "migrations applied");
        }
        Command::Serve(args) => {
            let app = Application::build(&args).await?;
            tracing::info!(addr = %app.local_addr()?, "commandcenter listening");
            app.run(shutdown_signal()).await?;
            tracing::info!("commandcenter stopped");
        }
        Command::Relay(args) => {
            run_background(
                &args.database,
                &args.nats,
                args.db_max_connections,
                Role::Relay,
            )
            .await?
        }
        Command::Projector(args) => {
            let role = Role::Projectors;
            run_background(&args.database, &args.nats, args.db_max_connections, role).await?
        }
        Command::Worker(args) => {
            let role = Role::Worker(&args);
            run_background(&args.database, &args.nats, args.db_max_connections, role).await?
        }
        Command::Demo {
            command: DemoCommand::Seed(args),
        } => run_seed(&args).await?,
        Command::Projections { command } => match command {
            ProjectionsCommand::Status(args) => print_status(&args).await?,
            ProjectionsCommand::Rebuild(args) => run_rebuild(&args).await?,
        },
    }
    Ok(())
}

async fn open(url: &str) -> anyhow::Result<sqlx::PgPool> {
    ensure_database(url).await?;
    let pool = sqlx::PgPool::connect(url)
        .await
        .with_context(|| format!("cannot connect to {}", redact(url)))?;
    migrate(&pool).await?;
    Ok(pool)
}

/// The background roles a process can run alone.
enum Role<'a> {
    Relay,
    Projectors,
    Worker(&'a WorkerProcessArgs),
}

/// Runs `role` until Ctrl-C or SIGTERM, then stops it (a worker's running jobs finish
/// or are released).
async fn run_background(
    database: &DatabaseArgs,
    nats: &NatsArgs,
    db_max_connections: u32,
    role: Role<'_>,
) -> anyhow::Result<()> {
    let services = Services::connect(
        database,
        nats,
        db_max_connections,
        BACKGROUND_IDLE_TX_TIMEOUT,
    )
    .await?;
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    services.spawn_wakeup_bridge(&mut tasks, &shutdown).await?;
    match role {
        Role::Relay => services.spawn_relay(&mut tasks, &shutdown),
        Role::Projectors => services.spawn_projectors(&mut tasks, &shutdown),
        Role::Worker(args) => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| {
                format!("cannot create data directory {}", args.data_dir.display())
            })?;
            services.spawn_worker(args.worker.config(&args.data_dir), &mut tasks, &shutdown)?;
        }
    }
    shutdown_signal().await;
    stop(tasks, &shutdown).await;
    Ok(())
}

async fn print_status(args: &StatusArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let report = status(&pool, &EventStream::new(&args.nats_prefix)).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    let position = |p: Option<commandcenter_event_store::Position>| {
        p.map_or("-".to_string(), |p| p.to_string())
    };
    writeln!(
        out,
        "head: {}   events: {}",
        position(report.head),
        report.events
    )?;
    writeln!(
        out,
        "{:<18} {:<34} {:>12} {:>12}",
        "consumer", "checkpoint", "lag events", "lag seconds"
    )?;
    for lag in std::iter::once(&report.relay).chain(&report.projections) {
        writeln!(
            out,
            "{:<18} {:<34} {:>12} {:>12.3}",
            lag.name,
            position(lag.checkpoint),
            lag.lag_events,
            lag.lag_seconds
        )?;
    }
    Ok(())
}

async fn run_seed(args: &SeedArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let store = EventStore::new(pool, AppendSignal::local());
    let plan = SeedPlan {
        projects: args.projects,
        technologies: args.technologies,
        updates_per_technology: args.updates_per_technology,
        jobs: args.jobs,
    };
    let started = std::time::Instant::now();
    let written = seed(&store, plan).await?;
    let seconds = started.elapsed().as_secs_f64();
    writeln!(
        std::io::stdout().lock(),
        "seeded {written} events in {seconds:.1} s ({:.0} events/s)",
        written as f64 / seconds.max(1e-9)
    )?;
    Ok(())
}

async fn run_rebuild(args: &RebuildArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let report = match args.name.as_str() {
        TechnologyView::NAME => rebuild(&pool, &TechnologyView, args.batch_size).await?,
        JobView::NAME => rebuild(&pool, &JobView, args.batch_size).await?,
        other => return Err(ProjectionError::UnknownReadModel(other.to_string()).into()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} events in {:.1} s ({:.0} events/s), checkpoint {}",
        report.name,
        report.events,
        report.elapsed.as_secs_f64(),
        report.events_per_second(),
        report.position
    )?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
