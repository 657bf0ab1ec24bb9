//! The operator commands and process roles of the binary, one module per family.

use std::io::Write;

use anyhow::Context;
use commandcenter::database::{ensure_database, migrate, redact};
use commandcenter_event_store::Position;

pub(crate) mod access;
pub(crate) mod demo;
pub(crate) mod events;
pub(crate) mod projections;
pub(crate) mod roles;

/// Shows the first admin key on the terminal, once: it is not logged, and cannot be
/// shown again (only its hash is stored).
pub(crate) fn show_first_admin_key(key: &commandcenter_auth::NewKey) -> anyhow::Result<()> {
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

pub(crate) async fn open(url: &str) -> anyhow::Result<sqlx::PgPool> {
    ensure_database(url).await?;
    let pool = sqlx::PgPool::connect(url)
        .await
        .with_context(|| format!("cannot connect to {}", redact(url)))?;
    migrate(&pool).await?;
    Ok(pool)
}

pub(crate) fn parse_position(name: &str, text: Option<&str>) -> anyhow::Result<Option<Position>> {
    text.map(|t| {
        t.parse::<Position>()
            .with_context(|| format!("--{name} {t:?} is not a position token"))
    })
    .transpose()
}

/// A counter on standard error when it is a terminal (hidden otherwise).
pub(crate) fn counter(what: &'static str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} events {msg} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what);
    bar
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
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
