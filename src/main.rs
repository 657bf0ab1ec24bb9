//! `commandcenter`: one binary, one subcommand per role. See `--help`.

use anyhow::Context;
use clap::Parser;
use commandcenter::config::{Cli, Command};
use commandcenter::database::{ensure_database, migrate, redact};
use commandcenter::startup::Application;
use commandcenter::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Migrate(db) => {
            ensure_database(&db.database_url).await?;
            let pool = sqlx::PgPool::connect(&db.database_url)
                .await
                .with_context(|| format!("cannot connect to {}", redact(&db.database_url)))?;
            migrate(&pool).await?;
            tracing::info!(database = %redact(&db.database_url), "migrations applied");
        }
        Command::Serve(args) => {
            let app = Application::build(&args).await?;
            tracing::info!(addr = %app.local_addr()?, "commandcenter listening");
            app.run(shutdown_signal()).await?;
            tracing::info!("commandcenter stopped");
        }
    }
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
