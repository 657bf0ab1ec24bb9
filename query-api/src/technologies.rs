//! `GET /api/v1/technologies` and `GET /api/v1/technologies/{id}` over `technology_view`.
//!
//! A page is one statement: the rows (keyset after a cursor, or `skip` for old
//! clients), the total (from `technology_counts` when the filters are project, domain
//! and status only; otherwise one `count(*)` with the same filters) and the read
//! model's checkpoint, all from one snapshot.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use commandcenter_api_error::ApiError;
use commandcenter_domain::technology::{
    CostTier, MaturityLevel, TechnologyDomain, TechnologyStatus,
};
use commandcenter_domain::values::{bounded_text, ProjectId};
use serde_json::{json, Value};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::bounded::{fetch_all, EXPENSIVE_SKIP};
use crate::cache::CacheKey;
use crate::consistency::MinPosition;
use crate::cursor::Cursor;
use crate::error::bad_parameter;
use crate::params::Params;
use crate::response::{cached_or, json_response, position_columns, read_position};
use crate::time_travel::AsOf;
use crate::QueryState;
use commandcenter_domain::technology::Technology;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 1000;
/// Largest `skip` (offset pages are the slow path; cursors are not limited).
pub const MAX_SKIP: i64 = 10_000_000;

/// A supported sort: the column (as SQL) and the type its cursor value casts back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    UpdatedAt,
    CreatedAt,
    Priority,
    Relevance,
    Title,
    Rank,
}

impl SortKey {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "updated_at" => Self::UpdatedAt,
            "created_at" => Self::CreatedAt,
            "priority" => Self::Priority,
            "relevance_score" => Self::Relevance,
            "title" => Self::Title,
            "rank" => Self::Rank,
            _ => return None,
        })
    }

    /// The sort expression: constant SQL chosen from this allow-list, never client text.
    fn expr(self) -> &'static str {
        match self {
            Self::UpdatedAt => "t.updated_at",
            Self::CreatedAt => "t.created_at",
            Self::Priority => "t.priority",
            Self::Relevance => "t.relevance_score",
            Self::Title => "lower(t.title)",
            Self::Rank => "ts_rank(t.search, websearch_to_tsquery('english', ",
        }
    }

    fn cast(self) -> &'static str {
        match self {
            Self::UpdatedAt | Self::CreatedAt => "::timestamptz",
            Self::Priority | Self::Relevance => "::smallint",
            Self::Title => "::text",
            Self::Rank => "::real",
        }
    }
}

/// The filters of a technology list.
#[derive(Debug, Default)]
struct Filters {
    project_id: Option<i64>,
    domain: Option<TechnologyDomain>,
    status: Option<TechnologyStatus>,
    search: Option<String>,
    priority_min: Option<i64>,
    relevance_min: Option<i64>,
    tag: Option<String>,
    maturity_level: Option<MaturityLevel>,
    cost_tier: Option<CostTier>,
}

impl Filters {
    fn parse(params: &Params) -> Result<Self, ApiError> {
        Ok(Self {
            project_id: params
                .opt_int("project_id", 1, i64::MAX)?
                .map(|p| {
                    ProjectId::parse("project_id", p)
                        .map(ProjectId::get)
                        .map_err(crate::error::query_value)
                })
                .transpose()?,
            domain: params.parsed("domain", TechnologyDomain::parse)?,
            status: params.parsed("status", TechnologyStatus::parse)?,
            search: params.parsed("search", |name, text| bounded_text(name, text, 1, 200))?,
            priority_min: params.opt_int("priority_min", 1, 5)?,
            relevance_min: params.opt_int("relevance_min", 0, 100)?,
            tag: params.parsed("tag", |name, text| bounded_text(name, text, 1, 64))?,
            maturity_level: params.parsed("maturity_level", MaturityLevel::parse)?,
            cost_tier: params.parsed("cost_tier", CostTier::parse)?,
        })
    }

    /// True when `technology_counts` can give the total.
    fn countable(&self) -> bool {
        self.search.is_none()
            && self.priority_min.is_none()
            && self.relevance_min.is_none()
            && self.tag.is_none()
            && self.maturity_level.is_none()
            && self.cost_tier.is_none()
    }

