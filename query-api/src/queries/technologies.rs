//! The statement of a technology page over `technology_view`: the rows (keyset after a
//! cursor, or `skip` for old clients), the total (from `technology_counts` when the
//! filters are project, domain and status only; otherwise one `count(*)` with the same
//! filters, which a search stops at [`SEARCH_EXACT_TOTAL`] + 1 matches, reads from the
//! narrow `technology_search` for a common word when the other filters are project,
//! domain and status only, and skips on a first page shorter than its limit + 1, which
//! holds every match) and the read
//! model's checkpoint, all from one snapshot. Every value is bound, but for the page's
//! limit where one plan serves every value (`bounded::push_limit`: a checked integer);
//! only constant SQL chosen from allow-lists is pushed as text.
//!
//! A search answers its total exactly up to [`SEARCH_EXACT_TOTAL`] matches; beyond, an
//! estimate (at least the cap + 1), flagged `total_is_estimate`: the rows the other
//! filters select (`technology_counts`) times the share of the column statistics' sample
//! holding the search, computed by the same statement, when the filters allow
//! (`share_to_estimate_with`); otherwise the planner's. Counting every match of a common
//! word cost 18 pages' worth of work per request.

use std::borrow::Cow;

use commandcenter_api_error::ApiError;
use commandcenter_domain::technology::{
    CostTier, MaturityLevel, TechnologyDomain, TechnologyStatus,
};
use commandcenter_domain::values::bounded_text;
use commandcenter_event_store::Position;
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::bounded::{fetch_all, push_limit, ExpensiveReads, Plan, EXPENSIVE_SKIP};
use crate::cursor::Cursor;
use crate::params::Params;
use crate::response::{page_documents, position_columns, read_position};
use crate::search_words::SearchPlan;

/// A search counts its matches exactly up to this many; past it, its total is an estimate.
pub(crate) const SEARCH_EXACT_TOTAL: i64 = 1_000;

// A short first page is its own count (see `statement`), which is exact only while no
// page can hold more rows than the cap.
const _: () = assert!(crate::technologies::MAX_LIMIT <= SEARCH_EXACT_TOTAL);

/// A supported sort: the column (as SQL) and the type its cursor value casts back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortKey {
    UpdatedAt,
    CreatedAt,
    Priority,
    Relevance,
    Title,
    Rank,
    /// Priority, then relevance score, then `updated_at` (the previous API's order).
    Importance,
}

impl SortKey {
    /// The sort named `name` (without its `-`), if supported.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "updated_at" => Self::UpdatedAt,
            "created_at" => Self::CreatedAt,
            "priority" => Self::Priority,
            "relevance_score" => Self::Relevance,
            "title" => Self::Title,
            "rank" => Self::Rank,
            "importance" => Self::Importance,
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
            // The query worked out once per statement (a generic plan would parse it
            // for each row).
            Self::Rank => "ts_rank(t.search, (SELECT websearch_to_tsquery('english', ",
            Self::Importance => "cc_importance(t.priority, t.relevance_score, t.updated_at)",
        }
    }

    fn cast(self) -> &'static str {
        match self {
            Self::UpdatedAt | Self::CreatedAt => "::timestamptz",
            Self::Priority | Self::Relevance => "::smallint",
            Self::Title | Self::Importance => "::text",
            Self::Rank => "::real",
        }
    }
}

/// The filters of a technology list.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub(crate) project_id: Option<i64>,
    domain: Option<TechnologyDomain>,
    status: Option<TechnologyStatus>,
    pub(crate) search: Option<String>,
    /// What the statistics say of `search` (`search_words`): the word the trigram index
    /// looks up alone, with the whole pattern checked on the rows it finds (without one,
    /// the index gets the pattern), and the share of the rows it matches.
    pub(crate) search_plan: SearchPlan,
    priority_min: Option<i64>,
    relevance_min: Option<i64>,
    tag: Option<String>,
    maturity_level: Option<MaturityLevel>,
    cost_tier: Option<CostTier>,
}

impl Filters {
    /// The filters of a request, each checked.
    pub(crate) fn parse(params: &Params) -> Result<Self, ApiError> {
        Ok(Self {
            project_id: params.project_id()?,
            domain: params.parsed("domain", TechnologyDomain::parse)?,
            status: params.parsed("status", TechnologyStatus::parse)?,
            search: params.parsed("search", |name, text| bounded_text(name, text, 1, 200))?,
            search_plan: SearchPlan::default(),
            priority_min: params.opt_int("priority_min", 1, 5)?,
            relevance_min: params.opt_int("relevance_min", 0, 100)?,
            tag: params.parsed("tag", |name, text| bounded_text(name, text, 1, 64))?,
            maturity_level: params.parsed("maturity_level", MaturityLevel::parse)?,
            cost_tier: params.parsed("cost_tier", CostTier::parse)?,
        })
    }

