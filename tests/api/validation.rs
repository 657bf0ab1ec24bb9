//! Every validation rule reachable over HTTP answers with a problem document naming the
//! field, and writes nothing.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

fn technology(extra: Value) -> Value {
    let mut body = json!({"project_id": 1, "title": "Valid"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn invalid_technology_creates_name_the_field() {
    let app = spawn_app().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"title": "x"}), 422, "project_id"),
        (technology(json!({"project_id": 0})), 422, "project_id"),
        (technology(json!({"project_id": "one"})), 422, "project_id"),
        (json!({"project_id": 1}), 422, "title"),
        (technology(json!({"title": "   "})), 422, "title"),
        (technology(json!({"title": "t".repeat(256)})), 422, "title"),
        (technology(json!({"title": 5})), 422, "title"),
        (
            technology(json!({"vendor": "v".repeat(256)})),
            422,
            "vendor",
        ),
        (technology(json!({"domain": "cooking"})), 422, "domain"),
        (technology(json!({"status": "done"})), 422, "status"),
        (
            technology(json!({"relevance_score": 101})),
            422,
            "relevance_score",
        ),
        (
            technology(json!({"relevance_score": -1})),
            422,
            "relevance_score",
        ),
        (technology(json!({"priority": 0})), 422, "priority"),
        (technology(json!({"priority": 6})), 422, "priority"),
        (technology(json!({"priority": 2.5})), 422, "priority"),
        (
            technology(json!({"description": "d".repeat(20_001)})),
            422,
            "description",
        ),
        (
            technology(json!({"notes": "bad\u{0007}bell"})),
            422,
            "notes",
        ),
        (technology(json!({"use_cases": 3})), 422, "use_cases"),
        (
            technology(json!({"documentation_url": "ftp://x.org"})),
            422,
            "documentation_url",
        ),
        (
            technology(json!({"repository_url": "https://"})),
            422,
            "repository_url",
        ),
        (
            technology(json!({"website_url": format!("https://a.com/{}", "p".repeat(600))})),
            422,
            "website_url",
        ),
        (technology(json!({"tags": ["ok", ""]})), 422, "tags[1]"),
        (technology(json!({"tags": vec!["t"; 51]})), 422, "tags"),
        (technology(json!({"tags": 5})), 422, "tags"),
        (technology(json!({"latency_ms": -1})), 422, "latency_ms"),
        (
            technology(json!({"throughput_qps": -0.5})),
            422,
            "throughput_qps",
        ),
        (
            technology(json!({"integration_difficulty": "hard"})),
            422,
            "integration_difficulty",
        ),
        (
            technology(json!({"integration_time_estimate_days": -3})),
            422,
            "integration_time_estimate_days",
        ),
        (
            technology(json!({"maturity_level": "ancient"})),
            422,
            "maturity_level",
        ),
        (
            technology(json!({"stability_score": 200})),
            422,
            "stability_score",
        ),
        (technology(json!({"cost_tier": "cheap"})), 422, "cost_tier"),
        (
            technology(json!({"cost_monthly_usd": -10})),
            422,
            "cost_monthly_usd",
        ),
        (
            technology(json!({"dependencies": ["a"]})),
            422,
            "dependencies",
        ),
        // jsonb cannot store U+0000: refused up front, never a failed append.
        (
            technology(json!({"dependencies": {"lib": "a\u{0}b"}})),
            422,
            "dependencies.lib",
        ),
        (
            technology(json!({"dependencies": (0..101)
                .map(|i| (format!("lib{i}"), json!("requires")))
                .collect::<serde_json::Map<_, _>>()})),
            422,
            "dependencies",
        ),
        (
            technology(json!({"dependencies": {"lib": "x".repeat(17 * 1024)}})),
            422,
            "dependencies",
        ),
        (
            technology(json!({"dependencies": {"   ": "requires"}})),
            422,
            "dependencies.   ",
        ),
        (
            technology(json!({"dependencies": {
                "0190B6C2-0000-7000-8000-00000000000A": "requires",
                "0190b6c2-0000-7000-8000-00000000000a": "optional",
            }})),
            422,
            "dependencies.0190b6c2-0000-7000-8000-00000000000a",
        ),
        (
            technology(json!({"alternatives": ["nope"]})),
            422,
            "alternatives[0]",
        ),
        (technology(json!({"colour": "red"})), 422, "colour"),
    ];
    for (body, status, field) in cases {
        let response = app.post("/api/v1/technologies", &body).await;
        assert_problem(response, status, field).await;
    }
    assert!(
        app.stored_events().await.is_empty(),
        "no rejected request wrote anything"
    );
}

#[tokio::test]
async fn invalid_technology_updates_name_the_field() {
    let app = spawn_app().await;
    let created = app.create_technology("Target").await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/technologies/{id}");
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"title": null}), 422, "title"),
        (json!({"title": ""}), 422, "title"),
        (json!({"domain": null}), 422, "domain"),
        (json!({"status": "finished"}), 422, "status"),
        (json!({"status_reason": "why"}), 422, "status_reason"),
        (json!({"priority": 9}), 422, "priority"),
        (json!({"tags": null}), 422, "tags"),
        (json!({"website_url": "mailto:a@b.c"}), 422, "website_url"),
        (
            json!({"dependencies": {id: "requires"}}),
            422,
            "dependencies",
        ),
        (
            json!({"dependencies": {id.to_uppercase(): {"version": ">=1"}}}),
            422,
            "dependencies",
        ),
        (json!({"alternatives": [id]}), 422, "alternatives"),
        (json!({"id": "other"}), 422, "id"),
    ];
    for (body, status, field) in cases {
        assert_problem(app.patch(&path, &body).await, status, field).await;
    }
    assert_eq!(app.stored_events().await.len(), 1);
}

