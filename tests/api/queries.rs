//! The query API: shapes, filters, sorts, both pagination styles, totals against
//! `COUNT(*)`, read-your-writes on a second pool, and the cache.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, TestApp};

const DOMAINS: &[&str] = &["audio-dsp", "ai-ml", "performance", "other"];
const STATUSES: &[&str] = &["discovery", "research", "evaluation", "integrated"];

/// 36 technologies over two projects with varied fields.
async fn seed_technologies(app: &TestApp) {
    for i in 0..36usize {
        let body = json!({
            "project_id": 1 + (i % 2),
            "title": format!("Tech {i:02} {}", if i % 5 == 0 { "synthesizer" } else { "toolkit" }),
            "domain": DOMAINS[i % 4],
            "status": STATUSES[(i / 4) % 4],
            "priority": 1 + (i % 5),
            "relevance_score": (i * 7) % 101,
            "tags": if i % 3 == 0 { json!(["dsp", "realtime"]) } else { json!(["web"]) },
            "maturity_level": if i % 2 == 0 { "stable" } else { "beta" },
            "cost_tier": if i % 4 == 0 { "free" } else { "enterprise" },
            "description": "A technology under evaluation",
        });
        let response = app.post("/api/v1/technologies", &body).await;
        assert_eq!(response.status(), 201);
    }
    app.wait_caught_up().await;
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    assert_eq!(response.headers()["x-cc-position"].len(), 32);
    response.json().await.unwrap()
}

/// `n` technologies in project 1 through `demo seed`, titled "Seed <run> #<i>" and
/// described "Seeded technology number <i> for benchmarks.".
async fn demo_technologies(app: &TestApp, n: u64) {
    use commandcenter_event_store::{AppendSignal, EventStore};
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let plan = commandcenter::demo::SeedPlan {
        projects: 1,
        technologies: n,
        updates_per_technology: 0,
        jobs: 0,
    };
    commandcenter::demo::seed(&store, plan).await.unwrap();
}

