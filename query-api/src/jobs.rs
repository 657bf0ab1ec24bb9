//! `GET /api/v1/jobs`, `/jobs/{id}`, `/jobs/{id}/progress`, `/jobs/active/list` and
//! `/jobs/statistics/summary` over `job_view` and `job_counts`.
//!
//! Pages are ordered newest first by `created_position` (unique, monotonic, indexed with
//! the filters); the total is a sum over `job_counts`, in the same statement.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use commandcenter_api_error::ApiError;
use commandcenter_domain::job::{JobStatus, JobType};
use commandcenter_event_store::Position;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::bounded::{fetch_all, push_limit, Plan, EXPENSIVE_SKIP};
use crate::cache::CacheKey;
use crate::consistency::{pool_for, MinPosition};
use crate::cursor::Cursor;
use crate::params::Params;
use crate::response::{
    bytes_response, cached_or, json_response, page_documents, position_columns, read_position,
    row_document, with_documents, DocumentSlot, RawJson,
};
use crate::QueryState;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size.
pub const MAX_LIMIT: i64 = 1000;
/// The only order of job pages: newest first.
const SORT: &str = "-created_position";
const VIEWS: &[(&str, &str)] = &[("job_view", "job")];

/// The filters of a job list.
struct Filters {
    project_id: Option<i64>,
    statuses: Vec<JobStatus>,
    job_type: Option<JobType>,
}

impl Filters {
    /// Whether one plan serves every value of these filters (see `bounded::push_limit`):
    /// an index gives the page's order after equalities on its leading columns —
    /// (project_id, status, created_position), (project_id, job_type, status,
    /// created_position), (status, created_position), (project_id, created_position),
    /// or with no filter the unique created_position — so no value can make it read
    /// more than the page. A job type without a status,
    /// or several statuses, depend on their values.
    fn settled(&self) -> bool {
        match (self.statuses.len(), self.job_type) {
            (0 | 1, None) => true,
            (1, Some(_)) => self.project_id.is_some(),
            _ => false,
        }
    }

    fn push(&self, qb: &mut QueryBuilder<'_, Postgres>) {
        if let Some(project) = self.project_id {
            qb.push(" AND project_id = ").push_bind(project);
        }
        match self.statuses.as_slice() {
            [] => {}
            // Equality lets the (project_id, status, created_position) index give the order.
            [status] => {
                qb.push(" AND status = ").push_bind(status.as_str());
            }
            statuses => {
                let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
                qb.push(" AND status = ANY(").push_bind(statuses).push(")");
            }
        }
        if let Some(job_type) = self.job_type {
            qb.push(" AND job_type = ").push_bind(job_type.as_str());
        }
    }
}

/// A page of jobs as answered; the rows are their stored documents, passed through
/// (`with_documents` writes them into `jobs`, which must stay the first field).
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobPage {
    /// The jobs of the page, newest first.
    #[schema(value_type = Vec<crate::schema::JobView>)]
    jobs: DocumentSlot,
    /// How many jobs match the filters.
    #[schema(minimum = 0)]
    total: i64,
    /// The offset asked for.
    #[schema(minimum = 0)]
    skip: i64,
    /// The page size in force (1–1000); in the unpaged active list, the number of jobs
    /// answered (0–10000).
    #[schema(minimum = 0, maximum = 10000)]
    limit: i64,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
    /// The read model's checkpoint the page reflects.
    position: Position,
}

