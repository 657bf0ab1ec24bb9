//! `commandcenter`: one binary, one subcommand per role. See `--help`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use commandcenter::config::{
    CheckpointArgs, Cli, Command, DatabaseArgs, DemoCommand, EventsCommand, ExportArgs, ImportArgs,
    KeysCommand, NatsArgs, ProjectionsCommand, ProjectsCommand, RebuildArgs, SeedArgs, StatusArgs,
    TimelineArgs, VerifyArgs, VerifyViewArgs, WorkerProcessArgs,
};
use commandcenter::database::{ensure_database, migrate, redact};
use commandcenter::demo::{seed, SeedPlan};
use commandcenter::startup::{stop, stop_grace, Application, Services};
use commandcenter::telemetry;
use commandcenter_auth::{KeyStore, ProjectStore};
use commandcenter_commands::history::annotated_history;
use commandcenter_domain::job::Job;
use commandcenter_domain::technology::Technology;
use commandcenter_event_store::audit::{self, ExportScope, VerifyScope};
use commandcenter_event_store::{AppendSignal, Deployment, EventStore, EventStream, Position};
use commandcenter_projections::{
    rebuild, status, verify, JobView, ProjectionError, TechnologyView, VerifyReport,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Shows the first admin key on the terminal, once: it is not logged, and cannot be
/// shown again (only its hash is stored).
fn show_first_admin_key(key: &commandcenter_auth::NewKey) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nFirst start: created a deployment-wide admin API key. It is shown this once; store it now.\n\n    {}\n\n\
         Use it as `Authorization: Bearer <key>`; create project keys with\n\
         `commandcenter keys create --project ID --role reader|writer|auditor|admin`.\n",
        key.token
    )?;
    out.flush()?;
    tracing::info!(key_id = %key.key.id, "first admin key created and shown on standard output");
    Ok(())
}

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
            if let Some(key) = app.first_admin_key() {
                show_first_admin_key(key)?;
            }
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
        Command::Events { command } => match command {
            EventsCommand::Verify(args) => run_verify(&args).await?,
            EventsCommand::Checkpoint(args) => run_checkpoint(&args).await?,
            EventsCommand::Export(args) => run_export(&args).await?,
            EventsCommand::Import(args) => run_import(&args).await?,
            EventsCommand::History(args) => print_timeline(&args).await?,
        },
        Command::Projects { command } => match command {
            ProjectsCommand::Create(args) => {
                let pool = open(&args.database.database_url).await?;
                let project = ProjectStore::new(pool).create(&args.name).await?;
                writeln!(std::io::stdout().lock(), "{}", project.id)?;
            }
            ProjectsCommand::List(args) => {
                let pool = open(&args.database.database_url).await?;
                let projects = ProjectStore::new(pool).list(args.project).await?;
                let mut out = std::io::stdout().lock();
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&projects)?)?;
                } else {
                    writeln!(out, "{:>8}  {:<25}  name", "id", "created")?;
                    for p in projects {
                        let created = p.created_at.format("%Y-%m-%d %H:%M:%S");
                        writeln!(out, "{:>8}  {created:<25}  {}", p.id, p.name)?;
                    }
                }
            }
        },
        Command::Keys { command } => match command {
            KeysCommand::Create(args) => {
                let pool = open(&args.database.database_url).await?;
                let expires = args
                    .expires
                    .as_deref()
                    .map(|text| commandcenter_auth::keys::parse_expiry(text, chrono::Utc::now()))
                    .transpose()
                    .map_err(|message| anyhow::anyhow!("--expires: {message}"))?;
                let key = KeyStore::new(pool)
                    .create(args.project, args.role, args.name.trim(), expires)
                    .await?;
                let mut out = std::io::stdout().lock();
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&key)?)?;
                } else {
                    writeln!(out, "{}", key.token)?;
                }
                tracing::info!(key_id = %key.key.id, role = %args.role, "API key created; it is shown once");
            }
            KeysCommand::List(args) => {
                let pool = open(&args.database.database_url).await?;
                let keys = KeyStore::new(pool).list(args.project).await?;
                let mut out = std::io::stdout().lock();
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&keys)?)?;
                } else {
                    writeln!(
                        out,
                        "{:<16}  {:<7}  {:>8}  {:<7}  {:<20}  name",
                        "id", "role", "project", "status", "expires"
                    )?;
                    for k in keys {
                        let project = k.project_id.map_or("all".to_string(), |p| p.to_string());
                        let expires = k.expires_at.map_or("never".to_string(), |at| {
                            at.format("%Y-%m-%d %H:%M").to_string()
                        });
                        writeln!(
                            out,
                            "{:<16}  {:<7}  {project:>8}  {:<7}  {expires:<20}  {}",
                            k.id, k.role, k.status, k.name
                        )?;
                    }
                }
            }
            KeysCommand::Revoke(args) => {
                let pool = open(&args.database.database_url).await?;
                // Running servers poll for revocations; the announcement makes it immediate.
                let nats = tokio::time::timeout(
                    Duration::from_secs(3),
                    async_nats::connect(args.nats.nats_url.as_str()),
                )
                .await
                .ok()
                .and_then(Result::ok);
                if nats.is_none() {
                    tracing::warn!(
                        "NATS unreachable: servers will notice the revocation by polling"
                    );
                }
                let core_prefix = Deployment::load(&pool)
                    .await?
                    .core_prefix(&args.nats.nats_prefix);
                let announce = nats.as_ref().map(|c| (c, core_prefix.as_str()));
                let key = commandcenter_auth::Guard::new(pool, Default::default())
                    .revoke(&args.id, announce)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no key with id {:?}", args.id))?;
                writeln!(std::io::stdout().lock(), "revoked {}", key.id)?;
            }
        },
        Command::Projections { command } => match command {
            ProjectionsCommand::Status(args) => print_status(&args).await?,
            ProjectionsCommand::Rebuild(args) => run_rebuild(&args).await?,
            ProjectionsCommand::Verify(args) => {
                if !verify_views(&args).await? {
                    std::process::exit(1);
                }
            }
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
    let mut grace = stop_grace(None);
    match role {
        Role::Relay => services.spawn_relay(&mut tasks, &shutdown),
        Role::Projectors => services.spawn_projectors(&mut tasks, &shutdown),
        Role::Worker(args) => {
            std::fs::create_dir_all(&args.data_dir).with_context(|| {
                format!("cannot create data directory {}", args.data_dir.display())
            })?;
            let config = args.worker.config(&args.data_dir);
            grace = stop_grace(Some(&config));
            services.spawn_worker(config, &mut tasks, &shutdown)?;
        }
    }
    shutdown_signal().await;
    stop(tasks, &shutdown, grace).await;
    Ok(())
}

