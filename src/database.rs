//! Database bootstrap: create the database when missing and apply migrations.

use anyhow::Context;
use commandcenter_event_store::MIGRATOR;
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};

/// Creates the database named in `url` if it does not exist yet.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(url)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {}", redact(url)))?
    {
        tracing::info!(database = %redact(url), "creating database");
        Postgres::create_database(url)
            .await
            .with_context(|| format!("cannot create database {}", redact(url)))?;
    }
    Ok(())
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("migrations failed")?;
    Ok(())
}

/// True when every migration this binary knows is applied (each one, by version: the
/// ledger may also hold a later release's, which this one lets be).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM _sqlx_migrations WHERE success AND version = ANY($1)",
    )
    .bind(&known)
    .fetch_one(pool)
    .await?;
    Ok(applied == known.len() as i64)
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
