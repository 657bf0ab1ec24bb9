//! `GET /api/v1/dashboard/stats?project_id=`: technologies by domain, by status and by
//! both (the radar's cells), jobs by status and type, active jobs, success rate, mean
//! duration and failures in the last 24 hours — all from the precomputed tables, in one
//! statement.
//!
//! Failures are counted by hour of failure (`job_failures_by_hour`): the window is the
//! current hour and the 24 before it, whole.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::response::Response;
use commandcenter_api_error::ApiError;
use commandcenter_event_store::Position;
use serde_json::{json, Value};
use sqlx::Row;

use crate::cache::CacheKey;
use crate::consistency::MinPosition;
use crate::jobs::summarize;
use crate::params::Params;
use crate::response::cached_or;
use crate::QueryState;

const STATS: &str = "\
SELECT (SELECT tx_id FROM projection_checkpoints WHERE projection = 'technology_view') AS t_tx, \
       (SELECT global_position FROM projection_checkpoints WHERE projection = 'technology_view') AS t_pos, \
       (SELECT tx_id FROM projection_checkpoints WHERE projection = 'job_view') AS j_tx, \
       (SELECT global_position FROM projection_checkpoints WHERE projection = 'job_view') AS j_pos, \
       (SELECT coalesce(jsonb_agg(jsonb_build_array(domain, status, n)), '[]') \
          FROM technology_counts WHERE $1::bigint IS NULL OR project_id = $1) AS technologies, \
       (SELECT coalesce(jsonb_agg(jsonb_build_array(job_type, status, n, duration_sum_us, duration_n)), '[]') \
          FROM job_counts WHERE $1::bigint IS NULL OR project_id = $1) AS jobs, \
       (SELECT coalesce(sum(n), 0)::bigint FROM job_failures_by_hour \
         WHERE ($1::bigint IS NULL OR project_id = $1) \
           AND hour >= date_trunc('hour', now() - interval '24 hours')) AS failed_last_24h, \
       (SELECT coalesce(jsonb_agg(to_jsonb(h) ORDER BY h.priority DESC, h.relevance_score DESC, h.id), '[]') \
          FROM (SELECT id, title, status, domain, priority, relevance_score, updated_at FROM technology_view \
                 WHERE ($1::bigint IS NULL OR project_id = $1) AND priority >= 4 \
                 ORDER BY priority DESC, relevance_score DESC, id LIMIT 50) h) AS high_priority";

/// The most recently changed technologies and jobs, newest first (a row's position is
/// its last event's; with a `project_id`, each view's `(project_id, position)` index
/// serves it).
const RECENT: &str = "\
SELECT (SELECT tx_id FROM projection_checkpoints WHERE projection = 'technology_view') AS t_tx, \
       (SELECT global_position FROM projection_checkpoints WHERE projection = 'technology_view') AS t_pos, \
       (SELECT tx_id FROM projection_checkpoints WHERE projection = 'job_view') AS j_tx, \
       (SELECT global_position FROM projection_checkpoints WHERE projection = 'job_view') AS j_pos, \
       (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.position DESC), '[]') \
          FROM (SELECT id, title, status, domain, priority, updated_at, position FROM technology_view \
                 WHERE ($1::bigint IS NULL OR project_id = $1) ORDER BY position DESC LIMIT $2) t) AS technologies, \
       (SELECT coalesce(jsonb_agg(to_jsonb(j) ORDER BY j.position DESC), '[]') \
          FROM (SELECT id, job_type, status, progress, updated_at, position FROM job_view \
                 WHERE ($1::bigint IS NULL OR project_id = $1) ORDER BY position DESC LIMIT $2) j) AS jobs";

fn position(row: &sqlx::postgres::PgRow, tx: &str, pos: &str) -> Result<Position, sqlx::Error> {
    let t: Option<i64> = row.try_get(tx)?;
    let p: Option<i64> = row.try_get(pos)?;
    Ok(Position::new(t.unwrap_or(0) as u64, p.unwrap_or(0)))
}

