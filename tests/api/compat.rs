//! The previous API's clients (`../shared/SEED-API.md`): their calls on the routes we
//! share, in their forms, and the fields they read. Each test replays one part of that
//! contract; the deliberate differences are listed in the README ("Coming from the
//! previous API").

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, TestApp};

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "{}", response.url());
    response.json().await.expect("json body")
}

/// The collection paths as the previous API spelled them, with a trailing slash, answer
/// like the slash-less ones (no redirect).
#[tokio::test]
async fn collection_paths_with_a_trailing_slash_answer() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let created = app
        .post(
            "/api/v1/technologies/",
            &json!({"project_id": 1, "title": "Slashed"}),
        )
        .await;
    let created = json_of(created, 201).await;
    app.wait_caught_up().await;
    let list = json_of(app.get("/api/v1/technologies/?project_id=1").await, 200).await;
    assert_eq!(list["items"][0]["id"], created["id"]);
    let projects = json_of(app.get("/api/v1/projects/").await, 200).await;
    assert!(projects["projects"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    // Without a key it is the same 401 as without the slash, never a redirect.
    let anonymous = client
        .get(app.url("/api/v1/technologies/"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// POSTs `body` to `path` with `X-Project-ID: project`, as `client`.
async fn post_in(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    project: &str,
    body: Value,
) -> reqwest::Response {
    client
        .post(app.url(path))
        .header("X-Project-ID", project)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `X-Project-ID` names the project of a create when the body does not; it must agree
/// with the body and with the key.
#[tokio::test]
async fn x_project_id_names_the_project_of_a_create() {
    let app = spawn_app().await;
    let created = post_in(
        &app,
        &app.client,
        "/api/v1/technologies",
        "2",
        json!({"title": "From the header"}),
    )
    .await;
    assert_eq!(json_of(created, 201).await["project_id"], 2);
    let job = post_in(
        &app,
        &app.client,
        "/api/v1/jobs",
        "2",
        json!({"job_type": "noop"}),
    )
    .await;
    assert_eq!(json_of(job, 201).await["project_id"], 2);
    let disagreeing = post_in(
        &app,
        &app.client,
        "/api/v1/technologies",
        "2",
        json!({"project_id": 1, "title": "Two projects"}),
    )
    .await;
    assert_problem(disagreeing, 422, "X-Project-ID").await;
    let malformed = post_in(
        &app,
        &app.client,
        "/api/v1/technologies",
        "-1",
        json!({"title": "Malformed header"}),
    )
    .await;
    assert_problem(malformed, 400, "X-Project-ID").await;
    // A project key cannot write elsewhere through the header.
    let writer = app.key(Some(1), "writer").await;
    let elsewhere = post_in(
        &app,
        &app.client_with(&writer),
        "/api/v1/technologies",
        "2",
        json!({"title": "Not my project"}),
    )
    .await;
    assert!(
        [403, 404, 422].contains(&elsewhere.status().as_u16()),
        "{}",
        elsewhere.status()
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE payload::text LIKE '%Not my project%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

/// `tags` and `alternatives` as comma-separated strings (stored and answered as arrays),
/// an integer `throughput_qps`, and `dependencies` as any JSON object.
#[tokio::test]
async fn technology_fields_in_the_previous_forms_are_converted() {
    let app = spawn_app().await;
    let other = app.create_technology("Alternative").await;
    let other_id = other["id"].as_str().unwrap();
    let created = app
        .post(
            "/api/v1/technologies",
            &json!({
                "project_id": 1,
                "title": "Comma forms",
                "tags": "audio, dsp,,realtime ",
                "alternatives": other_id,
                "throughput_qps": 1200,
                "dependencies": {
                    "numpy": ">=1.20",
                    "juce": {"version": 7, "optional": true, "modules": ["audio", null]},
                    other_id.to_uppercase(): "requires",
                },
            }),
        )
        .await;
    let created = json_of(created, 201).await;
    let dependencies = json!({
        "numpy": ">=1.20",
        "juce": {"version": 7, "optional": true, "modules": ["audio", null]},
        other_id: "requires",
    });
    assert_eq!(created["dependencies"], dependencies);
    assert_eq!(created["tags"], json!(["audio", "dsp", "realtime"]));
    assert_eq!(created["alternatives"], json!([other_id]));
    assert_eq!(created["throughput_qps"], json!(1200.0));
    let id = created["id"].as_str().unwrap();
    let patched = app
        .patch(
            &format!("/api/v1/technologies/{id}"),
            &json!({"tags": "vst3"}),
        )
        .await;
    assert_eq!(json_of(patched, 200).await["tags"], json!(["vst3"]));
    app.wait_caught_up().await;
    let read = json_of(app.get(&format!("/api/v1/technologies/{id}")).await, 200).await;
    assert_eq!(read["tags"], json!(["vst3"]));
    assert_eq!(read["alternatives"], json!([other_id]));
    assert_eq!(read["dependencies"], dependencies);
    let cleared = app
        .patch(
            &format!("/api/v1/technologies/{id}"),
            &json!({"dependencies": {"tokio": 1}}),
        )
        .await;
    assert_eq!(
        json_of(cleared, 200).await["dependencies"],
        json!({"tokio": 1})
    );
    let emptied = app
        .patch(
            &format!("/api/v1/technologies/{id}"),
            &json!({"dependencies": null}),
        )
        .await;
    assert_eq!(json_of(emptied, 200).await["dependencies"], json!({}));
    // A number where a list is expected is still refused, naming the field.
    let wrong = app
        .post(
            "/api/v1/technologies",
            &json!({"project_id": 1, "title": "Wrong tags", "tags": 5}),
        )
        .await;
    assert!(wrong.status().is_client_error());
}

/// Jobs: `created_by` as an integer, `tags` as an object; every job answer carries the
/// lifecycle times and `duration_seconds`; `/progress` and the summary carry the previous
/// API's fields; `/active/list` lists every active job when no page is asked for.
#[tokio::test]
async fn jobs_take_and_answer_the_previous_fields() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/api/v1/jobs",
            &json!({
                "project_id": 1,
                "job_type": "noop",
                "created_by": 42,
                "tags": {"team": "audio", "nightly": true},
            }),
        )
        .await;
    let created = json_of(created, 201).await;
    assert_eq!(created["created_by"], "42");
    assert_eq!(created["tags"], json!(["nightly:true", "team:audio"]));
    for field in [
        "created_at",
        "started_at",
        "completed_at",
        "duration_seconds",
    ] {
        assert!(created.get(field).is_some(), "{field} in {created}");
    }
    assert!(created["created_at"].is_string());
    assert!(created["duration_seconds"].is_null());
    let id = created["id"].as_str().unwrap();
    let dispatched = app
        .post(&format!("/api/v1/jobs/{id}/dispatch"), &json!({}))
        .await;
    let dispatched = json_of(dispatched, 200).await;
    assert!(dispatched.get("duration_seconds").is_some());
    app.wait_caught_up().await;

    let progress = json_of(app.get(&format!("/api/v1/jobs/{id}/progress")).await, 200).await;
    for field in [
        "job_id",
        "status",
        "progress",
        "current_step",
        "is_terminal",
        "is_active",
        "created_at",
        "started_at",
        "completed_at",
        "duration_seconds",
    ] {
        assert!(progress.get(field).is_some(), "{field} in {progress}");
    }
    assert_eq!(progress["is_active"], progress["status"] == "pending");

    // 105 pending jobs: more than one default page, all in the unpaged active list.
    for _ in 0..105 {
        app.create_job().await;
    }
    app.wait_caught_up().await;
    let active = json_of(app.get("/api/v1/jobs/active/list?project_id=1").await, 200).await;
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_view WHERE project_id = 1 AND status IN ('pending', 'running')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(active["jobs"].as_array().unwrap().len() as i64, pending);
    assert_eq!(
        active["limit"], pending,
        "unpaged: limit is the number of jobs"
    );
    assert!(pending > 100);
    assert!(active["next_cursor"].is_null());
    // A page when asked for one.
    let paged = json_of(
        app.get("/api/v1/jobs/active/list?project_id=1&limit=10")
            .await,
        200,
    )
    .await;
    assert_eq!(paged["jobs"].as_array().unwrap().len(), 10);

    let summary = json_of(
        app.get("/api/v1/jobs/statistics/summary?project_id=1")
            .await,
        200,
    )
    .await;
    assert_eq!(summary["active_jobs"], pending);
    assert!(summary.get("success_rate").is_some());
}

/// The dashboard's `high_priority` technologies and `recent-activity`.
#[tokio::test]
async fn the_dashboard_lists_high_priority_and_recent_technologies() {
    let app = spawn_app().await;
    for (title, priority) in [("Low", 2), ("High", 4), ("Highest", 5)] {
        let response = app
            .post(
                "/api/v1/technologies",
                &json!({"project_id": 1, "title": title, "priority": priority}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    let job = app.create_job().await;
    app.wait_caught_up().await;
    let stats = json_of(app.get("/api/v1/dashboard/stats?project_id=1").await, 200).await;
    let high: Vec<&str> = stats["technologies"]["high_priority"]
        .as_array()
        .expect("high_priority")
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(high, ["Highest", "High"]);

    let recent = json_of(
        app.get("/api/v1/dashboard/recent-activity?project_id=1&limit=2")
            .await,
        200,
    )
    .await;
    let titles: Vec<&str> = recent["recent_technologies"]
        .as_array()
        .expect("recent_technologies")
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Highest", "High"], "most recently changed first");
    for t in recent["recent_technologies"].as_array().unwrap() {
        for field in ["id", "title", "status", "updated_at"] {
            assert!(t.get(field).is_some(), "{field} in {t}");
        }
    }
    assert_eq!(recent["recent_jobs"][0]["id"], job["id"]);
    let bad = app
        .get("/api/v1/dashboard/recent-activity?limit=1000")
        .await;
    assert_problem(bad, 400, "limit").await;
}

/// `/health` answers as `/health/ready`; unknown routes and methods answer problem
/// documents like every other error.
#[tokio::test]
async fn health_and_unknown_routes_answer_like_the_rest() {
    let app: TestApp = spawn_app().await;
    app.wait_caught_up().await;
    let health = reqwest::get(app.url("/health")).await.unwrap();
    let ready = reqwest::get(app.url("/health/ready")).await.unwrap();
    assert_eq!(health.status(), ready.status());
    let health: Value = health.json().await.unwrap();
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(health["status"], ready["status"]);

    let unknown = app.get("/api/v1/no-such-route").await;
    assert_problem(unknown, 404, "").await;
    let wrong = app
        .client
        .put(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 405, "").await;
}

/// The job socket sends, besides `connected`, `progress` and `completed`, the previous
/// API's broadcasts: `job_update` on every change, `job_dispatched` and `job_cancelled`.
#[tokio::test]
async fn the_job_socket_sends_the_previous_broadcasts() {
    use crate::websockets::{connect, next_json};
    let app = spawn_app().await;
    let job = app.create_job().await;
    let id = job["id"].as_str().unwrap().to_string();
    app.wait_caught_up().await;
    let mut socket = connect(&app, &format!("/api/v1/jobs/ws/{id}")).await;
    assert_eq!(next_json(&mut socket).await.unwrap()["type"], "connected");
    let dispatched = app
        .post(&format!("/api/v1/jobs/{id}/dispatch"), &json!({}))
        .await;
    assert_eq!(dispatched.status(), 200);
    let cancelled = app
        .post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status(), 200);
    let mut types = Vec::new();
    while let Some(message) = next_json(&mut socket).await {
        let kind = message["type"].as_str().unwrap().to_string();
        if kind == "job_update" {
            assert_eq!(message["job"]["id"], id.as_str(), "{message}");
        }
        if kind == "job_dispatched" {
            assert!(message["dispatched_at"].is_string(), "{message}");
        }
        types.push(kind);
    }
    // Each change is `progress` then `job_update`, with `job_dispatched` and
    // `job_cancelled` once each, in that order (the two changes may reach the socket as
    // one, when the projector applied them in one batch); `completed` ends it.
    let count = |kind: &str| types.iter().filter(|t| *t == kind).count();
    assert_eq!(count("job_dispatched"), 1, "{types:?}");
    assert_eq!(count("job_cancelled"), 1, "{types:?}");
    assert_eq!(count("progress"), count("job_update"), "{types:?}");
    let at = |kind: &str| types.iter().position(|t| t == kind).unwrap();
    assert!(at("job_dispatched") < at("job_cancelled"), "{types:?}");
    assert_eq!(
        types.first().map(String::as_str),
        Some("progress"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("completed"),
        "{types:?}"
    );
    for (i, kind) in types.iter().enumerate() {
        if kind == "progress" {
            assert_eq!(types[i + 1], "job_update", "{types:?}");
        }
    }
}

/// A client that `PATCH`es back a whole object it read is not refused: the read-only
/// fields are ignored when they match; a changed identity field is a 422 naming it, and
/// a stale `version` is a 412 as with `If-Match`. Fields nobody knows stay a 422.
#[tokio::test]
async fn a_technology_read_and_patched_back_whole_is_accepted() {
    let app = spawn_app().await;
    let created = app.create_technology("Round trip").await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/technologies/{id}");
    app.wait_caught_up().await;
    let mut read = json_of(app.get(&path).await, 200).await;
    read["title"] = json!("Round trip, edited");
    let patched = json_of(app.patch(&path, &read).await, 200).await;
    assert_eq!(patched["title"], "Round trip, edited");
    assert_eq!(patched["version"], 2);

    // The same object again: its version (1) is stale now.
    read["title"] = json!("Lost update");
    assert_problem(app.patch(&path, &read).await, 412, "If-Match").await;
    read["version"] = json!(2);
    read["created_at"] = json!("2001-01-01T00:00:00Z");
    assert_problem(app.patch(&path, &read).await, 422, "created_at").await;
    read["created_at"] = created["created_at"].clone();
    read["id"] = json!(uuid::Uuid::now_v7().to_string());
    assert_problem(app.patch(&path, &read).await, 422, "id").await;
    read["id"] = json!(id);
    read["project_id"] = json!(2);
    assert_problem(app.patch(&path, &read).await, 422, "project_id").await;
    read["project_id"] = json!(1);
    read["nobody_knows"] = json!(true);
    assert_problem(app.patch(&path, &read).await, 422, "nobody_knows").await;
    read.as_object_mut().unwrap().remove("nobody_knows");
    // Nothing refused was written: the title is the first edit's.
    let now = json_of(app.patch(&path, &json!({"priority": 5})).await, 200).await;
    assert_eq!(now["title"], "Round trip, edited");
    assert_eq!(now["version"], 3);
}

/// A job read and `PATCH`ed back whole, as the previous API's clients update jobs: the
/// fields it cannot change are accepted as read (and refused, named, when changed), the
/// others apply only where they differ, and its `version` is checked like `If-Match`.
#[tokio::test]
async fn a_job_read_and_patched_back_whole_is_accepted() {
    let app = spawn_app().await;
    let created = json_of(
        app.post(
            "/api/v1/jobs",
            &json!({"project_id": 1, "job_type": "noop", "tags": {"team": "audio"}, "created_by": 7}),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/jobs/{id}");
    app.wait_caught_up().await;

    // Pending, sent back untouched: nothing changes, nothing is written.
    let read = json_of(app.get(&path).await, 200).await;
    let same = json_of(app.patch(&path, &read).await, 200).await;
    assert_eq!(same["version"], 1);
    assert_eq!(same["status"], "pending");

    json_of(app.post(&format!("{path}/dispatch"), &json!({})).await, 200).await;
    app.wait_caught_up().await;
    let mut read = json_of(app.get(&path).await, 200).await;
    read["status"] = json!("running");
    read["progress"] = json!(30);
    read["current_step"] = json!("loading");
    let running = json_of(app.patch(&path, &read).await, 200).await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["progress"], 30);
    assert_eq!(running["worker_id"], "external");

    // The same object again: its version is stale now.
    assert_problem(app.patch(&path, &read).await, 412, "If-Match").await;
    app.wait_caught_up().await;
    let mut read = json_of(app.get(&path).await, 200).await;
    for (field, changed) in [
        ("job_type", json!("export")),
        ("project_id", json!(2)),
        ("created_by", json!("someone else")),
        ("tags", json!(["team:video"])),
        ("parameters", json!({"steps": 99})),
        ("max_attempts", json!(9)),
        ("created_at", json!("2001-01-01T00:00:00Z")),
        ("id", json!(uuid::Uuid::now_v7().to_string())),
    ] {
        let mut sent = read.clone();
        sent[field] = changed;
        assert_problem(app.patch(&path, &sent).await, 422, field).await;
    }
    read["nobody_knows"] = json!(1);
    assert_problem(app.patch(&path, &read).await, 422, "nobody_knows").await;
    read.as_object_mut().unwrap().remove("nobody_knows");

    read["status"] = json!("completed");
    read["progress"] = json!(100);
    read["result"] = json!({"rows": 3});
    let done = json_of(app.patch(&path, &read).await, 200).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], json!({"rows": 3}));
    app.wait_caught_up().await;
    let mut read = json_of(app.get(&path).await, 200).await;
    let version = read["version"].clone();
    assert_eq!(
        json_of(app.patch(&path, &read).await, 200).await["version"],
        version,
        "a finished job sent back as read is left as it is"
    );
    read["result"] = json!({"rows": 4});
    assert_problem(app.patch(&path, &read).await, 409, "").await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        Some(events),
        version.as_i64(),
        "nothing refused was written"
    );
}

/// `search` finds substrings of title, description and tags, case-insensitive, as the
/// previous API's ILIKE did, and a trigram index serves it.
#[tokio::test]
async fn search_finds_substrings_and_is_index_backed() {
    let app = spawn_app().await;
    for body in [
        json!({"project_id": 1, "title": "Newcomer"}),
        json!({"project_id": 1, "title": "JUCE"}),
        json!({"project_id": 1, "title": "Faust", "description": "Realtime DSP language"}),
        json!({"project_id": 1, "title": "Plugin host", "tags": ["vst3", "clap"]}),
        json!({"project_id": 1, "title": "100% pure"}),
    ] {
        assert_eq!(app.post("/api/v1/technologies", &body).await.status(), 201);
    }
    app.wait_caught_up().await;
    for (search, expected) in [
        ("Newc", vec!["Newcomer"]),
        ("uce", vec!["JUCE"]),
        ("REALT", vec!["Faust"]),
        ("vst", vec!["Plugin host"]),
        ("0%", vec!["100% pure"]),
        ("_", vec![]),
    ] {
        let page = json_of(
            app.client
                .get(app.url("/api/v1/technologies"))
                .query(&[("project_id", "1"), ("search", search)])
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        let titles: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, expected, "search={search}");
        assert_eq!(page["total"], expected.len(), "search={search}");
    }
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM technology_view t \
          WHERE t.search_text LIKE lower('%juce%')",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(
        plan.iter()
            .any(|line| line.contains("technology_view_search_text_idx")),
        "{plan:#?}"
    );
}

/// The default order is the previous API's — priority, then relevance score, then
/// `updated_at`, all descending — with cursor paging, and an index serves it.
#[tokio::test]
async fn the_default_order_is_priority_relevance_then_recency() {
    let app = spawn_app().await;
    for (i, (priority, relevance)) in [(3, 50), (5, 10), (5, 90), (3, 50), (1, 100), (5, 90)]
        .into_iter()
        .enumerate()
    {
        let body = json!({"project_id": 1, "title": format!("Ordered {i}"), "priority": priority, "relevance_score": relevance});
        assert_eq!(app.post("/api/v1/technologies", &body).await.status(), 201);
    }
    app.wait_caught_up().await;
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM technology_view WHERE project_id = 1 \
          ORDER BY priority DESC, relevance_score DESC, updated_at DESC, id DESC",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut walked = Vec::new();
    let mut path = "/api/v1/technologies?project_id=1&limit=2".to_string();
    loop {
        let page = json_of(app.get(&path).await, 200).await;
        walked.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/v1/technologies?project_id=1&limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(walked, expected);
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM technology_view t WHERE t.project_id = 1 \
          ORDER BY cc_importance(t.priority, t.relevance_score, t.updated_at) DESC, t.id DESC LIMIT 3",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|line| line.contains("importance_idx")),
        "{plan:#?}"
    );
    drop(tx);

    // Inlined (migration 0017): no call through the SQL-function executor per row.
    let verbose: Vec<String> = sqlx::query_scalar(
        "EXPLAIN VERBOSE SELECT cc_importance(t.priority, t.relevance_score, t.updated_at)            FROM technology_view t",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        !verbose.iter().any(|line| line.contains("cc_importance(")),
        "{verbose:#?}"
    );
    // The same text as migration 0011's `extract(epoch FROM updated_at)` form, before,
    // at and after the epoch, at microsecond edges and in any offset.
    let differing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (VALUES ('1969-12-31 23:59:59.999999+00'::timestamptz),               ('1970-01-01 00:00:00+00'), ('1900-01-01 00:00:00.5+00'),               ('2262-04-11 23:47:16.854775+00'), ('2026-11-30 12:00:00.000001+05:30'),               ('2000-02-29 23:59:59.999999-11:00')) AS v(at)           WHERE cc_importance(3::smallint, 7::smallint, at) IS DISTINCT FROM                 '3' || lpad('7', 3, '0')                 || lpad(floor(extract(epoch FROM at) * 1000000)::bigint::text, 17, '0')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(differing, 0);
}

/// One timestamp format everywhere: a write answers its times exactly as the read models
/// answer them afterwards (RFC 3339, offset `+00:00`, microseconds without trailing zeros).
#[tokio::test]
async fn writes_and_reads_answer_the_same_timestamps() {
    let app = spawn_app().await;
    let technology = app.create_technology("Timestamps").await;
    let job = app.create_job().await;
    let job_id = job["id"].as_str().unwrap();
    let dispatched = json_of(
        app.post(&format!("/api/v1/jobs/{job_id}/dispatch"), &json!({}))
            .await,
        200,
    )
    .await;
    app.wait_caught_up().await;
    let read = json_of(
        app.get(&format!(
            "/api/v1/technologies/{}",
            technology["id"].as_str().unwrap()
        ))
        .await,
        200,
    )
    .await;
    for field in ["created_at", "updated_at"] {
        assert_eq!(technology[field], read[field], "{field}");
        assert!(read[field].as_str().unwrap().ends_with("+00:00"), "{read}");
    }
    let read = json_of(app.get(&format!("/api/v1/jobs/{job_id}")).await, 200).await;
    for field in ["created_at", "updated_at", "dispatched_at", "scheduled_for"] {
        assert_eq!(dispatched[field], read[field], "{field}");
    }
    // The auditors' and administrators' answers use the same form.
    let mut times = Vec::new();
    for (path, list, field) in [
        (
            "/api/v1/events?limit=10".to_string(),
            "events",
            "recorded_at",
        ),
        (
            format!("/api/v1/jobs/{job_id}/history"),
            "events",
            "recorded_at",
        ),
        ("/api/v1/projects".to_string(), "projects", "created_at"),
    ] {
        let answer = json_of(app.get(&path).await, 200).await;
        times.extend(
            answer[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e[field].clone()),
        );
    }
    let key = json_of(
        app.post(
            "/api/v1/keys",
            &json!({"name": "times", "role": "reader", "project_id": 1, "expires_at": "1h"}),
        )
        .await,
        201,
    )
    .await;
    let keys = json_of(app.get("/api/v1/keys").await, 200).await;
    let listed = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key["id"])
        .unwrap();
    times.extend([listed["created_at"].clone(), listed["expires_at"].clone()]);
    assert!(times.len() >= 6, "{times:?}");
    for time in &times {
        let text = time.as_str().unwrap_or_default();
        assert!(
            text.ends_with("+00:00") && chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            "{time} in the one format"
        );
    }
}

/// The four technology fields the previous API had: written, read back from the read
/// model, cleared with `null`, and refused naming the field when out of range.
#[tokio::test]
async fn the_previous_technology_fields_are_kept() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/api/v1/technologies",
            &json!({
                "project_id": 1,
                "title": "Signals",
                "last_hn_mention": "2026-11-01T10:00:00+02:00",
                "hn_score_avg": 41.5,
                "github_stars": 1234,
                "github_last_commit": "2026-11-29T23:59:59.5Z",
            }),
        )
        .await;
    let created = json_of(created, 201).await;
    assert_eq!(created["last_hn_mention"], "2026-11-01T08:00:00+00:00");
    assert_eq!(created["github_last_commit"], "2026-11-29T23:59:59.5+00:00");
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/technologies/{id}");
    app.wait_caught_up().await;
    let read = json_of(app.get(&path).await, 200).await;
    for field in [
        "last_hn_mention",
        "hn_score_avg",
        "github_stars",
        "github_last_commit",
    ] {
        assert_eq!(read[field], created[field], "{field}");
    }
    assert_eq!(read["github_stars"], 1234);
    let cleared = json_of(
        app.patch(&path, &json!({"github_stars": null, "hn_score_avg": 7}))
            .await,
        200,
    )
    .await;
    assert!(cleared["github_stars"].is_null());
    assert_eq!(cleared["hn_score_avg"], json!(7.0));
    // The largest count the write side takes reaches the read model too.
    let most = json_of(
        app.patch(&path, &json!({"github_stars": 4294967295_u64}))
            .await,
        200,
    )
    .await;
    app.wait_caught_up().await;
    let read = json_of(app.get(&path).await, 200).await;
    assert_eq!(read["github_stars"], 4294967295_u64);
    assert_eq!(read["version"], most["version"]);
    for (body, field) in [
        (json!({"github_stars": -1}), "github_stars"),
        (json!({"hn_score_avg": -0.5}), "hn_score_avg"),
        (json!({"last_hn_mention": "yesterday"}), "last_hn_mention"),
    ] {
        assert_problem(app.patch(&path, &body).await, 422, field).await;
    }
}
