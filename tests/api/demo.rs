//! `serve --demo` seeds an empty store through the real command path, once.

use commandcenter::demo::seed_if_empty;
use commandcenter_event_store::{AppendSignal, EventStore};

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn demo_seeds_an_empty_store_once() {
    let app = spawn_app_with(|args| args.demo = true).await;
    let events = app.stored_events().await;
    let technologies: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'technology'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(technologies, 12);
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM unique_claims")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(claims, 12, "demo titles are claimed like any other");
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    assert!(
        !seed_if_empty(&store).await.unwrap(),
        "a second start seeds nothing"
    );
    assert_eq!(app.stored_events().await.len(), events.len());

    // Demo data looks alive without tripping the failure path: no job runs on a made-up
    // worker whose lease would lapse a minute later (dispatched ones wait for a real one).
    app.wait_caught_up().await;
    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM job_view WHERE status = 'running'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(running, 0);
    let dispatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_view WHERE status = 'pending' AND dispatched_at IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(dispatched > 0, "some demo jobs wait for a worker");

    // The README's first example works on the demo data.
    let readme = include_str!("../../README.md");
    let example = readme
        .lines()
        .find_map(|line| line.trim().strip_prefix("-d '"))
        .and_then(|body| body.strip_suffix('\''))
        .expect("the README's first curl example has a -d body");
    let body: serde_json::Value = serde_json::from_str(example).expect("the example is JSON");
    let created = app.post("/api/v1/technologies", &body).await;
    assert_eq!(created.status(), 201, "README example: {example}");
}