/// One page of jobs (and the total) under `filters`.
async fn page(
    state: &QueryState,
    endpoint: &'static str,
    params: Params,
    filters: Filters,
    min: MinPosition,
    unpaged: bool,
) -> Result<Response, ApiError> {
    let limit = if unpaged {
        ACTIVE_LIST_MAX
    } else {
        params.int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?
    };
    let skip = params.int("skip", 0, 0, crate::technologies::MAX_SKIP)?;
    let cursor = params
        .text("cursor")
        .map(|c| Cursor::decode(c, SORT))
        .transpose()?;
    let key = CacheKey::new(endpoint, &["job_view"], filters.project_id, &params.0);
    let reads = state.config.expensive.clone();
    cached_or(state, key, min, VIEWS, |pool| async move {
        // Rows come back as JSON and stored documents are written into the answer as they
        // are (`response::with_documents`: never built into a tree). Past a
        // `skip`, the page's keys come first (an index-only walk, however deep) and then
        // the JSON of those rows only: rendering every skipped row cost seconds. Without
        // one, the rows are rendered in the same pass (a join less).
        let skips = cursor.is_none() && skip > 0;
        let mut qb = QueryBuilder::<Postgres>::new(if skips {
            "WITH keys AS (SELECT j.id, j.created_position FROM job_view j WHERE true"
        } else {
            "WITH page AS (SELECT coalesce(j.doc, (to_jsonb(j) - 'doc')::text) AS row, j.doc IS NULL AS unstored, j.id, j.created_position FROM job_view j WHERE true"
        });
        filters.push(&mut qb);
        if let Some(cursor) = &cursor {
            qb.push(" AND created_position < ").push_bind(cursor.value.clone());
        }
        qb.push(" ORDER BY created_position DESC");
        let skip_rows = if cursor.is_none() { skip } else { 0 };
        push_limit(&mut qb, limit + 1, skip_rows, filters.settled());
        if skips {
            qb.push(
                "), page AS (SELECT coalesce(j.doc, (to_jsonb(j) - 'doc')::text) AS row, j.doc IS NULL AS unstored, j.id, j.created_position \
                   FROM keys k JOIN job_view j ON j.id = k.id",
            );
        }
        qb.push("), total AS (SELECT coalesce(sum(n), 0)::bigint AS n FROM job_counts WHERE true");
        filters.push(&mut qb);
        qb.push(") SELECT (SELECT n FROM total) AS total, ");
        position_columns(&mut qb, "job_view");
        qb.push(", page.row, page.unstored, page.id, page.created_position FROM (SELECT 1) one LEFT JOIN page ON true \
                 ORDER BY page.created_position DESC");
        // An unpaged list may be long: it draws on the expensive-read budget too.
        let expensive = unpaged || (cursor.is_none() && skip > EXPENSIVE_SKIP);
        let rows = fetch_all(&reads, &pool.pool, &mut qb, Plan::Cached, expensive).await?;
        let first = rows.first().ok_or_else(|| ApiError::internal("page query returned no row"))?;
        let total: i64 = first.try_get("total")?;
        let position = read_position(first)?;
        let (jobs, last_shown) = page_documents(&rows, limit as usize)?;
        let next_cursor = match last_shown {
            Some(row) => Some(
                Cursor { sort: SORT.into(), value: row.try_get("created_position")?, id: row.try_get("id")? }.encode(),
            ),
            None => None,
        };
        // Unpaged, `limit` is the number of jobs answered (as the previous API said).
        let limit = if unpaged { jobs.len() as i64 } else { limit };
        let page = JobPage { jobs: DocumentSlot, total, skip, limit, next_cursor, position };
        let body = serde_json::to_string(&page).map_err(ApiError::internal)?;
        Ok((RawJson(with_documents(&body, "jobs", &jobs)?), vec![position]))
    })
    .await
}

