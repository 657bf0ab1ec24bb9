//! A project's key cannot reach another project's data by any path.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use super::{ask, job, next_json, technology, wait_until, FOREIGN, OWN};
use crate::helpers::{assert_problem, spawn_app_with};

#[tokio::test]
async fn a_project_writer_cannot_reach_another_project_by_any_path() {
    let app = spawn_app_with(|args| args.no_workers = false).await;
    let writer_a = app.client_with(&app.key(Some(OWN), "writer").await);

    // Project B's data, made by a deployment-wide admin: a technology and a finished export.
    let tech_b = technology(&app, FOREIGN).await;
    let export_b = job(&app, FOREIGN, "export").await;
    assert_eq!(
        app.post(&format!("/api/v1/jobs/{export_b}/dispatch"), &json!({}))
            .await
            .status(),
        200
    );
    wait_until(Duration::from_secs(20), "the export finishes", || async {
        let job: Value = app
            .get(&format!("/api/v1/jobs/{export_b}"))
            .await
            .json()
            .await
            .unwrap();
        job["status"] == "completed"
    })
    .await;
    assert_eq!(
        app.get(&format!("/api/v1/jobs/{export_b}/artifact"))
            .await
            .status(),
        200,
        "the artifact exists"
    );
    // A's own technology, written by A's writer without naming a project.
    let response = writer_a
        .post(app.url("/api/v1/technologies"))
        .json(&json!({"title": "Ours"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let ours: Value = response.json().await.unwrap();
    assert_eq!(ours["project_id"], OWN);
    app.wait_caught_up().await;

    let get = |path: String| {
        let client = writer_a.clone();
        let url = app.url(&path);
        async move { client.get(url).send().await.unwrap() }
    };
    // Reads, history, artifact: 404, as if B's things did not exist.
    for path in [
        format!("/api/v1/technologies/{tech_b}"),
        format!("/api/v1/jobs/{export_b}"),
        format!("/api/v1/jobs/{export_b}/progress"),
        format!("/api/v1/jobs/{export_b}/artifact"),
    ] {
        assert_problem(get(path).await, 404, "").await;
    }
    // Lists and summaries are A's whatever project_id says.
    for path in [
        "/api/v1/technologies?project_id=2",
        "/api/v1/jobs?project_id=2",
        "/api/v1/jobs/active/list?project_id=2",
    ] {
        let body: Value = get(path.to_string()).await.json().await.unwrap();
        let text = body.to_string();
        assert!(
            !text.contains(&tech_b) && !text.contains(&export_b),
            "{path}: {text}"
        );
    }
    let technologies: Value = get("/api/v1/technologies?project_id=2".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        technologies["total"], 1,
        "only A's technology: {technologies}"
    );
    let stats: Value = get("/api/v1/dashboard/stats?project_id=2".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["project_id"], OWN, "{stats}");
    // Writes: 404, and nothing is written.
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let refused = [
        writer_a
            .patch(app.url(&format!("/api/v1/technologies/{tech_b}")))
            .json(&json!({"description": "mine now"})),
        writer_a.delete(app.url(&format!("/api/v1/technologies/{tech_b}"))),
        writer_a
            .post(app.url(&format!("/api/v1/jobs/{export_b}/cancel")))
            .json(&json!({})),
        writer_a
            .post(app.url("/api/v1/technologies"))
            .json(&json!({"project_id": FOREIGN, "title": "Planted"})),
        writer_a
            .post(app.url("/api/v1/jobs"))
            .json(&json!({"project_id": FOREIGN, "job_type": "noop"})),
        writer_a.post(app.url("/api/v1/jobs")).json(
            &json!({"job_type": "batch_export", "parameters": {"project_ids": [OWN, FOREIGN], "format": "json"}}),
        ),
    ];
    for request in refused {
        assert_problem(request.send().await.unwrap(), 404, "").await;
    }
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events_before, events_after);
    // History, the feed and verification need an auditor; A's auditor sees only A.
    assert_problem(
        get(format!("/api/v1/technologies/{tech_b}/history")).await,
        403,
        "",
    )
    .await;
    let auditor_a = app.client_with(&app.key(Some(OWN), "auditor").await);
    let history = auditor_a
        .get(app.url(&format!("/api/v1/technologies/{tech_b}/history")))
        .send()
        .await
        .unwrap();
    assert_problem(history, 404, "").await;
    let feed: Value = auditor_a
        .get(app.url("/api/v1/events?project_id=2&limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let feed_events = feed["events"].as_array().unwrap();
    assert!(!feed_events.is_empty());
    assert!(
        feed_events
            .iter()
            .all(|e| e["metadata"]["project_id"].as_str() == Some("1")),
        "feed leaks: {feed}"
    );
    let export = auditor_a
        .get(app.url("/api/v1/events?project_id=2"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!export.is_empty() && !export.contains(&tech_b) && !export.contains(&export_b));
    // Time travel is history too: a reader or writer may not, an auditor may (on A only).
    let ours_id = ours["id"].as_str().unwrap();
    assert_problem(
        get(format!("/api/v1/technologies/{ours_id}?as_of_version=1")).await,
        403,
        "",
    )
    .await;
    let travelled = auditor_a
        .get(app.url(&format!("/api/v1/technologies/{ours_id}?as_of_version=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(travelled.status(), 200);

    // Sockets: B's topics are unknown to A, and nothing of B is pushed to A.
    let url = app.ws_url("/api/v1/ws", &app.key(Some(OWN), "reader").await);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for topic in [
        format!("jobs:{FOREIGN}"),
        format!("technologies:{FOREIGN}"),
        format!("job:{export_b}"),
    ] {
        let reply = ask(&mut socket, json!({"subscribe": [topic]})).await;
        assert_eq!(reply["type"], "error", "{topic}: {reply}");
    }
    let reply = ask(
        &mut socket,
        json!({"subscribe": [format!("technologies:{OWN}")]}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed");
    let job_socket = app.ws_url(
        &format!("/api/v1/jobs/ws/{export_b}"),
        &app.key(Some(OWN), "reader").await,
    );
    match tokio_tungstenite::connect_async(job_socket).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("job socket of another project: {:?}", other.map(|_| ())),
    }
    // A change in B, then one in A: only A's arrives.
    app.patch(
        &format!("/api/v1/technologies/{tech_b}"),
        &json!({"description": "b"}),
    )
    .await;
    writer_a
        .patch(app.url(&format!("/api/v1/technologies/{ours_id}")))
        .json(&json!({"description": "a"}))
        .send()
        .await
        .unwrap();
    let pushed = next_json(&mut socket).await;
    assert_eq!(pushed["id"], ours_id, "{pushed}");
    app.stop().await;
}