fn parse_position(name: &str, text: Option<&str>) -> anyhow::Result<Option<Position>> {
    text.map(|t| {
        t.parse::<Position>()
            .with_context(|| format!("--{name} {t:?} is not a position token"))
    })
    .transpose()
}

/// A counter on standard error when it is a terminal (hidden otherwise).
fn counter(what: &'static str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} events {msg} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what);
    bar
}

async fn run_verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let scope = VerifyScope {
        project_id: args.project,
        from: parse_position("from-position", args.from_position.as_deref())?,
        clock_tolerance: args.clock_tolerance,
    };
    let key = args.key.bytes();
    if args.witness && (scope.project_id.is_some() || scope.from.is_some()) {
        anyhow::bail!(
            "--witness compares the whole store with the witnessed checkpoints: drop --project \
             and --from-position"
        );
    }
    let witnessed = if args.witness {
        let witness = witness_of(&pool, &args.nats).await?;
        Some(
            witness
                .read()
                .await
                .context("cannot read the witnessed checkpoints")?,
        )
    } else {
        None
    };
    let report = audit::verify(&pool, &scope, key.as_deref(), witnessed.as_deref()).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut body = serde_json::to_value(&report)?;
        body["passed"] = serde_json::json!(report.passed());
        serde_json::to_writer_pretty(&mut out, &body)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "checked {} events of {} aggregates: {} broken link(s)",
            report.events_checked, report.aggregates, report.broken_count
        )?;
        for link in &report.broken {
            writeln!(
                out,
                "BROKEN {}/{} event {} at {}: {}",
                link.aggregate_type, link.aggregate_id, link.sequence, link.position, link.reason
            )?;
        }
        match &report.checkpoint {
            None => writeln!(out, "no checkpoint checked")?,
            Some(c) => writeln!(
                out,
                "checkpoint {} at {} ({}): {} (events then {}, now {}), signature {}",
                c.id,
                c.head,
                c.created_at.to_rfc3339(),
                if c.intact {
                    "intact"
                } else {
                    "BROKEN: events up to it were deleted or altered"
                },
                c.events_then,
                c.events_now,
                c.signature
            )?,
        }
        if let Some(chain) = &report.checkpoint_chain {
            let state = format!("{} checkpoint(s)", chain.checkpoints);
            write_problems(
                &mut out,
                "checkpoint chain",
                &state,
                "intact",
                &chain.problems,
            )?;
        }
        if let Some(witness) = &report.witness {
            let state = format!("{} checkpoint(s) witnessed", witness.witnessed);
            write_problems(
                &mut out,
                "witness",
                &state,
                "the store agrees",
                &witness.problems,
            )?;
        }
    }
    if !report.passed() {
        anyhow::bail!("verification failed");
    }
    Ok(())
}