/// `GET /api/v1/jobs?project_id=&status_filter=&job_type=&skip=&limit=&cursor=`.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("status_filter" = Option<JobStatus>, Query, description = "Status"), ("project_id" = Option<i64>, Query, minimum = 1, description = "Project"), ("job_type" = Option<JobType>, Query, description = "Job type"), ("skip" = Option<i64>, Query, minimum = 0, maximum = 10000000, description = "Offset (slow path)"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1-1000, default 100"), ("cursor" = Option<String>, Query, description = "Keyset cursor from next_cursor")), responses((status = 200, description = "{jobs, total, skip, limit, next_cursor, position}, newest first", body = JobPage), (status = 400, description = "Malformed or out-of-range parameter or header (problem+json naming it)"), (status = 503, description = "X-CC-Min-Position not reached in time (problem+json, Retry-After)")))]
pub async fn list_jobs(
    State(state): State<QueryState>,
    min: MinPosition,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params(params);
    let filters = Filters {
        project_id: params.project_id()?,
        statuses: params
            .parsed("status_filter", JobStatus::parse)?
            .into_iter()
            .collect(),
        job_type: params.parsed("job_type", JobType::parse)?,
    };
    page(&state, "jobs", params, filters, min, false).await
}

/// The most rows `GET /api/v1/jobs/active/list` answers when the client asks for no page.
pub const ACTIVE_LIST_MAX: i64 = 10_000;

/// `GET /api/v1/jobs/active/list`: pending and running jobs, newest first; every one (up
/// to [`ACTIVE_LIST_MAX`]) unless the client asks for a page.
#[utoipa::path(get, path = "/api/v1/jobs/active/list", tag = "jobs", params(("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("project_id" = Option<i64>, Query, minimum = 1, description = "Project"), ("job_type" = Option<JobType>, Query, description = "Job type"), ("skip" = Option<i64>, Query, minimum = 0, maximum = 10000000, description = "Offset (slow path)"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1-1000; without limit, skip or cursor: every active job, up to 10000"), ("cursor" = Option<String>, Query, description = "Keyset cursor from next_cursor")), responses((status = 200, description = "Pending and running jobs, newest first", body = JobPage), (status = 400, description = "Malformed or out-of-range parameter or header (problem+json naming it)"), (status = 503, description = "X-CC-Min-Position not reached in time (problem+json, Retry-After)")))]
pub async fn active_jobs(
    State(state): State<QueryState>,
    min: MinPosition,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params(params);
    let filters = Filters {
        project_id: params.project_id()?,
        statuses: vec![JobStatus::Pending, JobStatus::Running],
        job_type: params.parsed("job_type", JobType::parse)?,
    };
    // Unpaged unless the client pages (the previous API listed every active job), up to
    // ACTIVE_LIST_MAX rows; a larger backlog gets `next_cursor` like any page.
    let unpaged = !["limit", "skip", "cursor"]
        .iter()
        .any(|p| params.text(p).is_some());
    page(&state, "active_jobs", params, filters, min, unpaged).await
}

/// The stored document of job `id`, or 404.
async fn job_row(
    state: &QueryState,
    id: &str,
    min: MinPosition,
) -> Result<
    (
        String,
        commandcenter_event_store::Position,
        crate::pools::ChosenPool,
    ),
    ApiError,
> {
    let pool = pool_for(
        &state.pools,
        VIEWS,
        min.0,
        state.config.min_position_wait,
        &mut state.hub.changes(),
    )
    .await?;
    let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
    position_columns(&mut qb, "job_view");
    qb.push(
        ", job.row, job.unstored FROM (SELECT 1) one LEFT JOIN \
         (SELECT coalesce(j.doc, (to_jsonb(j) - 'doc')::text) AS row, j.doc IS NULL AS unstored \
            FROM job_view j WHERE j.id = ",
    )
    .push_bind(id.to_string())
    .push(") job ON true");
    let row = state
        .pools
        .checked(&pool, qb.build().fetch_one(&pool.pool).await)?;
    let position = read_position(&row)?;
    let job = row_document(&row)?.ok_or(ApiError::NotFound("job"))?;
    Ok((job.into_owned(), position, pool))
}

