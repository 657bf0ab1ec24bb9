//! `GET /api/v1/technologies` and `GET /api/v1/technologies/{id}` over `technology_view`.
//!
//! A page is one statement (built in `queries::technologies`): the rows, the total and
//! the read model's checkpoint, all from one snapshot. The handler parses the request,
//! runs the statement and shapes the answer.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use commandcenter_api_error::ApiError;
use commandcenter_event_store::Position;
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder};

use crate::cache::CacheKey;
use crate::consistency::MinPosition;
use crate::cursor::Cursor;
use crate::error::bad_parameter;
use crate::params::Params;
use crate::queries::technologies::{Filters, SortKey, TechnologyPage};
use crate::response::{
    bytes_response, cached_or, position_columns, read_position, row_document, with_documents,
    DocumentSlot, RawJson,
};
use crate::time_travel::AsOf;
use crate::QueryState;
use commandcenter_domain::technology::Technology;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 1000;
/// Largest `skip` (offset pages are the slow path; cursors are not limited).
pub const MAX_SKIP: i64 = 10_000_000;

/// A page as answered (documented by `schema::TechnologyList`). The stored documents
/// are written out as they are, never read into a tree (`with_documents` writes them
/// into `items`, which must stay the first field); the fields are in alphabetical
/// order, as every answer built from a JSON map has them.
#[derive(Serialize)]
struct PageBody {
    items: DocumentSlot,
    next_cursor: Option<String>,
    page: i64,
    page_size: i64,
    position: Position,
    total: i64,
    total_is_estimate: bool,
}