#[tokio::test]
async fn invalid_job_commands_name_the_field() {
    let app = spawn_app().await;
    let creates: Vec<(Value, &str)> = vec![
        (json!({"job_type": "noop"}), "project_id"),
        (json!({"project_id": 1}), "job_type"),
        (json!({"project_id": 1, "job_type": "mining"}), "job_type"),
        (
            json!({"project_id": 1, "job_type": "analysis", "parameters": [1, 2]}),
            "parameters",
        ),
        (
            json!({"project_id": 1, "job_type": "noop", "parameters": {"steps": 0}}),
            "parameters.steps",
        ),
        (
            json!({"project_id": 1, "job_type": "noop", "parameters": {"step_ms": 999_999}}),
            "parameters.step_ms",
        ),
        (
            json!({"project_id": 1, "job_type": "noop", "parameters": {"sleep": 1}}),
            "parameters.sleep",
        ),
        (
            json!({"project_id": 1, "job_type": "noop", "max_attempts": 0}),
            "max_attempts",
        ),
        (
            json!({"project_id": 1, "job_type": "noop", "max_attempts": 21}),
            "max_attempts",
        ),
        (
            json!({"project_id": 1, "job_type": "noop", "tags": [""]}),
            "tags[0]",
        ),
        (
            json!({"project_id": 1, "job_type": "noop", "created_by": "c".repeat(256)}),
            "created_by",
        ),
    ];
    for (body, field) in creates {
        assert_problem(app.post("/api/v1/jobs", &body).await, 422, field).await;
    }
    let job = app.create_job().await;
    let path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    let patches: Vec<(Value, &str)> = vec![
        (json!({"progress": 101}), "progress"),
        (json!({"progress": -1}), "progress"),
        (json!({"status": "paused"}), "status"),
        (json!({"result": {"x": 1}}), "result"),
        (json!({"error": "boom"}), "error"),
        (json!({"current_step": ""}), "current_step"),
        (json!({"worker": "w"}), "worker"),
    ];
    for (body, field) in patches {
        assert_problem(app.patch(&path, &body).await, 422, field).await;
    }
    for query in [
        "delay_seconds=3601",
        "delay_seconds=abc",
        "delay_seconds=-1",
    ] {
        let response = app
            .post(&format!("{path}/dispatch?{query}"), &json!({}))
            .await;
        assert_problem(response, 422, "delay_seconds").await;
    }
    assert_problem(
        app.post(&format!("{path}/cancel"), &json!({"reason": 5}))
            .await,
        422,
        "reason",
    )
    .await;
    assert_eq!(app.stored_events().await.len(), 1);
    let unknown = format!("/api/v1/jobs/{}", uuid::Uuid::now_v7());
    assert_problem(app.patch(&unknown, &json!({"progress": 1})).await, 404, "").await;
    assert_problem(
        app.post(&format!("{unknown}/dispatch"), &json!({})).await,
        404,
        "",
    )
    .await;
    assert_problem(
        app.post(&format!("{unknown}/cancel"), &json!({})).await,
        404,
        "",
    )
    .await;
    assert_problem(app.delete(&unknown).await, 404, "").await;
    assert_problem(app.get(&format!("{unknown}/history")).await, 404, "").await;
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies_are_refused() {
    let app = spawn_app().await;
    let send = |body: Vec<u8>, content_type: &'static str| {
        app.client
            .post(app.url("/api/v1/technologies"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_problem(
        send(b"{\"project_id\": 1,".to_vec(), "application/json")
            .await
            .unwrap(),
        400,
        "body",
    )
    .await;
    assert_problem(
        send(b"{} trailing".to_vec(), "application/json")
            .await
            .unwrap(),
        400,
        "body",
    )
    .await;
    assert_problem(
        send(b"title=x".to_vec(), "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
        "body",
    )
    .await;
    // The test service limits bodies to 64 KiB.
    let huge = format!(
        "{{\"project_id\": 1, \"title\": \"big\", \"notes\": \"{}\"}}",
        "n".repeat(100_000)
    );
    assert_problem(
        send(huge.into_bytes(), "application/json").await.unwrap(),
        413,
        "body",
    )
    .await;
    assert!(app.stored_events().await.is_empty());
}

#[tokio::test]
async fn feed_parameters_are_checked() {
    let app = spawn_app().await;
    assert_problem(app.get("/api/v1/events?after=nothex").await, 400, "after").await;
    assert_problem(app.get("/api/v1/events?limit=0").await, 400, "limit").await;
    assert_problem(app.get("/api/v1/events?limit=1001").await, 400, "limit").await;
    assert_problem(
        app.get("/api/v1/events?wait_ms=999999").await,
        400,
        "wait_ms",
    )
    .await;
    assert_eq!(app.get("/api/v1/events").await.status(), 200);
}