    /// True when `technology_counts` can give the total.
    fn countable(&self) -> bool {
        self.search.is_none() && self.countable_but_search()
    }

    /// True when `technology_counts` can count the rows every filter but the search
    /// selects.
    fn countable_but_search(&self) -> bool {
        self.priority_min.is_none()
            && self.relevance_min.is_none()
            && self.tag.is_none()
            && self.maturity_level.is_none()
            && self.cost_tier.is_none()
    }

    /// Appends ` AND …` for project, domain and status, with bound values: columns of
    /// `technology_counts` too (without the `t.` of `technology_view t` when
    /// `counts_table`).
    fn push_countable(&self, qb: &mut QueryBuilder<'_, Postgres>, counts_table: bool) {
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
    }

    /// Appends ` AND …` for each filter, with bound values.
    fn push(&self, qb: &mut QueryBuilder<'_, Postgres>, counts_table: bool) {
        self.push_with(qb, counts_table, self.search_form());
    }

    /// How the search is written, from what the statistics say of it (`search_words`).
    fn search_form(&self) -> SearchForm<'_> {
        let known = &self.search_plan;
        match &known.driver {
            Some(word) => SearchForm::Driven(word),
            None if known.is_common() => SearchForm::Filter,
            None if known.is_rare() => SearchForm::Rare,
            None => SearchForm::Pattern,
        }
    }

    /// [`Self::push`], with the search written in `form`.
    fn push_with(
        &self,
        qb: &mut QueryBuilder<'_, Postgres>,
        counts_table: bool,
        form: SearchForm<'_>,
    ) {
        self.push_countable(qb, counts_table);
        if let Some(search) = &self.search {
            // A substring of title, description or tags, case-insensitive: `search_text`
            // is the three lower-cased (migration 0016), trigram-indexed. `IS TRUE` keeps
            // a condition from every index: the planner gives one only bare
            // `column LIKE value` conditions.
            // `(SELECT lower(…))` is worked out once per statement, and hides the value
            // from the planner: a generic plan calls a function of a parameter for each
            // row it checks (a common word's count checks 1,001: 0.30 against 0.20 ms per
            // count), and a plan made for a rare word's value cost less than the generic
            // one by so much that PostgreSQL planned every call anew (about 0.1 ms each).
            // The index takes it all the same (a value known when the scan starts).
            let pattern = format!("%{}%", like_escaped(search));
            match form {
                SearchForm::Driven(word) => qb
                    .push(" AND t.search_text LIKE (SELECT lower(")
                    .push_bind(format!("%{}%", like_escaped(word)))
                    .push(")) AND (t.search_text LIKE (SELECT lower(")
                    .push_bind(pattern)
                    .push("))) IS TRUE"),
                SearchForm::Rare => qb
                    .push(" AND t.search_text LIKE (SELECT lower(")
                    .push_bind(pattern)
                    .push("))"),
                SearchForm::Filter => qb
                    .push(" AND (t.search_text LIKE (SELECT lower(")
                    .push_bind(pattern)
                    .push("))) IS TRUE"),
                SearchForm::Pattern => qb
                    .push(" AND t.search_text LIKE lower(")
                    .push_bind(pattern)
                    .push(")"),
            };
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

/// How a search's condition is written (see `TechnologyPage::plan`).
#[derive(Debug, Clone, Copy)]
enum SearchForm<'w> {
    /// The pattern as a value the planner reads: a plan made for it weighs it by the
    /// column's statistics (a search neither common nor rare, one without a trigram for
    /// the index, or one before the column was first analyzed).
    Pattern,
    /// The driving word (`search_words`) for the index, the whole pattern checked on the
    /// rows it finds.
    Driven(&'w str),
    /// The pattern of a search rare by the statistics, for the index, its value hidden
    /// from the planner: one plan, through the index, serves every rare search.
    Rare,
    /// The pattern, kept from every index: a common word's rows are found by walking
    /// the page's order (and, for the count, `technology_search` in any order).
    Filter,
}

/// `text` with LIKE's wildcards (`%`, `_`) and its escape character taken literally.
fn like_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn push_sort_expr(qb: &mut QueryBuilder<'_, Postgres>, key: SortKey, search: &Option<String>) {
    qb.push(key.expr());
    if key == SortKey::Rank {
        qb.push_bind(search.clone().unwrap_or_default()).push(")))");
    }
}

/// One page of technologies as asked.
pub(crate) struct TechnologyPage<'a> {
    /// What rows qualify.
    pub filters: &'a Filters,
    /// The order.
    pub key: SortKey,
    /// Largest first when true.
    pub descending: bool,
    /// Rows in the page (one more is fetched, to know whether there is a next page).
    pub limit: i64,
    /// Rows skipped (without a cursor).
    pub skip: i64,
    /// Where the previous page ended.
    pub cursor: Option<&'a Cursor>,
}

/// A page as read: its rows, the total, the read model's position, and where the next
/// page starts (sort value as text, id) when there is one.
pub(crate) struct FoundPage {
    /// The page's rows (at most its limit): their stored documents.
    pub items: Vec<String>,
    /// Rows matching the filters, on every page (an estimate when `total_is_estimate`).
    pub total: i64,
    /// True when a search matched more than [`SEARCH_EXACT_TOTAL`] rows and `total` is
    /// an estimate.
    pub total_is_estimate: bool,
    /// The checkpoint of `technology_view` the page reflects.
    pub position: Position,
    /// The last row's sort value and id, when a next page exists.
    pub next: Option<(String, String)>,
}

impl TechnologyPage<'_> {
    /// Runs the statement on `pool` (within the budget of `reads` when it is expensive).
    pub(crate) async fn run(
        &self,
        reads: &ExpensiveReads,
        pool: &PgPool,
    ) -> Result<FoundPage, ApiError> {
        let mut qb = self.statement();
        let rows = fetch_all(reads, pool, &mut qb, self.plan(), self.is_expensive()).await?;
        let first = rows
            .first()
            .ok_or_else(|| ApiError::internal("page query returned no row"))?;
        let mut total: i64 = first.try_get("total")?;
        let position = read_position(first)?;
        let total_is_estimate = self.capped_total() && total > SEARCH_EXACT_TOTAL;
        if total_is_estimate && self.share_to_estimate_with().is_none() {
            total = self
                .planner_estimate(pool)
                .await?
                .max(SEARCH_EXACT_TOTAL + 1);
        }
        let (items, last_shown) = page_documents(&rows, self.limit as usize)?;
        let next = match last_shown {
            Some(row) => Some((row.try_get("sort_text")?, row.try_get("id")?)),
            None => None,
        };
        Ok(FoundPage {
            items: items.into_iter().map(Cow::into_owned).collect(),
            total,
            total_is_estimate,
            position,
            next,
        })
    }

    /// Whether one plan serves every value of the statement (see `push_limit`): no filter
    /// but the project, in the order of the (project_id, importance, id) index, or no
    /// filter at all, in any order (each has its (key, id) index; rank comes only with
    /// a search, which is a filter).
    fn settled(&self) -> bool {
        let filters = self.filters;
        filters.countable()
            && filters.domain.is_none()
            && filters.status.is_none()
            && (self.key == SortKey::Importance || filters.project_id.is_none())
    }

    /// How the statement is planned. A search is planned for its word: a common one is
    /// best found by walking the page's order (and counted by the first rows that match),
    /// a rare one through the trigram index. When the statistics say which
    /// (`search_words`), the statement is written for that path alone and one plan serves
    /// every such search (the generic plan takes that path too: a driving word's and a
    /// rare search's go through the index, a common word's condition is kept from every
    /// index, `SearchForm`): it is prepared once per connection, which spares it a round
    /// trip, a parse and a planning (0.2 ms, as long as a common word's statement runs).
    /// Other searches are planned for their values.
    fn plan(&self) -> Plan {
        let per_values = matches!(self.filters.search_form(), SearchForm::Pattern);
        if self.filters.search.is_some() && per_values {
            Plan::PerValues
        } else {
            Plan::Cached
        }
    }

    /// Whether the total is counted only up to [`SEARCH_EXACT_TOTAL`] + 1 matches.
    fn capped_total(&self) -> bool {
        self.filters.search.is_some()
    }

    /// The table a capped count reads. A common word's first 1,001 matches are most of
    /// the rows read in any order: from `technology_search` (migration 0018), which holds
    /// the few columns the count needs, fifty rows to a page, not from `technology_view`,
    /// whose rows carry their documents (five to a page). It has the columns of the
    /// filters `technology_counts` has, and no trigram index: a rarer search is counted
    /// through `technology_view`'s.
    fn count_table(&self) -> &'static str {
        if self.filters.countable_but_search() && self.filters.search_plan.is_common() {
            "technology_search"
        } else {
            "technology_view"
        }
    }

    /// The statistics' share of the rows holding the search, when the estimate of a total
    /// past the cap is the rows the other filters select (from `technology_counts`) times
    /// it, which the statement computes with the count; `None` when the other filters are
    /// not all columns of `technology_counts` or the column was never analyzed, and the
    /// estimate is the planner's ([`Self::planner_estimate`]).
    fn share_to_estimate_with(&self) -> Option<f64> {
        self.filters
            .search_plan
            .share
            .filter(|_| self.filters.countable_but_search())
    }

    /// The planner's estimate of the rows matching the filters (`EXPLAIN`: plans, runs
    /// nothing), which costs a planning of its own.
    async fn planner_estimate(&self, pool: &PgPool) -> Result<i64, ApiError> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM technology_view t WHERE true",
        );
        // The whole pattern alone: with a driving word, the planner would multiply the
        // word's share into the pattern's, which already holds the word.
        self.filters.push_with(&mut qb, false, SearchForm::Pattern);
        let plan: Value = qb
            .build()
            .persistent(false)
            .fetch_one(pool)
            .await?
            .try_get(0)?;
        Ok(plan[0]["Plan"]["Plan Rows"]
            .as_f64()
            .map_or(0, |rows| rows.round() as i64))
    }

    /// Whether the statement is costly enough to draw on the expensive-read budget.
    fn is_expensive(&self) -> bool {
        // A search of 3 characters or more walks the trigram index and counts at most
        // SEARCH_EXACT_TOTAL + 1 matches: about a page. One of 1 or 2 characters cannot use
        // the index and scans; ranking orders every match.
        let scans = self
            .filters
            .search
            .as_ref()
            .is_some_and(|s| s.chars().count() < 3 || self.key == SortKey::Rank);
        scans || (self.cursor.is_none() && self.skip > EXPENSIVE_SKIP)
    }

    /// The statement: columns `total`, the checkpoint's, then per row `row` (the JSON,
    /// NULL on the one row of an empty page), `unstored` (true when `row` was rendered
    /// by this statement, the row having no stored document yet), `id` and `sort_text`
    /// (the cursor value).
    fn statement(&self) -> QueryBuilder<'static, Postgres> {
        let (filters, key, cursor) = (self.filters, self.key, self.cursor);
        let (dir, cmp) = if self.descending {
            ("DESC", "<")
        } else {
            ("ASC", ">")
        };
        // Past a `skip`, the page's keys first, then the JSON of those rows only (not of
        // skipped ones); without one, the rows are rendered in the same pass.
        let skips = cursor.is_none() && self.skip > 0;
        let mut qb = QueryBuilder::<Postgres>::new(if skips {
            "WITH keys AS (SELECT t.id, "
        } else {
            "WITH page AS (SELECT coalesce(t.doc, (to_jsonb(t) - 'search' - 'search_text' - 'doc')::text) AS row, t.doc IS NULL AS unstored, t.id, "
        });
        push_sort_expr(&mut qb, key, &filters.search);
        qb.push(" AS sort_value FROM technology_view t WHERE true");
        filters.push(&mut qb, false);
        if let Some(cursor) = cursor {
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
            .push(dir);
        let skip = if cursor.is_none() { self.skip } else { 0 };
        push_limit(&mut qb, self.limit + 1, skip, self.settled());
        if skips {
            qb.push(
                "), page AS (SELECT coalesce(t.doc, (to_jsonb(t) - 'search' - 'search_text' - 'doc')::text) AS row, t.doc IS NULL AS unstored, t.id, k.sort_value \
                   FROM keys k JOIN technology_view t ON t.id = k.id",
            );
        }
        qb.push("), total AS (");
        if filters.countable() {
            qb.push("SELECT coalesce(sum(n), 0)::bigint AS n FROM technology_counts WHERE true");
            filters.push(&mut qb, true);
        } else if self.capped_total() {
            // Past the cap, the estimate (`share_to_estimate_with`) comes with the count
            // when the statistics' share and `technology_counts` give it: no second
            // statement.
            let share = self.share_to_estimate_with();
            if share.is_some() {
                qb.push("SELECT CASE WHEN c.n <= ")
                    .push(SEARCH_EXACT_TOTAL)
                    .push(" THEN c.n ELSE greatest(")
                    .push(SEARCH_EXACT_TOTAL + 1)
                    .push(", round((SELECT coalesce(sum(n), 0) FROM technology_counts WHERE true");
                filters.push_countable(&mut qb, true);
                qb.push(")::float8 * ")
                    .push_bind(share)
                    .push("::float8)::bigint) END AS n FROM (");
            }
            // A first page shorter than its limit + 1 holds every match, so it is its own
            // count: a rare word's matches are found once, not again by the count (which,
            // like the page, would read them through the trigram index).
            let first_page = cursor.is_none() && self.skip == 0;
            if first_page {
                qb.push("SELECT CASE WHEN (SELECT count(*) FROM page) <= ")
                    .push_bind(self.limit)
                    .push(" THEN (SELECT count(*) FROM page) ELSE (");
            }
            qb.push(format_args!(
                "SELECT count(*) AS n FROM (SELECT 1 FROM {} t WHERE true",
                self.count_table()
            ));
            filters.push(&mut qb, false);
            push_limit(&mut qb, SEARCH_EXACT_TOTAL + 1, 0, false);
            qb.push(") AS matches");
            if first_page {
                qb.push(") END AS n");
            }
            if share.is_some() {
                // `OFFSET 0` keeps the count a subquery of its own: pulled up, it would be
                // copied into each use of `c.n` and run twice.
                qb.push(" OFFSET 0) AS c");
            }
        } else {
            qb.push("SELECT count(*) AS n FROM technology_view t WHERE true");
            filters.push(&mut qb, false);
        }
        qb.push(") SELECT (SELECT n FROM total) AS total, ");
        position_columns(&mut qb, "technology_view");
        qb.push(", page.row, page.unstored, page.id, page.sort_value::text AS sort_text FROM (SELECT 1) one LEFT JOIN page ON true ORDER BY page.sort_value ")
            .push(dir)
            .push(", page.id ")
            .push(dir);
        qb
    }
}