/// `GET /api/v1/jobs/{id}`; with `as_of`, `as_of_position` or `as_of_version`, the job
/// as it was then, rebuilt from its events.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id"), ("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("as_of" = Option<String>, Query, format = DateTime, description = "Time travel: the state at this RFC 3339 time"), ("as_of_position" = Option<String>, Query, pattern = "^[0-9a-fA-F]{16}[0-7][0-9a-fA-F]{15}$", description = "Time travel: the state at this position of the global order"), ("as_of_version" = Option<i64>, Query, minimum = 1, description = "Time travel: the state after this many events")), responses((status = 200, description = "The job", body = crate::schema::JobView), (status = 400, description = "Malformed time-travel parameter (problem+json)"), (status = 404, description = "Unknown or deleted, or not existing at that time (problem+json)")))]
pub async fn get_job(
    State(state): State<QueryState>,
    min: MinPosition,
    Path(id): Path<String>,
    as_of: Result<Query<crate::time_travel::AsOf>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(as_of) = as_of.map_err(ApiError::from)?;
    if let Some(response) = crate::time_travel::as_of::<commandcenter_domain::job::Job>(
        &state.primary,
        &id,
        &as_of,
        "job",
    )
    .await?
    {
        return Ok(response);
    }
    let (job, position, pool) = job_row(&state, &id, min).await?;
    Ok(bytes_response(Bytes::from(job), position, &pool.name))
}

/// `GET /api/v1/jobs/{id}/progress`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/progress", tag = "jobs", params(("id" = String, Path, description = "Job id"), ("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)")), responses((status = 200, description = "{job_id, status, progress, current_step, is_terminal, is_active, created_at, started_at, completed_at, duration_seconds}", body = crate::schema::JobProgress), (status = 404, description = "Unknown or deleted (problem+json)")))]
pub async fn job_progress(
    State(state): State<QueryState>,
    min: MinPosition,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (job, position, pool) = job_row(&state, &id, min).await?;
    let job: Value = serde_json::from_str(&job).map_err(ApiError::internal)?;
    let is_active = matches!(job["status"].as_str(), Some("pending" | "running"));
    let body = json!({
        "job_id": job["id"],
        "status": job["status"],
        "progress": job["progress"],
        "current_step": job["current_step"],
        "is_terminal": job["is_terminal"],
        "is_active": is_active,
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "completed_at": job["completed_at"],
        "duration_seconds": job["duration_seconds"],
    });
    Ok(json_response(&body, position, &pool))
}

/// Totals by status and type, success rate and mean duration from `job_counts` rows
/// `(job_type, status, n, duration_sum_us, duration_n)`.
pub fn summarize(rows: &[(String, String, i64, i64, i64)]) -> Value {
    let mut by_status: std::collections::BTreeMap<String, i64> =
        JobStatus::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    let mut by_type: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    let (mut total, mut duration_sum_us, mut duration_n) = (0i64, 0i64, 0i64);
    for (job_type, status, n, sum_us, count) in rows {
        total += n;
        *by_status.entry(status.clone()).or_default() += n;
        *by_type.entry(job_type.clone()).or_default() += n;
        duration_sum_us += sum_us;
        duration_n += count;
    }
    let (completed, failed) = (by_status["completed"], by_status["failed"]);
    let success_fraction =
        (completed + failed > 0).then(|| completed as f64 / (completed + failed) as f64);
    let active_jobs = by_status["pending"] + by_status["running"];
    let average = (duration_n > 0).then(|| duration_sum_us as f64 / duration_n as f64 / 1e6);
    json!({
        "total": total,
        "by_status": by_status,
        "by_type": by_type,
        // A percentage, as the previous API answered; the fraction beside it.
        "success_rate": success_fraction.map(|f| f * 100.0),
        "success_fraction": success_fraction,
        "active_jobs": active_jobs,
        "average_duration_seconds": average,
    })
}