/// `<what>: <state>, <verdict>` (or `BROKEN`/`DISAGREES`) and a line per problem.
fn write_problems(
    out: &mut impl Write,
    what: &str,
    state: &str,
    fine: &str,
    problems: &[String],
) -> std::io::Result<()> {
    let verdict = if problems.is_empty() { fine } else { "BROKEN" };
    writeln!(out, "{what}: {state}, {verdict}")?;
    for problem in problems {
        writeln!(out, "BROKEN {problem}")?;
    }
    Ok(())
}

async fn run_checkpoint(args: &CheckpointArgs) -> anyhow::Result<()> {
    let key = args
        .key
        .bytes()
        .context("set CC_AUDIT_KEY (or --audit-key): checkpoints are signed")?;
    let pool = open(&args.database.database_url).await?;
    let checkpoint = audit::create_checkpoint(&pool, &key, None).await?;
    {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &checkpoint)?;
        writeln!(out)?;
    }
    let witness = witness_of(&pool, &args.nats).await?;
    let published = witness.publish_pending(&pool).await.with_context(|| {
        format!(
            "checkpoint {} is recorded but not witnessed on NATS; run `events checkpoint` again \
             when NATS answers (it publishes every checkpoint not witnessed yet)",
            checkpoint.id
        )
    })?;
    tracing::info!(
        id = checkpoint.id,
        published,
        stream = %witness.stream_name(),
        "checkpoint recorded and witnessed"
    );
    Ok(())
}

/// The witness of the deployment behind `pool`, on the NATS server of `nats`.
async fn witness_of(
    pool: &sqlx::PgPool,
    nats: &NatsArgs,
) -> anyhow::Result<commandcenter_event_store::witness::Witness> {
    let client = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::connect(nats.nats_url.as_str()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("NATS at {} did not answer within 5 s", nats.nats_url))?
    .with_context(|| format!("cannot connect to NATS at {}", nats.nats_url))?;
    Ok(commandcenter_event_store::witness::Witness::new(
        client,
        &EventStream::new(&nats.nats_prefix),
        Deployment::load(pool).await?,
    ))
}

async fn run_export(args: &ExportArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let scope = ExportScope {
        project_id: args.project,
        after: parse_position("since-position", args.since_position.as_deref())?,
        until: parse_position("until", args.until.as_deref())?,
    };
    let key = args.key.bytes();
    let bar = counter("exported");
    let written = match &args.output {
        Some(path) => {
            let file = tokio::fs::File::create(path)
                .await
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut out = tokio::io::BufWriter::new(file);
            let n = audit::export(&pool, &scope, key.as_deref(), &mut out, |n| {
                bar.set_position(n)
            })
            .await?;
            out.into_inner().sync_all().await?;
            n
        }
        None => {
            let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
            audit::export(&pool, &scope, key.as_deref(), &mut out, |n| {
                bar.set_position(n)
            })
            .await?
        }
    };
    bar.finish_and_clear();
    tracing::info!(events = written, "export written");
    Ok(())
}

/// The uniqueness claims an import rebuilds from its events.
fn claims() -> audit::Derive {
    Box::new(|conn| Box::pin(commandcenter_commands::executor::rebuild_claims(conn)))
}

async fn run_import(args: &ImportArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let key = args.key.bytes();
    let bar = counter("imported");
    let report = match args.file.as_deref().filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            let mut input = tokio::io::BufReader::new(file);
            audit::import(&pool, &mut input, key.as_deref(), claims(), |n| {
                bar.set_position(n)
            })
            .await?
        }
        None => {
            let mut input = tokio::io::BufReader::new(tokio::io::stdin());
            audit::import(&pool, &mut input, key.as_deref(), claims(), |n| {
                bar.set_position(n)
            })
            .await?
        }
    };
    bar.finish_and_clear();
    ProjectStore::new(pool.clone())
        .register_from_events()
        .await?;
    writeln!(
        std::io::stdout().lock(),
        "imported {} events ({} groups, one transaction); run `commandcenter events verify` and \
         `commandcenter projections rebuild` next",
        report.events,
        report.transactions
    )?;
    Ok(())
}