#[cfg(test)]
mod tests {
    use commandcenter_domain::technology::{TechnologyDomain, TechnologyStatus};

    use super::{like_escaped, Cursor, Filters, Plan, SortKey, TechnologyPage};

    fn page(filters: &Filters, key: SortKey, skip: i64) -> TechnologyPage<'_> {
        TechnologyPage {
            filters,
            key,
            descending: true,
            limit: 50,
            skip,
            cursor: None,
        }
    }

    /// Whether the page's statement has its limit (50 + 1) written in.
    fn written_in(page: &TechnologyPage<'_>) -> bool {
        page.statement().sql().contains(" LIMIT 51")
    }

    #[test]
    fn only_a_page_one_plan_serves_has_its_limit_written_in() {
        let project = Filters {
            project_id: Some(1),
            ..Filters::default()
        };
        let everything = Filters::default();
        let domain = Filters {
            project_id: Some(1),
            domain: Some(TechnologyDomain::AiMl),
            ..Filters::default()
        };
        let search = Filters {
            project_id: Some(1),
            search: Some("rare".into()),
            ..Filters::default()
        };
        assert!(written_in(&page(&project, SortKey::Importance, 0)));
        assert!(written_in(&page(&everything, SortKey::Title, 0)));
        assert!(
            !written_in(&page(&project, SortKey::Title, 0)),
            "a project's rows by title: the (lower(title), id) index filters by project"
        );
        assert!(!written_in(&page(&domain, SortKey::Importance, 0)));
        assert!(!written_in(&page(&search, SortKey::Importance, 0)));
        let skipping = page(&project, SortKey::Importance, 100);
        assert!(
            !written_in(&skipping),
            "a skip keeps limit and offset bound"
        );
        assert!(skipping.statement().sql().contains(" OFFSET $"));
        assert!(
            !page(&project, SortKey::Importance, 0)
                .statement()
                .sql()
                .contains("OFFSET"),
            "no offset on a first page"
        );
    }

    #[test]
    fn only_a_first_page_of_a_search_is_its_own_count() {
        let search = Filters {
            project_id: Some(1),
            search: Some("rare".into()),
            ..Filters::default()
        };
        let own_count = |page: &TechnologyPage<'_>| {
            page.statement()
                .sql()
                .contains("(SELECT count(*) FROM page) <= $")
        };
        assert!(own_count(&page(&search, SortKey::Importance, 0)));
        assert!(own_count(&page(&search, SortKey::Rank, 0)));
        assert!(!own_count(&page(&search, SortKey::Importance, 10)));
        let cursor = Cursor {
            sort: "-importance".into(),
            value: "1".into(),
            id: "00000000-0000-0000-0000-000000000000".into(),
        };
        let after = TechnologyPage {
            cursor: Some(&cursor),
            ..page(&search, SortKey::Importance, 0)
        };
        assert!(!own_count(&after));
        let project = Filters {
            project_id: Some(1),
            ..Filters::default()
        };
        assert!(
            !own_count(&page(&project, SortKey::Importance, 0)),
            "a total from technology_counts"
        );
    }

    #[test]
    fn a_driving_word_goes_to_the_index_and_the_whole_pattern_is_checked_after() {
        let mut search = Filters {
            project_id: Some(1),
            search: Some("number 4242".into()),
            ..Filters::default()
        };
        let sql = page(&search, SortKey::Importance, 0)
            .statement()
            .sql()
            .to_string();
        assert!(!sql.contains("IS TRUE"), "{sql}");
        search.search_plan.driver = Some("4242".into());
        let sql = page(&search, SortKey::Importance, 0)
            .statement()
            .sql()
            .to_string();
        // In the page and in the count alike.
        assert_eq!(
            sql.matches("t.search_text LIKE (SELECT lower($").count(),
            4,
            "{sql}"
        );
        assert_eq!(
            sql.matches("AND (t.search_text LIKE (SELECT lower($")
                .count(),
            2,
            "{sql}"
        );
        assert_eq!(sql.matches("))) IS TRUE").count(), 2, "{sql}");
        assert_eq!(page(&search, SortKey::Importance, 0).plan(), Plan::Cached);
        // One statement for every driving word: the words are bound.
        let mut other = Filters {
            project_id: Some(1),
            search: Some("number 77777".into()),
            ..Filters::default()
        };
        other.search_plan.driver = Some("77777".into());
        assert_eq!(
            page(&other, SortKey::Importance, 0).statement().sql(),
            page(&search, SortKey::Importance, 0).statement().sql()
        );
        search.search_plan.driver = None;
        assert_eq!(
            page(&search, SortKey::Importance, 0).plan(),
            Plan::PerValues
        );
        let none = Filters::default();
        assert_eq!(page(&none, SortKey::Importance, 0).plan(), Plan::Cached);
    }

    #[test]
    fn only_a_common_words_count_reads_technology_search() {
        let count_from = |filters: &Filters| {
            let sql = page(filters, SortKey::Importance, 10)
                .statement()
                .sql()
                .to_string();
            let from = |table: &str| sql.contains(&format!("(SELECT 1 FROM {table} t WHERE"));
            assert!(
                from("technology_search") != from("technology_view"),
                "{sql}"
            );
            from("technology_search")
        };
        let mut search = Filters {
            project_id: Some(1),
            status: Some(TechnologyStatus::Research),
            search: Some("seeded".into()),
            ..Filters::default()
        };
        assert!(!count_from(&search), "no statistics yet");
        search.search_plan.share = Some(0.05);
        assert!(!count_from(&search), "a rarer word: the trigram index");
        assert_eq!(
            page(&search, SortKey::Importance, 10).plan(),
            Plan::PerValues,
            "neither common nor rare: planned for its value"
        );
        search.search_plan.share = Some(0.01);
        assert_eq!(
            page(&search, SortKey::Importance, 10).plan(),
            Plan::PerValues,
            "rare, but the index cannot look it up"
        );
        search.search_plan.indexable = true;
        assert!(!count_from(&search), "a rare word: the trigram index");
        let rare = page(&search, SortKey::Importance, 10);
        assert_eq!(rare.plan(), Plan::Cached);
        let sql = rare.statement().sql().to_string();
        assert_eq!(
            sql.matches(" AND t.search_text LIKE (SELECT lower($")
                .count(),
            2,
            "{sql}"
        );
        search.search_plan.share = Some(0.5);
        assert!(count_from(&search));
        // Kept from the trigram index in the page and the count alike, so that one plan
        // serves every common word.
        let common = page(&search, SortKey::Importance, 10);
        assert_eq!(common.statement().sql().matches("))) IS TRUE").count(), 2);
        assert_eq!(common.plan(), Plan::Cached);
        search.priority_min = Some(2);
        assert!(!count_from(&search), "a column technology_search lacks");
        assert_eq!(page(&search, SortKey::Importance, 10).plan(), Plan::Cached);
    }

    #[test]
    fn like_wildcards_are_taken_literally() {
        assert_eq!(like_escaped("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(like_escaped("JUCE"), "JUCE");
    }
}
