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
}
