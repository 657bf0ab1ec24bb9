//! `commandcenter`: one binary, one subcommand per role. See `--help`.
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;
use commandcenter::config::{Cli, Command, DemoCommand, EventsCommand, ProjectionsCommand};
use commandcenter::database::{migrate, redact};
use commandcenter::startup::Application;
use commandcenter::telemetry;

use cli::{
    access, demo::*, events::*, open, projections::*, roles::*, show_first_admin_key,
    shutdown_signal,
};

/// The service allocates and frees many small JSON values per event and per request
/// (projecting, rendering documents, decoding rows); mimalloc serves those from
/// per-thread pages where the system allocator spent a tenth of a rebuild's process time
/// consolidating and unlinking chunks (`perf`, `projections rebuild job_view`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            commandcenter::web::show_url(app.local_addr()?)?;
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
        Command::Projects { command } => access::projects(command).await?,
        Command::Keys { command } => access::keys(command).await?,
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