    /// Appends ` AND …` for each filter, with bound values.
    fn push(&self, qb: &mut QueryBuilder<'_, Postgres>, counts_table: bool) {
        let p = if counts_table { "" } else { "t." };
        if let Some(project) = self.project_id {
            qb.push(format_args!(" AND {p}project_id = "))
                .push_bind(project);
        }
        if let Some(domain) = self.domain {
            qb.push(format_args!(" AND {p}domain = "))
                .push_bind(domain.as_str());
        }
        if let Some(status) = self.status {
            qb.push(format_args!(" AND {p}status = "))
                .push_bind(status.as_str());
        }
        if let Some(search) = &self.search {
            qb.push(" AND t.search @@ websearch_to_tsquery('english', ")
                .push_bind(search.clone())
                .push(")");
        }
        if let Some(min) = self.priority_min {
            qb.push(" AND t.priority >= ").push_bind(min as i16);
        }
        if let Some(min) = self.relevance_min {
            qb.push(" AND t.relevance_score >= ").push_bind(min as i16);
        }
        if let Some(tag) = &self.tag {
            qb.push(" AND t.tags @> ARRAY[")
                .push_bind(tag.clone())
                .push("]::text[]");
        }
        if let Some(level) = self.maturity_level {
            qb.push(" AND t.maturity_level = ")
                .push_bind(level.as_str());
        }
        if let Some(tier) = self.cost_tier {
            qb.push(" AND t.cost_tier = ").push_bind(tier.as_str());
        }
    }
}

fn push_sort_expr(qb: &mut QueryBuilder<'_, Postgres>, key: SortKey, search: &Option<String>) {
    qb.push(key.expr());
    if key == SortKey::Rank {
        qb.push_bind(search.clone().unwrap_or_default()).push("))");
    }
}

/// `GET /api/v1/technologies`.
#[utoipa::path(get, path = "/api/v1/technologies", tag = "technologies", params(("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("skip" = Option<i64>, Query, description = "Offset (slow path)"), ("limit" = Option<i64>, Query, description = "1-1000, default 50"), ("cursor" = Option<String>, Query, description = "Keyset cursor from next_cursor"), ("sort" = Option<String>, Query, description = "updated_at, created_at, priority, relevance_score, title (or rank, with search); - for descending; default -created_at"), ("project_id" = Option<i64>, Query, description = "Project"), ("domain" = Option<String>, Query, description = "Domain"), ("status" = Option<String>, Query, description = "Status"), ("search" = Option<String>, Query, description = "Full-text search"), ("priority_min" = Option<i64>, Query, description = "Minimum priority"), ("relevance_min" = Option<i64>, Query, description = "Minimum relevance score"), ("tag" = Option<String>, Query, description = "Has this tag"), ("maturity_level" = Option<String>, Query, description = "Maturity level"), ("cost_tier" = Option<String>, Query, description = "Cost tier")), responses((status = 200, description = "{items, total, page, page_size, next_cursor, position}"), (status = 400, description = "Malformed or out-of-range parameter or header (problem+json naming it)"), (status = 503, description = "X-CC-Min-Position not reached in time (problem+json, Retry-After)")))]
pub async fn list_technologies(
    State(state): State<QueryState>,
    min: MinPosition,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params(params);
    let filters = Filters::parse(&params)?;
    let limit = params.int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let skip = params.int("skip", 0, 0, MAX_SKIP)?;
    let default_sort = if filters.search.is_some() {
        "-rank"
    } else {
        "-created_at"
    };
    let sort = params.text("sort").unwrap_or(default_sort).to_string();
    let (descending, key_name) = match sort.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, sort.as_str()),
    };
    let key = SortKey::parse(key_name).ok_or_else(|| {
        bad_parameter(
            "sort",
            "must be one of updated_at, created_at, priority, relevance_score, title \
             (or rank, with search), optionally prefixed with - for descending",
        )
    })?;
    if key == SortKey::Rank && filters.search.is_none() {
        return Err(bad_parameter("sort", "rank needs a search"));
    }
    let cursor = params
        .text("cursor")
        .map(|c| Cursor::decode(c, &sort))
        .transpose()?;

    let cache_key = CacheKey::new(
        "technologies",
        &["technology_view"],
        filters.project_id,
        &params.0,
    );
    let reads = state.config.expensive.clone();
    cached_or(&state, cache_key, min, &[("technology_view", "technology")], |pool| async move {
        let (dir, cmp) = if descending { ("DESC", "<") } else { ("ASC", ">") };
        // Past a `skip`, the page's keys first, then the JSON of those rows only (not of
        // skipped ones); without one, the rows are rendered in the same pass.
        let skips = cursor.is_none() && skip > 0;
        let mut qb = QueryBuilder::<Postgres>::new(if skips {
            "WITH keys AS (SELECT t.id, "
        } else {
            "WITH page AS (SELECT to_jsonb(t) - 'search' AS row, t.id, "
        });
        push_sort_expr(&mut qb, key, &filters.search);
        qb.push(" AS sort_value FROM technology_view t WHERE true");
        filters.push(&mut qb, false);
        if let Some(cursor) = &cursor {
            qb.push(" AND (");
            push_sort_expr(&mut qb, key, &filters.search);
            qb.push(format_args!(", t.id) {cmp} ("))
                .push_bind(cursor.value.clone())
                .push(key.cast())
                .push(", ")
                .push_bind(cursor.id.clone())
                .push(")");
        }
        qb.push(" ORDER BY sort_value ")
            .push(dir)
            .push(", t.id ")
            .push(dir)
            .push(" LIMIT ")
            .push_bind(limit + 1);
        if cursor.is_none() {
            qb.push(" OFFSET ").push_bind(skip);
        }
        if skips {
            qb.push(
                "), page AS (SELECT to_jsonb(t) - 'search' AS row, t.id, k.sort_value \
                   FROM keys k JOIN technology_view t ON t.id = k.id",
            );
        }
        qb.push("), total AS (");
        if filters.countable() {
            qb.push("SELECT coalesce(sum(n), 0)::bigint AS n FROM technology_counts WHERE true");
            filters.push(&mut qb, true);
        } else {
            qb.push("SELECT count(*) AS n FROM technology_view t WHERE true");
            filters.push(&mut qb, false);
        }
        qb.push(") SELECT (SELECT n FROM total) AS total, ");
        position_columns(&mut qb, "technology_view");
        qb.push(", page.row, page.id, page.sort_value::text AS sort_text FROM (SELECT 1) one LEFT JOIN page ON true ORDER BY page.sort_value ")
            .push(dir)
            .push(", page.id ")
            .push(dir);
        let expensive = filters.search.is_some() || (cursor.is_none() && skip > EXPENSIVE_SKIP);
        let rows = fetch_all(&reads, &pool.pool, &mut qb, expensive).await?;
        let first = rows.first().ok_or_else(|| ApiError::internal("page query returned no row"))?;
        let total: i64 = first.try_get("total")?;
        let position = read_position(first)?;
        let mut items: Vec<Value> = Vec::with_capacity(rows.len());
        let mut keys: Vec<(String, String)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(item) = row.try_get::<Option<Value>, _>("row")? else { continue };
            keys.push((row.try_get("sort_text")?, row.try_get("id")?));
            items.push(item);
        }
        // One row more than the page was fetched: its presence means there is a next page,
        // which continues after the last row shown.
        let next_cursor = (items.len() as i64 > limit).then(|| {
            items.truncate(limit as usize);
            let (value, id) = keys.swap_remove(limit as usize - 1);
            Cursor { sort: sort.clone(), value, id }.encode()
        });
        let body = json!({
            "items": items,
            "total": total,
            "page": skip / limit + 1,
            "page_size": limit,
            "next_cursor": next_cursor,
            "position": position,
        });
        Ok((body, vec![position]))
    })
    .await
}

