//! The project registry. Projects are never deleted, so a project once seen to exist is
//! remembered by the process.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashSet;
use serde::Serialize;
use sqlx::PgPool;

use crate::AccessError;

/// A registered project.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Project {
    /// Its id, the `project_id` of its technologies and jobs.
    pub id: i64,
    /// Its name, unique ignoring case.
    pub name: String,
    /// When it was registered.
    #[serde(serialize_with = "commandcenter_domain::serde_helpers::time")]
    pub created_at: DateTime<Utc>,
}

/// The registry.
#[derive(Clone)]
pub struct ProjectStore {
    pool: PgPool,
    known: Arc<DashSet<i64>>,
}

impl ProjectStore {
    /// A registry on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Arc::new(DashSet::new()),
        }
    }

    /// Registers a project named `name` (trimmed; unique ignoring case).
    pub async fn create(&self, name: &str) -> Result<Project, AccessError> {
        let name = name.trim();
        crate::check_name(name, 1)?;
        let row: Option<(i64, String, DateTime<Utc>)> = sqlx::query_as(
            "INSERT INTO projects (name) VALUES ($1) ON CONFLICT DO NOTHING \
             RETURNING id, name, created_at",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, name, created_at)) = row else {
            return Err(AccessError::Invalid {
                field: "name".into(),
                message: format!("a project named {name:?} already exists"),
            });
        };
        self.known.insert(id);
        Ok(Project {
            id,
            name,
            created_at,
        })
    }

    /// Every project, or only `only`.
    pub async fn list(&self, only: Option<i64>) -> Result<Vec<Project>, AccessError> {
        let rows: Vec<(i64, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, name, created_at FROM projects \
             WHERE $1::bigint IS NULL OR id = $1 ORDER BY id",
        )
        .bind(only)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, created_at)| Project {
                id,
                name,
                created_at,
            })
            .collect())
    }

    /// Whether `id` is registered.
    pub async fn exists(&self, id: i64) -> Result<bool, AccessError> {
        if self.known.contains(&id) {
            return Ok(true);
        }
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1)")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        if exists {
            self.known.insert(id);
        }
        Ok(exists)
    }

    /// Registers every project the event store names (after an import); returns how
    /// many were added.
    pub async fn register_from_events(&self) -> Result<i64, AccessError> {
        Ok(sqlx::query_scalar("SELECT cc_register_event_projects()")
            .fetch_one(&self.pool)
            .await?)
    }
}