async fn count(app: &TestApp, sql_where: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM technology_view t WHERE {sql_where}"
    ))
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn technology_lists_filter_and_count_like_count_star() {
    let app = spawn_app().await;
    seed_technologies(&app).await;
    let all = get_json(&app, "/api/v1/technologies").await;
    for key in [
        "items",
        "total",
        "total_is_estimate",
        "page",
        "page_size",
        "next_cursor",
        "position",
    ] {
        assert!(all.get(key).is_some(), "response has {key}");
    }
    assert_eq!(all["total"], 36);
    assert_eq!(all["total_is_estimate"], false);
    assert_eq!(all["page"], 1);
    assert_eq!(all["page_size"], 50);
    assert!(all["items"][0].get("search").is_none());
    let cases = [
        ("project_id=1", "project_id = 1"),
        ("domain=ai-ml", "domain = 'ai-ml'"),
        ("status=research", "status = 'research'"),
        (
            "project_id=2&domain=audio-dsp&status=discovery",
            "project_id = 2 AND domain = 'audio-dsp' AND status = 'discovery'",
        ),
        ("priority_min=4", "priority >= 4"),
        ("relevance_min=50", "relevance_score >= 50"),
        ("tag=dsp", "'dsp' = ANY(tags)"),
        ("maturity_level=beta", "maturity_level = 'beta'"),
        (
            "cost_tier=free&project_id=1",
            "cost_tier = 'free' AND project_id = 1",
        ),
        (
            "search=synthesizer",
            "(title || ' ' || coalesce(description, '') || ' ' || array_to_string(tags, ' ')) ILIKE '%synthesizer%'",
        ),
        (
            "search=SYNTH&domain=audio-dsp",
            "(title || ' ' || coalesce(description, '') || ' ' || array_to_string(tags, ' ')) ILIKE '%synth%' AND domain = 'audio-dsp'",
        ),
        ("domain=ui-ux", "domain = 'ui-ux'"),
    ];
    for (query, sql) in cases {
        let page = get_json(&app, &format!("/api/v1/technologies?{query}&limit=1000")).await;
        let expected = count(&app, sql).await;
        assert_eq!(page["total"], expected, "total for {query}");
        assert_eq!(
            page["items"].as_array().unwrap().len() as i64,
            expected,
            "rows for {query}"
        );
    }
    let ranked = get_json(&app, "/api/v1/technologies?search=synthesizer").await;
    assert!(ranked["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["title"].as_str().unwrap().contains("synthesizer")));
}

fn sort_value(item: &Value, key: &str) -> String {
    match key {
        "title" => item["title"].as_str().unwrap().to_lowercase(),
        "priority" | "relevance_score" => format!("{:05}", item[key].as_i64().unwrap()),
        _ => item[key].as_str().unwrap().to_string(),
    }
}

#[tokio::test]
async fn every_sort_orders_pages_and_both_pagination_styles_agree() {
    let app = spawn_app().await;
    seed_technologies(&app).await;
    for key in [
        "updated_at",
        "created_at",
        "priority",
        "relevance_score",
        "title",
    ] {
        for descending in [false, true] {
            let sort = if descending {
                format!("-{key}")
            } else {
                key.to_string()
            };
            // Keyset walk.
            let mut by_cursor: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/api/v1/technologies?sort={sort}&limit=5&cursor={c}"),
                    None => format!("/api/v1/technologies?sort={sort}&limit=5"),
                };
                let page = get_json(&app, &path).await;
                by_cursor.extend(page["items"].as_array().unwrap().iter().cloned());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_string()),
                    None => break,
                }
            }
            // Offset pages.
            let mut by_skip: Vec<Value> = Vec::new();
            for skip in (0..40).step_by(5) {
                let page = get_json(
                    &app,
                    &format!("/api/v1/technologies?sort={sort}&limit=5&skip={skip}"),
                )
                .await;
                assert_eq!(page["page"], skip / 5 + 1);
                by_skip.extend(page["items"].as_array().unwrap().iter().cloned());
            }
            let ids = |items: &[Value]| {
                items
                    .iter()
                    .map(|t| t["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(by_cursor.len(), 36, "{sort}");
            assert_eq!(
                ids(&by_cursor),
                ids(&by_skip),
                "{sort}: cursor and skip pages agree"
            );
            let keys: Vec<(String, String)> = by_cursor
                .iter()
                .map(|t| (sort_value(t, key), t["id"].as_str().unwrap().to_string()))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            if descending {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "{sort} orders by (value, id)");
        }
    }
    let page = get_json(&app, "/api/v1/technologies?sort=-priority&limit=5").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    assert_problem(
        app.get(&format!("/api/v1/technologies?sort=title&cursor={cursor}"))
            .await,
        400,
        "cursor",
    )
    .await;
    assert_problem(
        app.get("/api/v1/technologies?cursor=garbage").await,
        400,
        "cursor",
    )
    .await;
}

#[tokio::test]
async fn a_cursor_walk_returns_every_row_once_while_writes_happen() {
    let app = spawn_app().await;
    seed_technologies(&app).await;
    let before: HashSet<String> = sqlx::query_scalar("SELECT id FROM technology_view")
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let writer = {
        let client = app.client.clone();
        let url = app.url("/api/v1/technologies");
        tokio::spawn(async move {
            for i in 0..40 {
                client
                    .post(&url)
                    .json(&json!({"project_id": 1, "title": format!("Concurrent {i}")}))
                    .send()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/technologies?sort=-created_at&limit=3&cursor={c}"),
            None => "/api/v1/technologies?sort=-created_at&limit=3".to_string(),
        };
        let page = get_json(&app, &path).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    writer.await.unwrap();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no row twice");
    assert!(
        before.is_subset(&unique),
        "every row present at the start was returned"
    );
}

#[tokio::test]
async fn details_and_errors() {
    let app = spawn_app().await;
    let created = app.create_technology("Detail").await;
    let id = created["id"].as_str().unwrap();
    let response = app
        .client
        .get(app.url(&format!("/api/v1/technologies/{id}")))
        .header("x-cc-min-position", created["position"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-cc-position"],
        created["position"].as_str().unwrap()
    );
    let row: Value = response.json().await.unwrap();
    assert_eq!(row["title"], "Detail");
    assert_eq!(row["version"], 1);
    assert_problem(
        app.get(&format!("/api/v1/technologies/{}", uuid::Uuid::now_v7()))
            .await,
        404,
        "",
    )
    .await;
    app.delete(&format!("/api/v1/technologies/{id}")).await;
    app.wait_caught_up().await;
    assert_problem(
        app.get(&format!("/api/v1/technologies/{id}")).await,
        404,
        "",
    )
    .await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("skip=-1", "skip"),
        ("domain=cooking", "domain"),
        ("status=done", "status"),
        ("priority_min=9", "priority_min"),
        ("sort=rank", "sort"),
        ("project_id=0", "project_id"),
        ("maturity_level=ancient", "maturity_level"),
    ] {
        // Every bad query parameter is a 400 naming it (body values are 422s).
        assert_problem(
            app.get(&format!("/api/v1/technologies?{query}")).await,
            400,
            field,
        )
        .await;
    }
    assert_problem(
        app.client
            .get(app.url("/api/v1/technologies"))
            .header("x-cc-min-position", "nonsense")
            .send()
            .await
            .unwrap(),
        400,
        "X-CC-Min-Position",
    )
    .await;
    // The zero position is reached from the start: no wait, no 503.
    for path in [
        "/api/v1/technologies",
        "/api/v1/jobs",
        "/api/v1/dashboard/stats",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("x-cc-min-position", "0".repeat(32))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path} with the zero position");
    }
}

/// Jobs in various states over two projects.
async fn seed_jobs(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..24usize {
        let job: Value = app
            .post(
                "/api/v1/jobs",
                &json!({"project_id": 1 + (i % 2), "job_type": if i % 3 == 0 { "analysis" } else { "noop" }, "max_attempts": 1}),
            )
            .await
            .json()
            .await
            .unwrap();
        let path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
        if i % 4 != 0 {
            app.post(&format!("{path}/dispatch"), &json!({})).await;
            app.patch(&path, &json!({"status": "running", "progress": 20}))
                .await;
        }
        if i % 4 == 2 {
            app.patch(&path, &json!({"status": "completed", "result": {"i": i}}))
                .await;
        }
        if i % 8 == 3 {
            app.patch(&path, &json!({"status": "failed", "error": "boom"}))
                .await;
        }
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    app.wait_caught_up().await;
    ids
}

#[tokio::test]
async fn job_lists_details_statistics_and_dashboard() {
    let app = spawn_app().await;
    let ids = seed_jobs(&app).await;
    let page = get_json(&app, "/api/v1/jobs").await;
    for key in ["jobs", "total", "skip", "limit", "next_cursor"] {
        assert!(page.get(key).is_some(), "response has {key}");
    }
    assert_eq!(page["total"], 24);
    assert_eq!(page["limit"], 100);
    let newest_first: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.reverse();
    assert_eq!(newest_first, expected);
    for (query, sql) in [
        ("project_id=1", "project_id = 1"),
        ("status_filter=running", "status = 'running'"),
        (
            "status_filter=pending&project_id=2",
            "status = 'pending' AND project_id = 2",
        ),
        ("job_type=analysis", "job_type = 'analysis'"),
        (
            "job_type=noop&status_filter=completed&project_id=1",
            "job_type = 'noop' AND status = 'completed' AND project_id = 1",
        ),
    ] {
        let page = get_json(&app, &format!("/api/v1/jobs?{query}")).await;
        let expected: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM job_view WHERE {sql}"))
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(page["total"], expected, "{query}");
        assert_eq!(
            page["jobs"].as_array().unwrap().len() as i64,
            expected,
            "{query}"
        );
    }
    // Cursor and skip walks agree.
    let mut by_cursor = Vec::new();
    let mut path = "/api/v1/jobs?limit=5".to_string();
    loop {
        let page = get_json(&app, &path).await;
        by_cursor.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/jobs?limit=5&cursor={c}"),
            None => break,
        }
    }
    let all: Vec<Value> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert_eq!(by_cursor, all);
    let skipped = get_json(&app, "/api/v1/jobs?limit=5&skip=5").await;
    assert_eq!(skipped["skip"], 5);
    assert_eq!(skipped["jobs"].as_array().unwrap()[0]["id"], all[5]);

    let job = get_json(&app, &format!("/api/v1/jobs/{}", ids[1])).await;
    assert_eq!(job["status"], "running");
    let progress = get_json(&app, &format!("/api/v1/jobs/{}/progress", ids[1])).await;
    assert_eq!(
        progress,
        json!({
            "job_id": ids[1], "status": "running", "progress": 20, "current_step": null,
            "is_terminal": false, "is_active": true, "created_at": job["created_at"],
            "started_at": job["started_at"], "completed_at": null, "duration_seconds": null,
        })
    );
    assert_problem(
        app.get(&format!("/api/v1/jobs/{}", uuid::Uuid::now_v7()))
            .await,
        404,
        "",
    )
    .await;
    assert_problem(
        app.get("/api/v1/jobs?status_filter=paused").await,
        400,
        "status_filter",
    )
    .await;

    let active = get_json(&app, "/api/v1/jobs/active/list").await;
    let expected_active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_view WHERE status IN ('pending', 'running')")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(active["total"], expected_active);
    assert!(active["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "pending" || j["status"] == "running"));

    let stats = get_json(&app, "/api/v1/jobs/statistics/summary").await;
    let truth: (i64, i64, i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'), \
                count(*) FILTER (WHERE job_type = 'analysis'), avg(duration_seconds) FROM job_view",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stats["total"], truth.0);
    assert_eq!(stats["by_status"]["completed"], truth.1);
    assert_eq!(stats["by_status"]["failed"], truth.2);
    assert_eq!(stats["by_type"]["analysis"], truth.3);
    let rate = truth.1 as f64 / (truth.1 + truth.2) as f64;
    assert!((stats["success_fraction"].as_f64().unwrap() - rate).abs() < 1e-9);
    // A percentage, as the previous API answered.
    assert!((stats["success_rate"].as_f64().unwrap() - rate * 100.0).abs() < 1e-6);
    assert!((stats["average_duration_seconds"].as_f64().unwrap() - truth.4.unwrap()).abs() < 1e-6);

    let dashboard = get_json(&app, "/api/v1/dashboard/stats?project_id=1").await;
    let (pending, running, failed): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'running'), \
                count(*) FILTER (WHERE status = 'failed') FROM job_view WHERE project_id = 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(dashboard["jobs"]["active"], pending + running);
    assert_eq!(dashboard["jobs"]["failed_last_24h"], failed);
    assert_eq!(dashboard["technologies"]["total"], 0);
}

#[tokio::test]
async fn reads_see_their_own_writes_on_a_second_pool() {
    // A second connection string to the same server stands in for a replica.
    let app = spawn_app_with(|args| {
        args.query.read_database_urls = vec![args.database.database_url.clone()];
    })
    .await;
    for i in 0..40 {
        let created: Value = app
            .post(
                "/api/v1/technologies",
                &json!({"project_id": 1, "title": format!("RYW {i}")}),
            )
            .await
            .json()
            .await
            .unwrap();
        let position = created["position"].as_str().unwrap();
        let response = app
            .client
            .get(app.url(&format!(
                "/api/v1/technologies/{}",
                created["id"].as_str().unwrap()
            )))
            .header("x-cc-min-position", position)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "write {i} visible");
        assert_eq!(response.headers()["x-cc-source"], "replica-1");
        assert!(response.headers()["x-cc-position"].to_str().unwrap() >= position);
        let list = app
            .client
            .get(app.url("/api/v1/technologies?project_id=1&limit=1000"))
            .header("x-cc-min-position", position)
            .send()
            .await
            .unwrap();
        let list: Value = list.json().await.unwrap();
        assert_eq!(list["total"], i + 1, "the list sees write {i} too");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("db_pool_connections{pool=\"replica-1\",state=\"idle\"}"));
    // A "replica" that is the primary itself is never behind (sampled when /metrics is
    // read, at most once a second).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        if metrics.contains("db_replica_lag_bytes{replica=\"replica-1\"} 0")
            && metrics.contains("db_replica_lag_seconds{replica=\"replica-1\"} 0")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica lag not exported:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_position_never_reached_is_a_503_with_retry_after() {
    let app = spawn_app_with(|args| args.query.min_position_wait_ms = 200).await;
    app.create_technology("Reached").await;
    let response = app
        .client
        .get(app.url("/api/v1/technologies"))
        .header("x-cc-min-position", "7fffffffffffffff0000000000000001")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body = response.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.unwrap(), "1");
    assert!(body.contains("has not reached position"), "{body}");
}

#[tokio::test]
async fn the_cache_never_serves_an_answer_older_than_a_notification() {
    let app = spawn_app().await;
    let created = app.create_technology("Cached").await;
    app.wait_caught_up().await;
    let path = "/api/v1/dashboard/stats?project_id=1";
    let first = app.get(path).await;
    assert_ne!(first.headers()["x-cc-source"], "cache");
    let second = app.get(path).await;
    assert_eq!(second.headers()["x-cc-source"], "cache");
    let cached: Value = second.json().await.unwrap();
    assert_eq!(cached["technologies"]["total"], 1);

    let client = async_nats::connect(crate::helpers::nats_url())
        .await
        .unwrap();
    for round in 0..20 {
        let mut announcements = client
            .subscribe(format!(
                "{}.views.technology_view.1.>",
                app.core_prefix().await
            ))
            .await
            .unwrap();
        client.flush().await.unwrap();
        let update: Value = app
            .patch(
                &format!("/api/v1/technologies/{}", created["id"].as_str().unwrap()),
                // Each round moves to another status than the last.
                &json!({"status": STATUSES[(round + 1) % 4]}),
            )
            .await
            .json()
            .await
            .unwrap();
        use futures::StreamExt;
        // Once the change is announced (the hub hears it on the same server)...
        let _ = tokio::time::timeout(Duration::from_secs(10), announcements.next())
            .await
            .unwrap();
        // ...the hub hears it within milliseconds, and no answer computed before it is
        // served after: a cache that missed the invalidation would keep the old answer
        // for its whole MAX_AGE (10 s), far past this second.
        let status = update["status"].as_str().unwrap().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let fresh: Value = app.get(path).await.json().await.unwrap();
            if fresh["technologies"]["by_status"][&status] == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: stale answer {fresh}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A search counts its matches exactly up to 1,000; beyond, it answers an estimate of
/// more than 1,000 and says so. Seeded technologies are titled "Seed <run> #<n>" and
/// described "Seeded technology number <n> for benchmarks.".
#[tokio::test]
async fn a_search_counts_exactly_up_to_a_cap_and_estimates_beyond_it() {
    let app = spawn_app().await;
    demo_technologies(&app, 1_500).await;
    app.wait_caught_up().await;
    // A histogram of 10 values, which the planner blends with a fixed guess (it trusts
    // one of 100 or more alone), so that its estimate differs from the sample's.
    for statement in [
        "ALTER TABLE technology_view ALTER COLUMN search_text SET STATISTICS 10",
        "ANALYZE technology_view",
    ] {
        sqlx::query(statement).execute(&app.pool).await.unwrap();
    }
    let like =
        |word: &str| format!("cc_search_text(t.title, t.description, t.tags) LIKE '%{word}%'");
    let matching = count(&app, &like("seeded technology")).await;
    assert_eq!(matching, 1_500);

    // With project, domain or status filters only, the estimate is the rows those select
    // (1,500) times the share of the statistics' sample holding the search (all of it);
    // with another filter, the planner's (at least 1,001).
    for (path, exact) in [
        ("/api/v1/technologies?search=seeded%20technology", true),
        (
            "/api/v1/technologies?search=seeded%20technology&project_id=1&status=discovery",
            true,
        ),
        (
            "/api/v1/technologies?search=seeded%20technology&priority_min=1",
            false,
        ),
    ] {
        let many = get_json(&app, path).await;
        assert_eq!(many["total_is_estimate"], true, "{path}: {}", many["total"]);
        let estimate = many["total"].as_i64().unwrap();
        if exact {
            assert_eq!(estimate, matching, "{path}");
        } else {
            assert!(
                (1_001..=2 * matching).contains(&estimate),
                "{path}: estimate {estimate} for {matching} matches"
            );
        }
        assert_eq!(many["items"].as_array().unwrap().len(), 50);
    }

    // Below the cap, exact (and more than a page: the count is not the page's rows).
    for (search, word) in [
        ("number%201", "number 1"),
        ("number%207%20for", "number 7 for"),
    ] {
        let few = get_json(&app, &format!("/api/v1/technologies?search={search}")).await;
        let expected = count(&app, &like(word)).await;
        assert!(expected <= 1_000);
        assert_eq!(few["total"], expected, "total for {word}");
        assert_eq!(few["total_is_estimate"], false, "for {word}");
    }

    // A first page shorter than its limit holds every match and is its own count; a
    // short page after a cursor or a skip is not.
    let matching = count(&app, &like("number 1")).await;
    assert!((100..=1_000).contains(&matching), "{matching}");
    let whole = get_json(&app, "/api/v1/technologies?search=number%201&limit=1000").await;
    assert_eq!(whole["total"], matching);
    assert_eq!(whole["items"].as_array().unwrap().len() as i64, matching);
    assert_eq!(whole["next_cursor"], Value::Null);
    let first = get_json(
        &app,
        &format!(
            "/api/v1/technologies?search=number%201&limit={}",
            matching - 5
        ),
    )
    .await;
    assert_eq!(first["total"], matching);
    let cursor = first["next_cursor"].as_str().unwrap();
    for later in [
        format!("/api/v1/technologies?search=number%201&limit=1000&cursor={cursor}"),
        format!(
            "/api/v1/technologies?search=number%201&limit=1000&skip={}",
            matching - 5
        ),
    ] {
        let page = get_json(&app, &later).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 5, "{later}");
        assert_eq!(page["total"], matching, "{later}");
        assert_eq!(page["total_is_estimate"], false, "{later}");
    }
}

/// Creates technologies "Widget 0" … and "Gizmo 0" … in project 1, waits for the view,
/// and analyzes it (before the first search, which reads the statistics); returns their
/// paths, widgets first.
async fn widgets_and_gizmos(app: &TestApp, widgets: usize, gizmos: usize) -> Vec<String> {
    let mut paths = Vec::new();
    for title in (0..widgets)
        .map(|n| format!("Widget {n}"))
        .chain((0..gizmos).map(|n| format!("Gizmo {n}")))
    {
        let created = app.create_technology(&title).await;
        paths.push(format!(
            "/api/v1/technologies/{}",
            created["id"].as_str().unwrap()
        ));
    }
    app.wait_caught_up().await;
    sqlx::query("ANALYZE technology_view")
        .execute(&app.pool)
        .await
        .unwrap();
    paths
}

/// Retitles the technologies at `paths` "<title> 0", "<title> 1", ….
async fn rename(app: &TestApp, paths: &[String], title: &str) {
    for (n, path) in paths.iter().enumerate() {
        let renamed = app
            .patch(path, &json!({"title": format!("{title} {n}")}))
            .await;
        assert_eq!(renamed.status(), 200);
    }
}

/// A common word's total is counted in `technology_search`, which the projector keeps
/// with `technology_view`: the total follows edits that add or remove the word, status
/// changes (a filter it counts by) and deletions, stays the same after a rebuild, and a
/// row lost from that table is reported by `projections verify`. The oracle is what the
/// test itself did.
#[tokio::test]
async fn a_common_words_count_follows_the_rows_it_counts() {
    use commandcenter_projections::{rebuild, verify, TechnologyView};

    let app = spawn_app().await;
    // "widget" is in 3 of 4 rows.
    let paths = widgets_and_gizmos(&app, 60, 20).await;
    let (widgets, gizmos) = paths.split_at(60);
    // Full first pages (limit 10), so the count runs; each asked once (no cached answer).
    let total = |query: String| {
        let app = &app;
        async move {
            let page = get_json(app, &format!("/api/v1/technologies?{query}")).await;
            assert_eq!(page["total_is_estimate"], false, "{query}");
            page["total"].as_i64().unwrap()
        }
    };
    assert_eq!(total("search=widget&limit=10".into()).await, 60);

    rename(&app, &widgets[..5], "Sprocket").await;
    rename(&app, &gizmos[..2], "Gizmo widget").await;
    for path in &widgets[5..8] {
        assert_eq!(app.delete(path).await.status(), 204);
    }
    for path in &widgets[8..20] {
        let moved = app.patch(path, &json!({"status": "research"})).await;
        assert_eq!(moved.status(), 200);
    }
    app.wait_caught_up().await;
    let widgets_now = 60 - 5 - 3 + 2;
    assert_eq!(total("search=widget&limit=11".into()).await, widgets_now);
    assert_eq!(
        total("search=widget&status=research&limit=11".into()).await,
        12
    );
    assert_eq!(
        total("search=widget&project_id=1&status=discovery&limit=11".into()).await,
        widgets_now - 12
    );

    rebuild(&app.pool, &TechnologyView, 7).await.unwrap();
    assert_eq!(total("search=widget&limit=12".into()).await, widgets_now);
    assert_eq!(
        total("search=widget&status=research&limit=10".into()).await,
        12
    );

    let clean = verify(&app.pool, &TechnologyView, 100).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.first);
    sqlx::query(
        "DELETE FROM technology_search \
          WHERE id = (SELECT min(id) FROM technology_search WHERE search_text LIKE '%widget%')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let lost = verify(&app.pool, &TechnologyView, 100).await.unwrap();
    assert_eq!(lost.differences, 1, "{:?}", lost.first);
    assert_eq!(lost.first[0].table, "technology_search");
}

/// A view that lost the triggers keeping `technology_search` (as a previous release's
/// rebuild running across migration 0018 leaves it) is reported by `projections verify`,
/// whose fold keeps its copy with the triggers all the same, and a rebuild restores the
/// triggers and the table.
#[tokio::test]
async fn a_view_that_lost_its_search_triggers_is_reported_and_rebuilt_whole() {
    use commandcenter_projections::{rebuild, verify, TechnologyView};

    let app = spawn_app().await;
    let widgets = widgets_and_gizmos(&app, 30, 10).await;
    let triggers = "SELECT tgname::text, pg_get_triggerdef(oid) FROM pg_trigger \
                     WHERE tgrelid = 'technology_view'::regclass AND NOT tgisinternal ORDER BY 1";
    let migrated: Vec<(String, String)> =
        sqlx::query_as(triggers).fetch_all(&app.pool).await.unwrap();
    assert_eq!(
        migrated
            .iter()
            .filter(|(name, _)| name.starts_with("technology_search_"))
            .count(),
        3
    );
    for name in [
        "technology_search_inserted",
        "technology_search_updated",
        "technology_search_deleted",
    ] {
        sqlx::query(&format!("DROP TRIGGER {name} ON technology_view"))
            .execute(&app.pool)
            .await
            .unwrap();
    }
    rename(&app, &widgets[..5], "Sprocket").await;
    app.wait_caught_up().await;

    let stale = verify(&app.pool, &TechnologyView, 100).await.unwrap();
    assert_eq!(stale.differences, 5, "{:?}", stale.first);
    assert!(
        stale.first.iter().all(|d| d.table == "technology_search"),
        "{:?}",
        stale.first
    );

    rebuild(&app.pool, &TechnologyView, 100).await.unwrap();
    let restored: Vec<(String, String)> =
        sqlx::query_as(triggers).fetch_all(&app.pool).await.unwrap();
    assert_eq!(restored, migrated);
    assert!(verify(&app.pool, &TechnologyView, 100)
        .await
        .unwrap()
        .is_clean());
    let page = get_json(&app, "/api/v1/technologies?search=widget&limit=10").await;
    assert_eq!(page["total"], 25);
    crate::oracle::assert_counts_match_views_on(&app.pool).await;
}

/// A search of a common and a rare word gives the trigram index the rare word alone and
/// checks the whole pattern on the rows it finds: the same answer as the whole pattern.
#[tokio::test]
async fn a_search_of_a_common_and_a_rare_word_answers_the_whole_pattern() {
    use commandcenter_query_api::search_words::SearchWords;
    let app = spawn_app().await;
    demo_technologies(&app, 1_500).await;
    let mut ids = Vec::new();
    for (title, description) in [
        ("Xylo A", "a technology xylophone"),
        ("Xylo B", "xylophone only"),
        // Lower-cased, a final capital sigma is σ in PostgreSQL and ς in Rust.
        ("Xylo C", "ΟΔΟΣ technology"),
    ] {
        let created = app
            .post(
                "/api/v1/technologies",
                &json!({"project_id": 1, "title": title, "domain": "ai-ml",
                        "description": description}),
            )
            .await;
        assert_eq!(created.status(), 201);
        ids.push(created.json::<Value>().await.unwrap()["id"].clone());
    }
    app.wait_caught_up().await;
    sqlx::query("ANALYZE technology_view")
        .execute(&app.pool)
        .await
        .unwrap();
    let like = |word: &str| format!("t.search_text LIKE '%{word}%'");
    assert_eq!(count(&app, &like("technology")).await, 1_502);
    assert_eq!(count(&app, &like("xylophone")).await, 2);
    assert_eq!(count(&app, &like("technology xylophone")).await, 1);
    let plan = SearchWords::new()
        .plan("Technology  xylophone", &app.pool)
        .await;
    assert_eq!(plan.driver.as_deref(), Some("xylophone"));

    for path in [
        "/api/v1/technologies?search=technology%20xylophone",
        "/api/v1/technologies?search=technology%20xylophone&sort=-rank",
        "/api/v1/technologies?search=technology%20xylophone&limit=1&skip=0&project_id=1",
    ] {
        let found = get_json(&app, path).await;
        assert_eq!(found["total"], 1, "{path}: {found}");
        assert_eq!(found["items"].as_array().unwrap().len(), 1, "{path}");
        assert_eq!(found["items"][0]["id"], ids[0], "{path}");
    }
    let both = get_json(&app, "/api/v1/technologies?search=xylophone").await;
    assert_eq!(both["total"], 2);

    // The driving word is bound as written and lower-cased by PostgreSQL, like the
    // whole pattern (lower-cased by Rust, ΟΔΟΣ would be looked up as οδος).
    let plan = SearchWords::new().plan("ΟΔΟΣ Technology", &app.pool).await;
    assert_eq!(plan.driver.as_deref(), Some("ΟΔΟΣ"));
    let greek = get_json(
        &app,
        "/api/v1/technologies?search=%CE%9F%CE%94%CE%9F%CE%A3%20Technology",
    )
    .await;
    assert_eq!(greek["total"], 1, "{greek}");
    assert_eq!(greek["items"][0]["id"], ids[2]);
}

/// A search with a driving word, one of a common word and one of a rare word are
/// prepared statements that PostgreSQL may settle on a generic plan for: under generic
/// plans only, in every sort, through cursor pages and with `skip`, each answers what the
/// whole pattern selects.
#[tokio::test]
async fn a_driven_search_answers_the_same_under_generic_plans() {
    use commandcenter_query_api::search_words::SearchWords;
    let mut url = String::new();
    let app = spawn_app_with(|args| {
        args.database.database_url = format!(
            "{}?options=-c%20plan_cache_mode%3Dforce_generic_plan",
            args.database.database_url
        );
        url = args.database.database_url.clone();
    })
    .await;
    // The service's sessions are opened from this URL (its options then get the
    // service's own appended).
    let generic = sqlx::PgPool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&generic)
        .await
        .unwrap();
    assert_eq!(mode, "force_generic_plan");
    demo_technologies(&app, 1_500).await;
    for (i, description) in [
        "technology xylophone one",
        "a technology xylophone two",
        "xylophone only",
        "technology xylophone three",
        "the technology xylophone four",
    ]
    .iter()
    .enumerate()
    {
        let created = app
            .post(
                "/api/v1/technologies",
                &json!({"project_id": 1, "title": format!("Xylo {i}"), "domain": "ai-ml",
                        "description": description, "priority": i % 3 + 1}),
            )
            .await;
        assert_eq!(created.status(), 201);
    }
    app.wait_caught_up().await;
    sqlx::query("ANALYZE technology_view")
        .execute(&app.pool)
        .await
        .unwrap();
    let plan = SearchWords::new()
        .plan("technology xylophone", &app.pool)
        .await;
    assert_eq!(plan.driver.as_deref(), Some("xylophone"));
    let expected = ids_where(&app, "search_text LIKE '%technology xylophone%'").await;
    assert_eq!(expected.len(), 4);

    // A common word too: its statement keeps the pattern from the trigram index (one
    // plan for every common word) and counts in `technology_search`. In one domain, so
    // that its matches are more than a page and fewer than the cap.
    let common = SearchWords::new().plan("technology", &app.pool).await;
    assert!(common.is_common(), "{common:?}");
    let in_domain = ids_where(&app, "search_text LIKE '%technology%' AND domain = 'ai-ml'").await;
    assert!(
        (60..=1_000).contains(&in_domain.len()),
        "{}",
        in_domain.len()
    );

    // And a rare word alone: its pattern goes to the trigram index, hidden from the
    // planner, so that one plan serves every rare search.
    let rare = SearchWords::new().plan("xylophone", &app.pool).await;
    assert!(rare.is_rare() && rare.driver.is_none(), "{rare:?}");
    let xylophones = ids_where(&app, "search_text LIKE '%xylophone%'").await;
    assert_eq!(xylophones.len(), 5);

    for sort in [
        "-importance",
        "importance",
        "updated_at",
        "-created_at",
        "title",
        "-priority",
        "relevance_score",
        "-rank",
    ] {
        // Three times each, past PostgreSQL's first plans of a statement.
        for _ in 0..3 {
            walk_and_skip(&app, "search=technology%20xylophone", sort, 3, &expected).await;
            walk_and_skip(&app, "search=technology&domain=ai-ml", sort, 50, &in_domain).await;
            walk_and_skip(&app, "search=xylophone", sort, 2, &xylophones).await;
        }
    }
}

/// The ids of the technologies `technology_view` holds where `sql_where`.
async fn ids_where(app: &TestApp, sql_where: &str) -> HashSet<String> {
    sqlx::query_scalar(&format!(
        "SELECT id::text FROM technology_view WHERE {sql_where}"
    ))
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Walks the technology pages of `query` in `sort`, `limit` at a time through their
/// cursors: each page's total is `expected`'s size, and every row of `expected` comes
/// exactly once. Then the page after a `skip` of `limit` starts where the second did.
async fn walk_and_skip(
    app: &TestApp,
    query: &str,
    sort: &str,
    limit: usize,
    expected: &HashSet<String>,
) {
    let first = format!("/api/v1/technologies?{query}&limit={limit}&sort={sort}");
    let mut seen = Vec::new();
    let mut path = first.clone();
    loop {
        let page = get_json(app, &path).await;
        assert_eq!(page["total"], expected.len(), "{path}");
        assert_eq!(page["total_is_estimate"], false, "{path}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{first}&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len(), "{first}: {seen:?}");
    assert_eq!(
        &seen.iter().cloned().collect::<HashSet<_>>(),
        expected,
        "{first}"
    );
    let skipped = get_json(app, &format!("{first}&skip={limit}")).await;
    assert_eq!(skipped["total"], expected.len(), "{first}");
    assert_eq!(skipped["items"][0]["id"], seen[limit].as_str(), "{first}");
}

/// A technology whose text is as long as the API allows and does not compress (a B-tree
/// entry holding it would exceed PostgreSQL's 2,704 bytes) is projected, found by a
/// search for its last word, and survives a rebuild of the view.
#[tokio::test]
async fn a_long_incompressible_description_is_projected_searched_and_rebuilt() {
    use commandcenter_projections::{rebuild, TechnologyView};
    let app = spawn_app().await;
    let words: Vec<String> = (0..540)
        .map(|_| uuid::Uuid::now_v7().simple().to_string())
        .collect();
    let description = words.join(" ");
    assert!(description.chars().count() <= 20_000);
    let tags: Vec<String> = (0..50)
        .map(|_| uuid::Uuid::now_v7().simple().to_string())
        .collect();
    let created = app
        .post(
            "/api/v1/technologies",
            &json!({"project_id": 1, "title": "Long", "domain": "ai-ml",
                    "description": description, "tags": tags}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"].clone();
    app.wait_caught_up().await;
    let last = words.last().unwrap();
    for _ in 0..2 {
        let found = get_json(&app, &format!("/api/v1/technologies?search={last}")).await;
        assert_eq!(found["total"], 1);
        assert_eq!(found["items"][0]["id"], id);
        let found = get_json(&app, &format!("/api/v1/technologies?search={}", tags[49])).await;
        assert_eq!(found["items"][0]["id"], id);
        rebuild(&app.pool, &TechnologyView, 100).await.unwrap();
    }
}

/// Each read-model row's stored document is what the query API answered for it before
/// documents were stored — the row as PostgreSQL writes it, read into JSON and written
/// compactly — byte for byte, across every field (nulls, integral and fractional floats,
/// escapes, non-ASCII text, nested JSON), after creates, updates, a job's run, a rebuild
/// and the start-up rendering of older rows; details answer it as stored and pages hold it.
#[tokio::test]
async fn stored_documents_are_the_rows_as_served_byte_for_byte() {
    use commandcenter_projections::{documents, rebuild, JobView, TechnologyView};
    let app = spawn_app().await;
    let tricky = "quote \" backslash \\ tab \t newline \n <script>é😀 \u{2028} \u{a0} /";
    let full = app
        .post(
            "/api/v1/technologies",
            &json!({
                "project_id": 1,
                "title": "All fields \"quoted\" \\ é😀",
                "vendor": tricky,
                "domain": "audio-dsp",
                "description": tricky,
                "notes": "",
                "use_cases": "a\r\nb",
                "tags": ["ünïcode", "a\"b", "x\\y"],
                "latency_ms": 0.1,
                "throughput_qps": 1e12,
                "integration_time_estimate_days": 3,
                "stability_score": 0,
                "cost_monthly_usd": 12.5,
                "website_url": "https://example.invalid/a?b=\"c\"&d=é",
                "dependencies": {"lib\"x": {"nested": [null, true, 1.5, 2.0, 1e2, -0.0, "é"]}},
                "last_hn_mention": "2026-01-02T03:04:05.123456+02:00",
                "hn_score_avg": 1e-7,
                "github_stars": 4294967295_u64,
            }),
        )
        .await;
    assert_eq!(full.status(), 201);
    let full: Value = full.json().await.unwrap();
    let bare = app.create_technology("Bare").await;
    let id = full["id"].as_str().unwrap().to_string();
    app.patch(
        &format!("/api/v1/technologies/{id}"),
        &json!({"notes": null, "priority": 5, "vendor": "changed ©", "latency_ms": 3.0}),
    )
    .await;
    let job = app
        .post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "noop", "tags": ["t\"1"], "created_by": "é"}),
        )
        .await;
    let job: Value = job.json().await.unwrap();
    let job_path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    app.post(&format!("{job_path}/dispatch"), &json!({})).await;
    app.patch(
        &job_path,
        &json!({"status": "running", "progress": 40, "current_step": tricky}),
    )
    .await;
    app.patch(
        &job_path,
        &json!({"status": "completed", "result": {"text": tricky, "n": [1, 2.5, 3.0, null]}}),
    )
    .await;
    // More jobs, for the other columns' values and nulls: one left pending (never
    // dispatched), one failed with an error and a traceback, one completed with a null
    // result, one cancelled while pending, one asked to cancel while running.
    let mut more = Vec::new();
    // The one that fails has one attempt: with more it would be retried (pending again).
    for max_attempts in [3, 1, 2, 4, 5] {
        let created = app
            .post(
                "/api/v1/jobs",
                &json!({"project_id": 1, "job_type": "noop", "tags": [], "max_attempts": max_attempts}),
            )
            .await;
        assert_eq!(created.status(), 201);
        let created: Value = created.json().await.unwrap();
        more.push(format!("/api/v1/jobs/{}", created["id"].as_str().unwrap()));
    }
    for path in [&more[1], &more[2], &more[4]] {
        let dispatched = app.post(&format!("{path}/dispatch"), &json!({})).await;
        assert!(dispatched.status().is_success(), "{path}");
        let running = app.patch(path, &json!({"status": "running"})).await;
        assert!(running.status().is_success(), "{path}");
    }
    for (path, body) in [
        (
            &more[1],
            json!({"status": "failed", "error": "boom \"é\" ✗", "traceback": tricky}),
        ),
        (&more[2], json!({"status": "completed", "result": null})),
    ] {
        let ended = app.patch(path, &body).await;
        assert!(ended.status().is_success(), "{path}");
    }
    for path in [&more[3], &more[4]] {
        let cancelled = app.post(&format!("{path}/cancel"), &json!({})).await;
        assert!(cancelled.status().is_success(), "{path}");
    }
    app.wait_caught_up().await;
    let states: Vec<(String, bool)> =
        sqlx::query_as("SELECT status, cancel_requested FROM job_view ORDER BY created_position")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let states: Vec<(&str, bool)> = states.iter().map(|(s, c)| (s.as_str(), *c)).collect();
    assert_eq!(
        states,
        [
            ("completed", false),
            ("pending", false),
            ("failed", false),
            ("completed", false),
            ("cancelled", false),
            ("running", true)
        ]
    );

    // The oracle: how the queries rendered a row per request before.
    let check = |when: &'static str| {
        let pool = app.pool.clone();
        async move {
            for (table, served) in [
                (
                    "technology_view",
                    "to_jsonb(t) - 'search' - 'search_text' - 'doc'",
                ),
                ("job_view", "to_jsonb(t) - 'doc'"),
            ] {
                let rows: Vec<(String, Option<String>, Value)> = sqlx::query_as(&format!(
                    "SELECT id, doc, {served} FROM {table} t ORDER BY id"
                ))
                .fetch_all(&pool)
                .await
                .unwrap();
                assert!(!rows.is_empty(), "{when}: {table} has rows");
                for (id, stored, row) in rows {
                    let before = serde_json::to_string(&row).unwrap();
                    assert_eq!(
                        stored.as_deref(),
                        Some(before.as_str()),
                        "{when}: {table} {id}"
                    );
                }
            }
        }
    };
    check("after the commands").await;

    for (path, table, id) in [
        (
            format!("/api/v1/technologies/{id}"),
            "technology_view",
            id.clone(),
        ),
        (
            format!("/api/v1/technologies/{}", bare["id"].as_str().unwrap()),
            "technology_view",
            bare["id"].as_str().unwrap().to_string(),
        ),
        (
            job_path.clone(),
            "job_view",
            job["id"].as_str().unwrap().to_string(),
        ),
    ] {
        let stored: String = sqlx::query_scalar(&format!("SELECT doc FROM {table} WHERE id = $1"))
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(app.get(&path).await.text().await.unwrap(), stored, "{path}");
        let list = if table == "job_view" {
            "/api/v1/jobs"
        } else {
            "/api/v1/technologies"
        };
        let page = app.get(list).await.text().await.unwrap();
        assert!(page.contains(&stored), "{list} holds {id} as stored");
    }

    rebuild(&app.pool, &TechnologyView, 100).await.unwrap();
    rebuild(&app.pool, &JobView, 100).await.unwrap();
    check("after a rebuild").await;
    app.patch(
        &format!("/api/v1/technologies/{id}"),
        &json!({"notes": tricky}),
    )
    .await;
    app.wait_caught_up().await;
    check("after a write to the rebuilt view").await;

    // A row rewritten by an older release's projector (no `doc` in its upsert) forgets
    // its document rather than keep one of an older version — also in the rebuilt table.
    sqlx::query(
        "UPDATE technology_view SET version = version + 1, notes = 'old writer' WHERE id = $1",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let forgotten: Option<String> =
        sqlx::query_scalar("SELECT doc FROM technology_view WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(forgotten, None, "an outgrown document is forgotten");
    let served: Value = app
        .get(&format!("/api/v1/technologies/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        served["notes"], "old writer",
        "served from the row meanwhile"
    );

    // Rows stored before documents were: rendered by the start-up pass, the same way.
    sqlx::query("UPDATE technology_view SET doc = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE job_view SET doc = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    let page = app.get("/api/v1/technologies?limit=1000").await;
    assert_eq!(
        page.status(),
        200,
        "rows without a document are still served"
    );
    // A detail served from the row reads exactly as the document later stored for it,
    // as a page's does.
    let details = [format!("/api/v1/technologies/{id}"), job_path.clone()];
    let mut unstored = Vec::new();
    for path in &details {
        unstored.push(app.get(path).await.text().await.unwrap());
    }
    documents::render_missing(&app.pool, "technology_view")
        .await
        .unwrap();
    documents::render_missing(&app.pool, "job_view")
        .await
        .unwrap();
    check("after rendering older rows").await;
    for (path, served) in details.iter().zip(unstored) {
        assert_eq!(
            served,
            app.get(path).await.text().await.unwrap(),
            "{path} without its document"
        );
    }
}