/// `GET /api/v1/technologies/{id}`: the view row; 404 when unknown or deleted. With
/// `as_of`, `as_of_position` or `as_of_version`: the technology as it was then, rebuilt
/// from its events.
#[utoipa::path(get, path = "/api/v1/technologies/{id}", tag = "technologies", params(("id" = String, Path, description = "Technology id"), ("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("as_of" = Option<String>, Query, description = "Time travel: the state at this RFC 3339 time"), ("as_of_position" = Option<String>, Query, description = "Time travel: the state at this position of the global order"), ("as_of_version" = Option<i64>, Query, description = "Time travel: the state after this many events")), responses((status = 200, description = "The technology (as of the time asked, with as_of.lifecycle)"), (status = 400, description = "Malformed time-travel parameter (problem+json)"), (status = 404, description = "Unknown or deleted, or not existing at that time (problem+json)"), (status = 503, description = "X-CC-Min-Position not reached in time")))]
pub async fn get_technology(
    State(state): State<QueryState>,
    min: MinPosition,
    Path(id): Path<String>,
    as_of: Result<Query<AsOf>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(as_of) = as_of.map_err(ApiError::from)?;
    if let Some(response) =
        crate::time_travel::as_of::<Technology>(&state.primary, &id, &as_of, "technology").await?
    {
        return Ok(response);
    }
    let pool = state.pools.choose();
    crate::consistency::wait_until_reached(
        &pool.pool,
        &[("technology_view", "technology")],
        min.0,
        state.config.min_position_wait,
        &mut state.hub.changes(),
    )
    .await?;
    let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
    position_columns(&mut qb, "technology_view");
    qb.push(", (SELECT to_jsonb(t) - 'search' FROM technology_view t WHERE t.id = ")
        .push_bind(id)
        .push(") AS row");
    let row = qb.build().fetch_one(&pool.pool).await?;
    let position = read_position(&row)?;
    let item: Option<Value> = row.try_get("row")?;
    let item = item.ok_or(ApiError::NotFound("technology"))?;
    Ok(json_response(&item, position, &pool))
}