/// `GET /api/v1/dashboard/stats`.
#[utoipa::path(get, path = "/api/v1/dashboard/stats", tag = "dashboard", params(("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("project_id" = Option<i64>, Query, minimum = 1, description = "Project")), responses((status = 200, description = "Technologies by domain, by status and by both (`by_domain_status`: `{domain, status, count}`), and `high_priority` (priority 4 or 5, at most 50, highest first); jobs by status and type, active, failed in the last 24 h", body = crate::schema::DashboardStats), (status = 400, description = "Malformed or out-of-range parameter or header (problem+json naming it)"), (status = 503, description = "X-CC-Min-Position not reached in time (problem+json, Retry-After)")))]
pub async fn dashboard_stats(
    State(state): State<QueryState>,
    min: MinPosition,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params(params);
    let project_id = params.project_id()?;
    let key = CacheKey::new(
        "dashboard",
        &["technology_view", "job_view"],
        project_id,
        &params.0,
    );
    let views = [("technology_view", "technology"), ("job_view", "job")];
    cached_or(&state, key, min, &views, |pool| async move {
        let row = sqlx::query(STATS)
            .bind(project_id)
            .fetch_one(&pool.pool)
            .await?;
        let positions = vec![
            position(&row, "t_tx", "t_pos")?,
            position(&row, "j_tx", "j_pos")?,
        ];
        let technologies: Value = row.try_get("technologies")?;
        let (mut by_domain, mut by_status) = (
            BTreeMap::<String, i64>::new(),
            BTreeMap::<String, i64>::new(),
        );
        let mut total = 0i64;
        // Each (domain, status) count: the radar's cells, whatever the project's size. The
        // counts table has a row per project: summed here for an all-projects answer.
        let mut cells = BTreeMap::<(String, String), i64>::new();
        for entry in technologies.as_array().into_iter().flatten() {
            let n = entry[2].as_i64().unwrap_or(0);
            total += n;
            *cells
                .entry((
                    entry[0].as_str().unwrap_or_default().to_string(),
                    entry[1].as_str().unwrap_or_default().to_string(),
                ))
                .or_default() += n;
            *by_domain
                .entry(entry[0].as_str().unwrap_or_default().to_string())
                .or_default() += n;
            *by_status
                .entry(entry[1].as_str().unwrap_or_default().to_string())
                .or_default() += n;
        }
        let by_domain_status: Vec<Value> = cells
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((domain, status), n)| json!({ "domain": domain, "status": status, "count": n }))
            .collect();
        let jobs: Value = row.try_get("jobs")?;
        let rows: Vec<(String, String, i64, i64, i64)> = jobs
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e[0].as_str().unwrap_or_default().to_string(),
                    e[1].as_str().unwrap_or_default().to_string(),
                    e[2].as_i64().unwrap_or(0),
                    e[3].as_i64().unwrap_or(0),
                    e[4].as_i64().unwrap_or(0),
                )
            })
            .collect();
        let mut job_summary = summarize(&rows);
        let active = job_summary["by_status"]["pending"].as_i64().unwrap_or(0)
            + job_summary["by_status"]["running"].as_i64().unwrap_or(0);
        job_summary["active"] = json!(active);
        job_summary["failed_last_24h"] = json!(row.try_get::<i64, _>("failed_last_24h")?);
        let body = json!({
            "project_id": project_id,
            "technologies": {
                "total": total,
                "by_domain": by_domain,
                "by_status": by_status,
                "by_domain_status": by_domain_status,
                "high_priority": row.try_get::<Value, _>("high_priority")?,
            },
            "jobs": job_summary,
            "position": positions.iter().min(),
        });
        Ok((body, positions))
    })
    .await
}

/// `GET /api/v1/dashboard/recent-activity`: the most recently changed technologies and
/// jobs (`limit` each, default 10), newest first, from the read models.
#[utoipa::path(get, path = "/api/v1/dashboard/recent-activity", tag = "dashboard", params(("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("project_id" = Option<i64>, Query, minimum = 1, description = "Project"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1-100 rows of each, default 10")), responses((status = 200, description = "The most recently changed technologies and jobs, newest first", body = crate::schema::RecentActivity)))]
pub async fn recent_activity(
    State(state): State<QueryState>,
    min: MinPosition,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params(params);
    let project_id = params.project_id()?;
    let limit = params.int("limit", 10, 1, 100)?;
    let key = CacheKey::new(
        "recent_activity",
        &["technology_view", "job_view"],
        project_id,
        &params.0,
    );
    let views = [("technology_view", "technology"), ("job_view", "job")];
    cached_or(&state, key, min, &views, |pool| async move {
        let row = sqlx::query(RECENT)
            .bind(project_id)
            .bind(limit)
            .fetch_one(&pool.pool)
            .await?;
        let positions = vec![
            position(&row, "t_tx", "t_pos")?,
            position(&row, "j_tx", "j_pos")?,
        ];
        let body = json!({
            "project_id": project_id,
            "recent_technologies": row.try_get::<Value, _>("technologies")?,
            "recent_jobs": row.try_get::<Value, _>("jobs")?,
            "position": positions.iter().min(),
        });
        Ok((body, positions))
    })
    .await
}
