//! `projects` and `keys`: the registry of projects and API keys.

use std::io::Write;
use std::time::Duration;

use crate::cli::*;
use commandcenter::config::{KeysCommand, ProjectsCommand};
use commandcenter_auth::{KeyStore, ProjectStore};
use commandcenter_event_store::Deployment;

/// `commandcenter projects …`.
pub(crate) async fn projects(command: ProjectsCommand) -> anyhow::Result<()> {
    match command {
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
    }
    Ok(())
}

/// `commandcenter keys …`.
pub(crate) async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
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
                async_nats::connect(args.nats.servers()),
            )
            .await
            .ok()
            .and_then(Result::ok);
            if nats.is_none() {
                tracing::warn!("NATS unreachable: servers will notice the revocation by polling");
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
    }
    Ok(())
}
