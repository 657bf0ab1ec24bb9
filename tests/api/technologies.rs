//! The technology commands over HTTP: shapes, versions, positions, status rules.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn create_returns_the_technology_with_version_and_position() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/api/v1/technologies",
            &json!({
                "project_id": 7,
                "title": "  Web Audio API ",
                "vendor": "W3C",
                "domain": "audio-dsp",
                "tags": ["browser", "browser", "dsp"],
                "latency_ms": 5.5,
                "documentation_url": "https://webaudio.github.io/web-audio-api/",
                "dependencies": {"0190b6c2-0000-7000-8000-00000000000A": "requires"},
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let position = response.headers()["x-cc-position"]
        .to_str()
        .unwrap()
        .to_string();
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    assert_eq!(etag, "\"1\"");
    assert_eq!(body["version"], 1);
    assert_eq!(body["position"], position.as_str());
    assert_eq!(position.len(), 32);
    assert_eq!(
        location,
        format!("/api/v1/technologies/{}", body["id"].as_str().unwrap())
    );
    assert_eq!(body["title"], "Web Audio API");
    assert_eq!(body["project_id"], 7);
    assert_eq!(body["status"], "discovery");
    assert_eq!(body["relevance_score"], 50);
    assert_eq!(body["priority"], 3);
    assert_eq!(body["tags"], json!(["browser", "dsp"]));
    assert_eq!(
        body["dependencies"],
        json!({"0190b6c2-0000-7000-8000-00000000000a": "requires"})
    );
    let history: Value = app
        .get(&format!(
            "/api/v1/technologies/{}/history",
            body["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "TechnologyCreated");
    assert_eq!(events[0]["metadata"]["project_id"], "7");
    assert_eq!(events[0]["position"], position.as_str());
}

#[tokio::test]
async fn update_records_only_what_changed_and_no_op_records_nothing() {
    let app = spawn_app().await;
    let created = app.create_technology("JUCE").await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/technologies/{id}");

    let response = app
        .patch(
            &path,
            &json!({"title": "JUCE", "priority": 5, "vendor": "Raw Material"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["priority"], 5);
    assert_eq!(updated["vendor"], "Raw Material");

    let again = app
        .patch(&path, &json!({"priority": 5, "vendor": "Raw Material"}))
        .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["version"], 2, "a no-op update appends nothing");
    assert_eq!(again["position"], updated["position"]);

    let cleared: Value = app
        .patch(&path, &json!({"vendor": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["vendor"], Value::Null);
    assert_eq!(cleared["version"], 3);

    let history: Value = app
        .get(&format!("{path}/history"))
        .await
        .json()
        .await
        .unwrap();
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[1]["payload"]["TechnologyUpdated"]["changes"],
        json!({"priority": 5, "vendor": "Raw Material"})
    );
    assert_eq!(
        events[2]["payload"]["TechnologyUpdated"]["changes"],
        json!({"vendor": null})
    );
}

#[tokio::test]
async fn status_change_carries_its_reason_and_archived_is_read_only() {
    let app = spawn_app().await;
    let created = app.create_technology("Faust").await;
    let path = format!("/api/v1/technologies/{}", created["id"].as_str().unwrap());

    let archived = app
        .patch(
            &path,
            &json!({"status": "archived", "status_reason": "superseded"}),
        )
        .await;
    assert_eq!(archived.status(), 200);
    let problem = assert_problem(app.patch(&path, &json!({"notes": "x"})).await, 409, "").await;
    assert!(problem["detail"].as_str().unwrap().contains("archived"));

    let revived = app
        .patch(&path, &json!({"status": "research", "notes": "back"}))
        .await;
    assert_eq!(revived.status(), 200);
    let history: Value = app
        .get(&format!("{path}/history"))
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "TechnologyCreated",
            "TechnologyStatusChanged",
            "TechnologyStatusChanged",
            "TechnologyUpdated"
        ]
    );
    assert_eq!(
        history["events"][1]["payload"]["TechnologyStatusChanged"]["reason"],
        "superseded"
    );
}

#[tokio::test]
async fn deleted_technology_is_gone_and_frees_its_title() {
    let app = spawn_app().await;
    let created = app.create_technology("SuperCollider").await;
    let path = format!("/api/v1/technologies/{}", created["id"].as_str().unwrap());

    let deleted = app.delete(&path).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(deleted.headers()["etag"], "\"2\"");
    assert!(deleted.headers().contains_key("x-cc-position"));

    assert_problem(app.patch(&path, &json!({"notes": "x"})).await, 404, "").await;
    assert_problem(app.delete(&path).await, 404, "").await;
    // History outlives deletion, for auditors.
    assert_eq!(app.get(&format!("{path}/history")).await.status(), 200);
    // The title is free again.
    app.create_technology("supercollider").await;
}

#[tokio::test]
async fn renaming_moves_the_title_claim() {
    let app = spawn_app().await;
    let a = app.create_technology("Alpha").await;
    let b = app.create_technology("Beta").await;
    let a_path = format!("/api/v1/technologies/{}", a["id"].as_str().unwrap());
    let b_path = format!("/api/v1/technologies/{}", b["id"].as_str().unwrap());

    assert_problem(
        app.patch(&b_path, &json!({"title": "ALPHA"})).await,
        409,
        "title",
    )
    .await;
    assert_eq!(
        app.patch(&a_path, &json!({"title": "Gamma"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.patch(&b_path, &json!({"title": "alpha"}))
            .await
            .status(),
        200
    );
    // Titles are unique per project only.
    let other_project = app
        .post(
            "/api/v1/technologies",
            &json!({"project_id": 2, "title": "Gamma"}),
        )
        .await;
    assert_eq!(other_project.status(), 201);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    assert_problem(
        app.patch(
            &format!("/api/v1/technologies/{id}"),
            &json!({"notes": "x"}),
        )
        .await,
        404,
        "",
    )
    .await;
    assert_problem(
        app.delete(&format!("/api/v1/technologies/{id}")).await,
        404,
        "",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/technologies/{id}/history")).await,
        404,
        "",
    )
    .await;
    assert_problem(
        app.delete(&format!("/api/v1/technologies/{}", "x".repeat(500)))
            .await,
        404,
        "",
    )
    .await;
}