/// `GET /api/v1/technologies`.
#[utoipa::path(get, path = "/api/v1/technologies", tag = "technologies", params(("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("skip" = Option<i64>, Query, minimum = 0, maximum = 10000000, description = "Offset (slow path)"), ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1-1000, default 50"), ("cursor" = Option<String>, Query, description = "Keyset cursor from next_cursor"), ("sort" = inline(Option<crate::schema::TechnologySort>), Query, description = "importance (priority, then relevance_score, then updated_at), updated_at, created_at, priority, relevance_score, title (or rank: full-text relevance, with search); - for descending; default -importance"), ("project_id" = Option<i64>, Query, minimum = 1, description = "Project"), ("domain" = Option<commandcenter_domain::technology::TechnologyDomain>, Query, description = "Domain"), ("status" = Option<commandcenter_domain::technology::TechnologyStatus>, Query, description = "Status"), ("search" = Option<String>, Query, max_length = 200, pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$", description = "Substring of title, description or tags, case-insensitive (sort=rank orders matches by full-text relevance)"), ("priority_min" = Option<i64>, Query, minimum = 1, maximum = 5, description = "Minimum priority"), ("relevance_min" = Option<i64>, Query, minimum = 0, maximum = 100, description = "Minimum relevance score"), ("tag" = Option<String>, Query, max_length = 64, pattern = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$", description = "Has this tag"), ("maturity_level" = Option<commandcenter_domain::technology::MaturityLevel>, Query, description = "Maturity level"), ("cost_tier" = Option<commandcenter_domain::technology::CostTier>, Query, description = "Cost tier")), responses((status = 200, description = "{items, total, total_is_estimate, page, page_size, next_cursor, position}; a search counts exactly up to 1,000 matches, beyond which total is an estimate and total_is_estimate true", body = crate::schema::TechnologyList), (status = 400, description = "Malformed or out-of-range parameter or header (problem+json naming it)"), (status = 503, description = "X-CC-Min-Position not reached in time (problem+json, Retry-After)")))]
pub async fn list_technologies(
    State(state): State<QueryState>,
    min: MinPosition,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params(params);
    let mut filters = Filters::parse(&params)?;
    let limit = params.int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let skip = params.int("skip", 0, 0, MAX_SKIP)?;
    // The previous API's order: priority, relevance score, updated_at, all descending.
    let sort = params.text("sort").unwrap_or("-importance").to_string();
    let (descending, key_name) = match sort.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, sort.as_str()),
    };
    let key = SortKey::parse(key_name).ok_or_else(|| {
        bad_parameter(
            "sort",
            "must be one of importance, updated_at, created_at, priority, relevance_score, \
             title (or rank, with search), optionally prefixed with - for descending",
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
    let search_words = state.search_words.clone();
    cached_or(
        &state,
        cache_key,
        min,
        &[("technology_view", "technology")],
        |pool| async move {
            if let Some(search) = &filters.search {
                filters.search_plan = search_words.plan(search, &pool.pool).await;
            }
            let page = TechnologyPage {
                filters: &filters,
                key,
                descending,
                limit,
                skip,
                cursor: cursor.as_ref(),
            };
            let found = page.run(&reads, &pool.pool).await?;
            let next_cursor = found.next.map(|(value, id)| {
                Cursor {
                    sort: sort.clone(),
                    value,
                    id,
                }
                .encode()
            });
            let body = PageBody {
                items: DocumentSlot,
                next_cursor,
                page: skip / limit + 1,
                page_size: limit,
                position: found.position,
                total: found.total,
                total_is_estimate: found.total_is_estimate,
            };
            let body = serde_json::to_string(&body).map_err(ApiError::internal)?;
            let body = with_documents(&body, "items", &found.items)?;
            Ok((RawJson(body), vec![found.position]))
        },
    )
    .await
}

/// `GET /api/v1/technologies/{id}`: the view row; 404 when unknown or deleted. With
/// `as_of`, `as_of_position` or `as_of_version`: the technology as it was then, rebuilt
/// from its events.
#[utoipa::path(get, path = "/api/v1/technologies/{id}", tag = "technologies", params(("id" = String, Path, description = "Technology id"), ("X-CC-Min-Position" = Option<String>, Header, description = "Wait until the read model reflects this position (read your writes)"), ("as_of" = Option<String>, Query, format = DateTime, description = "Time travel: the state at this RFC 3339 time"), ("as_of_position" = Option<String>, Query, pattern = "^[0-9a-fA-F]{16}[0-7][0-9a-fA-F]{15}$", description = "Time travel: the state at this position of the global order"), ("as_of_version" = Option<i64>, Query, minimum = 1, description = "Time travel: the state after this many events")), responses((status = 200, description = "The technology (as of the time asked, with as_of.lifecycle)", body = crate::schema::TechnologyView), (status = 400, description = "Malformed time-travel parameter (problem+json)"), (status = 404, description = "Unknown or deleted, or not existing at that time (problem+json)"), (status = 503, description = "X-CC-Min-Position not reached in time")))]
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
    let pool = crate::consistency::pool_for(
        &state.pools,
        &[("technology_view", "technology")],
        min.0,
        state.config.min_position_wait,
        &mut state.hub.changes(),
    )
    .await?;
    let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
    position_columns(&mut qb, "technology_view");
    qb.push(
        ", tech.row, tech.unstored FROM (SELECT 1) one LEFT JOIN \
         (SELECT coalesce(t.doc, (to_jsonb(t) - 'search' - 'search_text' - 'doc')::text) AS row, \
                 t.doc IS NULL AS unstored \
            FROM technology_view t WHERE t.id = ",
    )
    .push_bind(id)
    .push(") tech ON true");
    let row = state
        .pools
        .checked(&pool, qb.build().fetch_one(&pool.pool).await)?;
    let position = read_position(&row)?;
    let item = row_document(&row)?.ok_or(ApiError::NotFound("technology"))?;
    Ok(bytes_response(
        Bytes::from(item.into_owned()),
        position,
        &pool.name,
    ))
}

#[cfg(test)]
mod tests {
    use super::{with_documents, DocumentSlot, PageBody, Position};

    #[test]
    fn a_page_takes_its_documents_in_its_first_field() {
        let page = PageBody {
            items: DocumentSlot,
            next_cursor: None,
            page: 1,
            page_size: 50,
            position: Position::ZERO,
            total: 1,
            total_is_estimate: false,
        };
        let body = serde_json::to_string(&page).unwrap();
        let body = with_documents(&body, "items", &[r#"{"id":"t"}"#.to_string()]).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["items"][0]["id"], "t");
        assert_eq!(parsed["page_size"], 50);
    }
}