/// `GET /api/v1/jobs/statistics/summary?project_id=`.
#[utoipa::path(get, path = "/api/v1/jobs/statistics/summary", tag = "jobs", params(("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("project_id" = Option<i64>, Query, minimum = 1, description = "Project")), responses((status = 200, description = "{total, by_status, by_type, success_rate, average_duration_seconds}", body = crate::schema::JobStatistics), (status = 400, description = "Malformed or out-of-range parameter or header (problem+json naming it)"), (status = 503, description = "X-CC-Min-Position not reached in time (problem+json, Retry-After)")))]
pub async fn statistics(
    State(state): State<QueryState>,
    min: MinPosition,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params(params);
    let project_id = params.project_id()?;
    let key = CacheKey::new("job_statistics", &["job_view"], project_id, &params.0);
    cached_or(&state, key, min, VIEWS, |pool| async move {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        position_columns(&mut qb, "job_view");
        qb.push(
            ", c.job_type, c.status, c.n, c.duration_sum_us, c.duration_n FROM (SELECT 1) one \
                 LEFT JOIN job_counts c ON true",
        );
        if let Some(project) = project_id {
            qb.push(" AND c.project_id = ").push_bind(project);
        }
        let rows = qb.build().fetch_all(&pool.pool).await?;
        let position = rows
            .first()
            .map(read_position)
            .transpose()?
            .unwrap_or_default();
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(job_type) = row.try_get::<Option<String>, _>("job_type")? {
                counts.push((
                    job_type,
                    row.try_get("status")?,
                    row.try_get("n")?,
                    row.try_get("duration_sum_us")?,
                    row.try_get("duration_n")?,
                ));
            }
        }
        let mut body = summarize(&counts);
        body["position"] = json!(position);
        Ok((body, vec![position]))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_sums_groups_and_derives_rates() {
        let rows = vec![
            ("noop".to_string(), "completed".to_string(), 3, 6_000_000, 3),
            ("noop".to_string(), "failed".to_string(), 1, 4_000_000, 1),
            ("export".to_string(), "pending".to_string(), 2, 0, 0),
        ];
        let summary = summarize(&rows);
        assert_eq!(summary["total"], 6);
        assert_eq!(summary["by_status"]["completed"], 3);
        assert_eq!(summary["by_status"]["running"], 0);
        assert_eq!(summary["by_type"]["noop"], 4);
        assert_eq!(summary["success_rate"], 75.0);
        assert_eq!(summary["success_fraction"], 0.75);
        assert_eq!(summary["active_jobs"], 2);
        assert_eq!(summary["average_duration_seconds"], 2.5);
        assert_eq!(summarize(&[])["success_rate"], Value::Null);
    }

    #[test]
    fn only_filters_an_index_orders_whatever_their_values_are_settled() {
        let filters = |project_id, statuses: &[JobStatus], job_type| Filters {
            project_id,
            statuses: statuses.to_vec(),
            job_type,
        };
        let (done, running) = (JobStatus::Completed, JobStatus::Running);
        assert!(filters(None, &[], None).settled());
        assert!(filters(Some(1), &[], None).settled());
        assert!(filters(Some(1), &[done], None).settled());
        assert!(filters(None, &[done], None).settled());
        assert!(filters(Some(1), &[done], Some(JobType::Noop)).settled());
        assert!(!filters(None, &[done], Some(JobType::Noop)).settled());
        assert!(!filters(Some(1), &[], Some(JobType::Noop)).settled());
        assert!(!filters(Some(1), &[done, running], None).settled());
    }

    #[test]
    fn a_page_takes_its_documents_in_its_first_field() {
        let page = JobPage {
            jobs: DocumentSlot,
            total: 1,
            skip: 0,
            limit: 100,
            next_cursor: None,
            position: Position::ZERO,
        };
        let body = serde_json::to_string(&page).unwrap();
        let body = with_documents(&body, "jobs", &[r#"{"id":"j"}"#.to_string()]).unwrap();
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["jobs"][0]["id"], "j");
        assert_eq!(parsed["total"], 1);
    }
}
