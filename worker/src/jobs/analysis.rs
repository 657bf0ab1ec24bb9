//! `analysis` (and `scheduled_analysis`, `batch_analysis`): a report on one project's
//! technologies, read from `technology_view`.
//!
//! - `by_domain`, `by_status`: technology counts (archived included, as a status);
//! - `mean_relevance_score`, `mean_priority`: over technologies not archived, and
//!   `means_over` says how many that is and how many archived ones were left out;
//! - `stale`: technologies not archived and not updated for `stale_days` days, the
//!   oldest first (at most 50 listed);
//! - `top`: the `top` technologies not archived by **score = relevance_score × priority
//!   / 5** (0–100: relevance weighted by priority 1–5), ties by the most recently updated;
//! - `risks`: technologies in `implementation` or `integrated` whose maturity is `alpha`
//!   (`alpha_in_use`) or `legacy` (`legacy_in_use`), or whose stability score is below
//!   40 (`unstable_in_use`).

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use commandcenter_domain::job::AnalysisOptions;
use commandcenter_domain::values::ProjectId;
use serde_json::{json, Map, Value};
use sqlx::Row;

use crate::context::{JobContext, JobFailure};
use crate::jobs::database;

type Query<'q> = sqlx::query::QueryScalar<'q, sqlx::Postgres, Value, sqlx::postgres::PgArguments>;

/// The rows of `select` (with `$1` the project and further parameters bound by `bind`),
/// each as a JSON object of its columns.
async fn rows(
    context: &JobContext,
    select: &str,
    project: ProjectId,
    bind: impl for<'q> FnOnce(Query<'q>) -> Query<'q>,
) -> Result<Vec<Value>, JobFailure> {
    let wrapped = format!("SELECT to_jsonb(r) FROM ({select}) r");
    bind(sqlx::query_scalar(&wrapped).bind(project.get()))
        .fetch_all(&context.pool)
        .await
        .map_err(database)
}

/// Most stale technologies listed by name.
const STALE_LISTED: i64 = 50;
/// Stability scores below this are a risk in production.
const UNSTABLE_BELOW: i16 = 40;

/// The report on `project`. `steps` reports progress within the analysis (a single
/// analysis); a batch reports per project instead.
pub(crate) async fn report(
    context: &JobContext,
    project: ProjectId,
    options: AnalysisOptions,
    steps: bool,
) -> Result<Value, JobFailure> {
    let progress = |percent: u8, step: String| {
        if steps {
            context.progress(percent, step);
        }
    };
    let pool = &context.pool;
    let now = Utc::now();
    let stale_before = now - Duration::days(options.stale_days);

    let counts = sqlx::query(
        "SELECT domain, status, count(*) AS n FROM technology_view \
         WHERE project_id = $1 GROUP BY domain, status ORDER BY domain, status",
    )
    .bind(project.get())
    .fetch_all(pool)
    .await
    .map_err(database)?;
    let mut by_domain: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    let mut total = 0_i64;
    for row in &counts {
        let domain: String = row.try_get("domain").map_err(database)?;
        let status: String = row.try_get("status").map_err(database)?;
        let n: i64 = row.try_get("n").map_err(database)?;
        total += n;
        *by_status.entry(status.clone()).or_default() += n;
        let entry = by_domain.entry(domain).or_default();
        let domain_total = entry.get("total").and_then(Value::as_i64).unwrap_or(0) + n;
        entry.insert("total".into(), json!(domain_total));
        entry
            .entry("by_status")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.insert(status, json!(n)));
    }
    progress(25, format!("counted project {project}"));
    context.check_stop()?;

    let means = sqlx::query(
        "SELECT avg(relevance_score) FILTER (WHERE status <> 'archived')::float8 AS relevance, \
                avg(priority) FILTER (WHERE status <> 'archived')::float8 AS priority, \
                count(*) FILTER (WHERE status <> 'archived') AS counted, \
                count(*) FILTER (WHERE status = 'archived') AS archived \
         FROM technology_view WHERE project_id = $1",
    )
    .bind(project.get())
    .fetch_one(pool)
    .await
    .map_err(database)?;
    let mean_relevance: Option<f64> = means.try_get("relevance").map_err(database)?;
    let mean_priority: Option<f64> = means.try_get("priority").map_err(database)?;
    let means_over = json!({
        "technologies": means.try_get::<i64, _>("counted").map_err(database)?,
        "excluded": { "archived": means.try_get::<i64, _>("archived").map_err(database)? },
    });

    let stale_count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM technology_view \
         WHERE project_id = $1 AND status <> 'archived' AND updated_at < $2",
    )
    .bind(project.get())
    .bind(stale_before)
    .fetch_one(pool)
    .await
    .map_err(database)?;
    let stale = rows(
        context,
        "SELECT id, title, status, updated_at, \
                floor(extract(epoch FROM $4 - updated_at) / 86400)::int AS days_since_update \
         FROM technology_view \
         WHERE project_id = $1 AND status <> 'archived' AND updated_at < $2 \
         ORDER BY updated_at, id LIMIT $3",
        project,
        |q| q.bind(stale_before).bind(STALE_LISTED).bind(now),
    )
    .await?;
    progress(50, format!("found stale technologies of project {project}"));
    context.check_stop()?;

    let top = rows(
        context,
        "SELECT id, title, status, relevance_score, priority, \
                (relevance_score * priority)::float8 / 5 AS score \
         FROM technology_view WHERE project_id = $1 AND status <> 'archived' \
         ORDER BY relevance_score * priority DESC, updated_at DESC, id LIMIT $2",
        project,
        |q| q.bind(options.top),
    )
    .await?;
    progress(75, format!("ranked technologies of project {project}"));
    context.check_stop()?;

    let risks = rows(
        context,
        "SELECT CASE WHEN maturity_level = 'alpha' THEN 'alpha_in_use' \
                     WHEN maturity_level = 'legacy' THEN 'legacy_in_use' \
                     ELSE 'unstable_in_use' END AS flag, \
                id, title, status, maturity_level, stability_score \
         FROM technology_view \
         WHERE project_id = $1 AND status IN ('implementation', 'integrated') \
           AND (maturity_level IN ('alpha', 'legacy') OR stability_score < $2) \
         ORDER BY flag, id",
        project,
        |q| q.bind(UNSTABLE_BELOW),
    )
    .await?;

    Ok(json!({
        "project_id": project.get(),
        "generated_at": now,
        "technologies": total,
        "by_domain": by_domain,
        "by_status": by_status,
        "mean_relevance_score": mean_relevance,
        "mean_priority": mean_priority,
        "means_over": means_over,
        "stale": {
            "days": options.stale_days,
            "count": stale_count,
            "oldest": stale,
        },
        "top": {
            "score": "relevance_score * priority / 5",
            "technologies": top,
        },
        "risks": risks,
    }))
}