async fn print_timeline(args: &TimelineArgs) -> anyhow::Result<()> {
    let pool = open(&args.database.database_url).await?;
    let entries = match args.aggregate_type.as_str() {
        "technology" => annotated_history::<Technology>(&pool, &args.id).await,
        "job" => annotated_history::<Job>(&pool, &args.id).await,
        other => anyhow::bail!("unknown aggregate type {other:?}: use technology or job"),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if entries.is_empty() {
        anyhow::bail!("no {} has id {}", args.aggregate_type, args.id);
    }
    let mut out = std::io::stdout().lock();
    for entry in &entries {
        let event = &entry.event;
        writeln!(
            out,
            "{}  v{:<4} {:<24} by {} (correlation {}{})",
            event.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            event.sequence,
            event.event_type,
            entry.actor.as_deref().unwrap_or("unknown"),
            entry.correlation_id.as_deref().unwrap_or("-"),
            entry
                .causation_id
                .as_deref()
                .map(|c| format!(", caused by {c}"))
                .unwrap_or_default(),
        )?;
        for change in &entry.changes {
            writeln!(
                out,
                "      {}: {} → {}",
                change.field, change.from, change.to
            )?;
        }
    }
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
        "{:<18} {:<34} {:>12} {:>12} {:>6}  active",
        "consumer", "checkpoint", "lag events", "lag seconds", "gaps"
    )?;
    for lag in std::iter::once(&report.relay).chain(&report.projections) {
        let gaps = if lag.name == "relay" {
            "-".to_string()
        } else {
            lag.gaps_detected.to_string()
        };
        writeln!(
            out,
            "{:<18} {:<34} {:>12} {:>12.3} {gaps:>6}  {}",
            lag.name,
            position(lag.checkpoint),
            lag.lag_events,
            lag.lag_seconds,
            lag.active.as_deref().unwrap_or("none")
        )?;
    }
    if let Some(note) = &report.relay.note {
        writeln!(out, "NOTE relay: {note}")?;
    }
    for lag in &report.projections {
        if let Some(gap) = &lag.open_gap {
            writeln!(out, "STOPPED {}: {gap}", lag.name)?;
        }
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
    ProjectStore::new(store.pool().clone())
        .register_from_events()
        .await?;
    writeln!(
        std::io::stdout().lock(),
        "seeded {written} events in {seconds:.1} s ({:.0} events/s)",
        written as f64 / seconds.max(1e-9)
    )?;
    Ok(())
}

/// `projections verify`: prints each read model's comparison; false when any differs.
async fn verify_views(args: &VerifyViewArgs) -> anyhow::Result<bool> {
    let pool = open(&args.database.database_url).await?;
    let names: Vec<&str> = match args.view.as_deref() {
        Some(name) => vec![name],
        None => commandcenter_projections::READ_MODELS.to_vec(),
    };
    let mut reports = Vec::new();
    for name in names {
        reports.push(match name {
            TechnologyView::NAME => verify(&pool, &TechnologyView, args.batch_size).await?,
            JobView::NAME => verify(&pool, &JobView, args.batch_size).await?,
            other => return Err(ProjectionError::UnknownReadModel(other.to_string()).into()),
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &reports)?;
        writeln!(out)?;
    } else {
        for report in &reports {
            let verdict = if report.is_clean() {
                "equals the event store".to_string()
            } else {
                format!("{} row(s) DIFFER from the event store", report.differences)
            };
            writeln!(
                out,
                "{}: {verdict} ({} rows, {} events folded, checkpoint {})",
                report.name, report.rows, report.events, report.position
            )?;
            for difference in &report.first {
                writeln!(
                    out,
                    "    {} {}: {}",
                    difference.table, difference.key, difference.detail
                )?;
            }
            if report.differences > report.first.len() as i64 {
                writeln!(
                    out,
                    "    … and {} more",
                    report.differences - report.first.len() as i64
                )?;
            }
        }
        if reports.iter().any(|r| !r.is_clean()) {
            writeln!(
                out,
                "Repair with `commandcenter projections rebuild NAME`; the event store is the source of truth."
            )?;
        }
    }
    Ok(reports.iter().all(VerifyReport::is_clean))
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
