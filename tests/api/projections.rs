//! Relay and projections end to end: every event reaches JetStream once, in feed order,
//! and the read models with their counts, exactly once in effect, across crashes.

use std::time::Duration;

use commandcenter_event_store::{AppendSignal, EventStore, NewEvent};
use commandcenter_projections::{rebuild, JobView, Projector, ProjectorConfig, TechnologyView};
use commandcenter_relay::{EventStream, Relay, RelayConfig};
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::helpers::{nats_url, spawn_app, spawn_app_with, TestApp};

/// The rows of `table` as JSON, ordered by their first column.
pub async fn rows(app: &TestApp, table: &str) -> Vec<Value> {
    let sql = match table {
        "technology_view" => "SELECT to_jsonb(t) FROM technology_view t ORDER BY id",
        "technology_counts" => {
            "SELECT to_jsonb(t) FROM technology_counts t ORDER BY project_id, domain, status"
        }
        "job_view" => "SELECT to_jsonb(t) FROM job_view t ORDER BY id",
        "job_counts" => {
            "SELECT to_jsonb(t) FROM job_counts t ORDER BY project_id, job_type, status"
        }
        "job_failures_by_hour" => {
            "SELECT to_jsonb(t) FROM job_failures_by_hour t ORDER BY project_id, hour"
        }
        other => panic!("no such table {other}"),
    };
    sqlx::query_scalar(sql).fetch_all(&app.pool).await.unwrap()
}

/// Asserts the counts tables equal a `GROUP BY` over the views.
pub async fn assert_counts_match_views(app: &TestApp) {
    crate::oracle::assert_counts_match_views_on(&app.pool).await;
}

#[tokio::test]
async fn commands_reach_the_views_counts_and_change_announcements() {
    let app = spawn_app().await;
    let client = async_nats::connect(nats_url()).await.unwrap();
    let mut changes = client
        .subscribe(format!("{}.views.>", app.core_prefix().await))
        .await
        .unwrap();
    client.flush().await.unwrap();

    let tech = app.create_technology("Projected").await;
    let id = tech["id"].as_str().unwrap();
    let updated: Value = app
        .patch(
            &format!("/api/v1/technologies/{id}"),
            &json!({"status": "research", "tags": ["a", "b"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let job = app.create_job().await;
    let job_path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    app.post(&format!("{job_path}/dispatch"), &json!({})).await;
    app.patch(&job_path, &json!({"status": "running"})).await;
    let done: Value = app
        .patch(
            &job_path,
            &json!({"status": "completed", "result": {"ok": true}}),
        )
        .await
        .json()
        .await
        .unwrap();
    app.wait_caught_up().await;

    let view: Value = sqlx::query_scalar("SELECT to_jsonb(t) FROM technology_view t WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(view["status"], "research");
    assert_eq!(view["tags"], json!(["a", "b"]));
    assert_eq!(view["version"], updated["version"]);
    assert_eq!(
        view["version"], 3,
        "the edit and the status change are two events"
    );
    assert_eq!(view["position"], updated["position"]);
    let job_row: Value = sqlx::query_scalar("SELECT to_jsonb(j) FROM job_view j WHERE id = $1")
        .bind(job["id"].as_str().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(job_row["status"], "completed");
    assert_eq!(job_row["is_terminal"], true);
    assert_eq!(job_row["position"], done["position"]);
    assert_eq!(job_row["created_position"], job["position"]);
    assert!(job_row["duration_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        rows(&app, "technology_counts").await,
        vec![json!({"project_id": 1, "domain": "other", "status": "research", "n": 1})]
    );
    assert_counts_match_views(&app).await;

    // Every changed row was announced after its commit, with its position.
    let mut announced = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), changes.next()).await
    {
        let change: Value = serde_json::from_slice(&message.payload).unwrap();
        let text = String::from_utf8(message.payload.to_vec()).unwrap();
        announced.push((message.subject.to_string(), change, text));
        // The two read models announce independently: wait for both changes.
        let seen = |position: &Value| announced.iter().any(|(_, c, _)| c["position"] == *position);
        if seen(&done["position"]) && seen(&updated["position"]) {
            break;
        }
    }
    let tech_change = announced
        .iter()
        .find(|(_, c, _)| c["position"] == updated["position"])
        .expect("the technology update was announced");
    assert_eq!(
        tech_change.0,
        format!("{}.views.technology_view.1.{id}", app.core_prefix().await)
    );
    assert_eq!(tech_change.1["row"]["status"], "research");
    // A change carries the row's stored document as it is: what a read of the row returns.
    let job_change = announced
        .iter()
        .find(|(_, c, _)| c["position"] == done["position"])
        .expect("the job's completion was announced");
    for ((_, _, text), view, id) in [
        (tech_change, "technology_view", id),
        (job_change, "job_view", job["id"].as_str().unwrap()),
    ] {
        let doc: String = sqlx::query_scalar(&format!("SELECT doc FROM {view} WHERE id = $1"))
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(
            text.contains(&format!("\"row\":{doc}")),
            "{view}: announced {text}, stored {doc}"
        );
    }
}

#[tokio::test]
async fn deleting_removes_rows_and_counts() {
    let app = spawn_app().await;
    let tech = app.create_technology("Short-lived").await;
    app.create_technology("Stays").await;
    app.delete(&format!(
        "/api/v1/technologies/{}",
        tech["id"].as_str().unwrap()
    ))
    .await;
    let job = app.create_job().await;
    app.delete(&format!("/api/v1/jobs/{}", job["id"].as_str().unwrap()))
        .await;
    app.wait_caught_up().await;
    assert_eq!(rows(&app, "technology_view").await.len(), 1);
    assert!(rows(&app, "job_view").await.is_empty());
    assert!(
        rows(&app, "job_counts").await.is_empty(),
        "groups that reach zero are removed"
    );
    assert_counts_match_views(&app).await;
}

fn event(n: u32) -> NewEvent {
    NewEvent {
        event_type: "TechnologyDeleted".into(),
        event_version: "1.0".into(),
        payload: json!({"TechnologyDeleted": {"at": format!("2026-11-29T00:00:{:02}Z", n % 60)}}),
    }
}

async fn relay_task(app: &TestApp) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let client = async_nats::connect(nats_url()).await.unwrap();
    let relay = Relay::new(
        app.pool.clone(),
        AppendSignal::local(),
        client,
        EventStream::new(&app.nats.prefix),
        RelayConfig::default(),
    );
    let token = CancellationToken::new();
    let handle = tokio::spawn(relay.run(token.clone()));
    (token, handle)
}

fn positions(events: &[commandcenter_event_store::StoredEvent]) -> Vec<String> {
    events.iter().map(|e| e.position.to_string()).collect()
}

async fn assert_stream_equals_feed(app: &TestApp, expected: usize) {
    let feed = app.feed_until(&"0".repeat(32), expected).await;
    assert_eq!(feed.len(), expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut stream = app.stream_events().await;
    while stream.len() < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream = app.stream_events().await;
    }
    let feed_positions: Vec<String> = feed
        .iter()
        .map(|e| e["position"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        positions(&stream),
        feed_positions,
        "the stream holds every event once, in feed order"
    );
}

#[tokio::test]
async fn relay_restarted_after_publishing_but_before_its_checkpoint_duplicates_nothing() {
    let app = spawn_app_with(|args| {
        args.no_relay = true;
        args.no_projectors = true;
    })
    .await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    for i in 0..30 {
        let mut tx = store.begin().await.unwrap();
        store
            .append(
                &mut tx,
                "technology",
                &format!("t{i}"),
                0,
                &[event(i)],
                &json!({}),
            )
            .await
            .unwrap();
        store.commit(tx).await.unwrap();
    }
    let (token, handle) = relay_task(&app).await;
    assert_stream_equals_feed(&app, 30).await;
    token.cancel();
    handle.await.unwrap();
    // The crash window: everything published, the checkpoint lost.
    sqlx::query("DELETE FROM relay_checkpoints")
        .execute(&app.pool)
        .await
        .unwrap();
    for i in 30..45 {
        let mut tx = store.begin().await.unwrap();
        store
            .append(
                &mut tx,
                "technology",
                &format!("t{i}"),
                0,
                &[event(i)],
                &json!({}),
            )
            .await
            .unwrap();
        store.commit(tx).await.unwrap();
    }
    let (token, handle) = relay_task(&app).await;
    assert_stream_equals_feed(&app, 45).await;
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn relay_killed_at_random_moments_loses_and_doubles_nothing() {
    let app = spawn_app_with(|args| {
        args.no_relay = true;
        args.no_projectors = true;
    })
    .await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300u32 {
                let mut tx = store.begin().await.unwrap();
                store
                    .append(
                        &mut tx,
                        "technology",
                        &format!("w{i}"),
                        0,
                        &[event(i)],
                        &json!({}),
                    )
                    .await
                    .unwrap();
                store.commit(tx).await.unwrap();
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        })
    };
    for round in 0..8u64 {
        let (_token, handle) = relay_task(&app).await;
        tokio::time::sleep(Duration::from_millis(20 + (round * 37) % 90)).await;
        // Killed: no clean-up, wherever it was (mid-publish, before its checkpoint...).
        handle.abort();
        let _ = handle.await;
    }
    writer.await.unwrap();
    let (token, handle) = relay_task(&app).await;
    assert_stream_equals_feed(&app, 300).await;
    token.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn concurrent_writers_with_inversions_reach_the_stream_in_feed_order() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    // The transaction-id inversion: A takes its id first, B draws the smaller position,
    // A commits while B is open.
    let mut a = store.begin().await.unwrap();
    sqlx::query("INSERT INTO unique_claims (scope, key, owner_id) VALUES ('test', 'a', 'a')")
        .execute(&mut *a)
        .await
        .unwrap();
    let mut b = store.begin().await.unwrap();
    store
        .append(&mut b, "technology", "b", 0, &[event(1)], &json!({}))
        .await
        .unwrap();
    store
        .append(&mut a, "technology", "a", 0, &[event(2)], &json!({}))
        .await
        .unwrap();
    store.commit(a).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8u32 {
        let store = store.clone();
        writers.spawn(async move {
            for i in 0..20u32 {
                let mut tx = store.begin().await.unwrap();
                store
                    .append(
                        &mut tx,
                        "technology",
                        &format!("w{w}-{i}"),
                        0,
                        &[event(i)],
                        &json!({}),
                    )
                    .await
                    .unwrap();
                if (w + i) % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(w) * 3)).await;
                }
                store.commit(tx).await.unwrap();
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.commit(b).await.unwrap();
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    assert_stream_equals_feed(&app, 162).await;
}

#[tokio::test]
async fn a_long_open_transaction_delays_publication_visibly_and_loses_nothing() {
    let app = spawn_app().await;
    app.create_technology("Before").await;
    app.wait_caught_up().await;
    // Someone holds a write transaction open.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO unique_claims (scope, key, owner_id) VALUES ('test', 'hold', 'x')")
        .execute(&mut *blocker)
        .await
        .unwrap();
    for i in 0..5 {
        app.create_technology(&format!("Held {i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stalled = commandcenter_projections::status(&app.pool, &app.nats.stream())
        .await
        .unwrap();
    assert_eq!(
        stalled.relay.lag_events, 5,
        "the stall is visible: {stalled:?}"
    );
    assert!(stalled.relay.lag_seconds > 0.0);
    assert_eq!(
        app.stream_events().await.len(),
        1,
        "nothing passes the open transaction"
    );
    blocker.rollback().await.unwrap();
    let report = app.wait_caught_up().await;
    assert_eq!(report.relay.lag_events, 0);
    assert_eq!(app.stream_events().await.len(), 6);
    assert_eq!(rows(&app, "technology_view").await.len(), 6);
}

#[tokio::test]
async fn a_batch_redelivered_after_a_crash_changes_nothing() {
    let app = spawn_app().await;
    for i in 0..10 {
        let tech = app.create_technology(&format!("T{i}")).await;
        app.patch(
            &format!("/api/v1/technologies/{}", tech["id"].as_str().unwrap()),
            &json!({"priority": 5}),
        )
        .await;
        app.create_job().await;
    }
    app.wait_caught_up().await;
    let before = (
        rows(&app, "technology_view").await,
        rows(&app, "technology_counts").await,
        rows(&app, "job_view").await,
        rows(&app, "job_counts").await,
    );
    // Forget every acknowledgement: the consumers start over and redeliver everything,
    // as after a crash between commit and ack.
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = app.nats.stream();
    for name in [TechnologyView::NAME, JobView::NAME] {
        js.delete_consumer_from_stream(
            Projector::<TechnologyView>::consumer_name(&stream, name),
            stream.name(),
        )
        .await
        .unwrap();
    }
    // A fresh projector of each kind picks the redelivered batches up (the running ones
    // lost their consumers and step down and back in too).
    let token = CancellationToken::new();
    let pool = app.pool.clone();
    let tech = Projector::new(
        TechnologyView,
        pool.clone(),
        js.client(),
        stream.clone(),
        ProjectorConfig::default(),
    );
    let jobs = Projector::new(
        JobView,
        pool,
        js.client(),
        stream.clone(),
        ProjectorConfig::default(),
    );
    let handles = [
        tokio::spawn(tech.run(token.clone())),
        tokio::spawn(jobs.run(token.clone())),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut delivered = 0;
        for name in [TechnologyView::NAME, JobView::NAME] {
            let mut info = js
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    Projector::<TechnologyView>::consumer_name(&stream, name),
                    stream.name(),
                )
                .await;
            if let Ok(consumer) = info.as_mut() {
                let info = consumer.info().await.unwrap();
                if info.num_pending == 0
                    && info.num_ack_pending == 0
                    && info.delivered.stream_sequence > 0
                {
                    delivered += 1;
                }
            }
        }
        if delivered == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redelivery did not complete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    for handle in handles {
        handle.await.unwrap();
    }
    let after = (
        rows(&app, "technology_view").await,
        rows(&app, "technology_counts").await,
        rows(&app, "job_view").await,
        rows(&app, "job_counts").await,
    );
    assert_eq!(
        before, after,
        "views and counts unchanged by the redelivery"
    );
}

async fn wait_rows(app: &TestApp, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rows(app, "technology_view").await.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "view did not reach {n} rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn advisory_locks_held(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
          WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn of_two_projectors_one_applies_and_the_other_takes_over() {
    let app = spawn_app_with(|args| args.no_projectors = true).await;
    let client = async_nats::connect(nats_url()).await.unwrap();
    let stream = app.nats.stream();
    let start = |token: CancellationToken| {
        let projector = Projector::new(
            TechnologyView,
            app.pool.clone(),
            client.clone(),
            stream.clone(),
            ProjectorConfig::default(),
        );
        tokio::spawn(projector.run(token))
    };
    let first_token = CancellationToken::new();
    let second_token = CancellationToken::new();
    let first = start(first_token.clone());
    let second = start(second_token.clone());
    app.create_technology("One").await;
    wait_rows(&app, 1).await;
    // The relay holds one lock, exactly one projector the other (a batch's transaction
    // lock may come and go beside them).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held = advisory_locks_held(&app).await;
        if held == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{held} advisory locks held, 2 expected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stop whichever is active: the one whose task ends when cancelled while holding it.
    first_token.cancel();
    first.await.unwrap();
    app.create_technology("Two").await;
    wait_rows(&app, 2).await;
    second_token.cancel();
    second.await.unwrap();
    assert_counts_match_views(&app).await;
}

#[tokio::test]
async fn status_and_rebuild_of_an_unknown_read_model() {
    let app = spawn_app().await;
    app.create_technology("Status").await;
    let report = app.wait_caught_up().await;
    assert_eq!(report.events, 1);
    assert_eq!(report.head, report.relay.checkpoint);
    let tech = report
        .projections
        .iter()
        .find(|p| p.name == "technology_view")
        .unwrap();
    assert_eq!(tech.checkpoint, report.head);
    assert_eq!(tech.lag_events, 0);
    let err = commandcenter_projections::ProjectionError::UnknownReadModel("nope".into());
    assert!(err.to_string().contains("technology_view"));
}

/// A transaction left open (with an id) in another database of the server: the gap-safe
/// feed goes no further until it ends (`ROLLBACK` on the connection returned).
async fn hold_the_feed() -> sqlx::PgConnection {
    let mut held =
        sqlx::PgConnection::connect(&format!("{}/postgres", crate::helpers::server_url()))
            .await
            .unwrap();
    sqlx::query("BEGIN").execute(&mut held).await.unwrap();
    sqlx::query("SELECT txid_current()")
        .execute(&mut held)
        .await
        .unwrap();
    held
}

/// The gap-safe feed pauses while any transaction of the server is in flight, in any
/// database: a rebuild started then waits for it and applies every event committed before
/// it started, instead of swapping in a partial view.
#[tokio::test]
async fn a_rebuild_waits_for_transactions_in_flight_and_misses_nothing() {
    let app = spawn_app_with(|args| args.no_projectors = true).await;
    let mut held = hold_the_feed().await;
    for i in 0..3 {
        app.create_technology(&format!("Behind a transaction {i}"))
            .await;
    }
    let pool = app.pool.clone();
    let rebuilding = tokio::spawn(async move { rebuild(&pool, &TechnologyView, 100).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waited = !rebuilding.is_finished();
    sqlx::query("ROLLBACK").execute(&mut held).await.unwrap();
    let report = rebuilding.await.unwrap().unwrap();
    assert_eq!(report.events, 3, "every committed event is applied");
    assert_eq!(rows(&app, "technology_view").await.len(), 3);
    assert!(waited, "the rebuild waited for the transaction in flight");
}

/// A rebuild applies its read model's events up to the last one committed when it
/// started, and stops there: the events committed since are the live projector's (here
/// none runs), so the rebuild neither waits for them nor reads past its target (with
/// nothing of the type left, a read past it walks every later event of other types).
#[tokio::test]
async fn a_rebuild_stops_at_the_last_event_committed_when_it_started() {
    let app = spawn_app_with(|args| args.no_projectors = true).await;
    // A transaction in flight holds the gap-safe feed back, so the rebuild waits with its
    // target taken while more technologies are created.
    let mut held = hold_the_feed().await;
    for i in 0..3 {
        app.create_technology(&format!("Before the rebuild {i}"))
            .await;
    }
    let pool = app.pool.clone();
    let rebuilding = tokio::spawn(async move { rebuild(&pool, &TechnologyView, 100).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // It reads up to its target only once it has taken it: wait for that read (a
    // session's last statement stays in `pg_stat_activity`).
    loop {
        let reading: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
              WHERE datname = current_database() AND query LIKE '%FROM events%LIMIT $6'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if reading > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuild did not start reading"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!rebuilding.is_finished(), "the rebuild did not wait");
    for i in 0..2 {
        app.create_technology(&format!("During the rebuild {i}"))
            .await;
    }
    sqlx::query("ROLLBACK").execute(&mut held).await.unwrap();
    let report = rebuilding.await.unwrap().unwrap();
    assert_eq!(
        report.events, 3,
        "events past the rebuild's target were applied"
    );
    let stored = app.stored_events().await;
    assert_eq!(stored.len(), 5);
    assert_eq!(rows(&app, "technology_view").await.len(), 3);
}

#[tokio::test]
async fn rebuild_while_live_swaps_in_an_equal_view() {
    let app = spawn_app().await;
    for i in 0..40 {
        let tech = app.create_technology(&format!("R{i}")).await;
        if i % 3 == 0 {
            app.patch(
                &format!("/api/v1/technologies/{}", tech["id"].as_str().unwrap()),
                &json!({"status": "evaluation"}),
            )
            .await;
        }
        if i % 7 == 0 {
            app.delete(&format!(
                "/api/v1/technologies/{}",
                tech["id"].as_str().unwrap()
            ))
            .await;
        }
    }
    app.wait_caught_up().await;
    let live_view = rows(&app, "technology_view").await;
    let live_counts = rows(&app, "technology_counts").await;
    let report = rebuild(&app.pool, &TechnologyView, 7).await.unwrap();
    assert_eq!(report.events, 40 + 14 + 6);
    assert_eq!(rows(&app, "technology_view").await, live_view);
    assert_eq!(rows(&app, "technology_counts").await, live_counts);
    // The live projector carries on against the swapped-in tables.
    app.create_technology("After rebuild").await;
    app.wait_caught_up().await;
    assert_eq!(
        rows(&app, "technology_view").await.len(),
        live_view.len() + 1
    );
    assert_counts_match_views(&app).await;
    let leftover: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'cc_rebuild_%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(leftover, 0);
}

#[tokio::test]
async fn of_two_relays_one_publishes_and_the_other_takes_over() {
    let app = spawn_app_with(|args| args.no_relay = true).await;
    let (first_token, first) = relay_task(&app).await;
    let (second_token, second) = relay_task(&app).await;
    app.create_technology("Relayed one").await;
    assert_stream_equals_feed(&app, 1).await;
    // Exactly one relay holds the relay lock (the projectors hold one each).
    let relay_locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
            AND ((classid::bigint << 32) | objid::bigint) = ($1 & x'ffffffffffffffff'::bigint)",
    )
    .bind(commandcenter_event_store::lock_key(&Relay::lock_name(
        &app.nats.stream(),
    )))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(relay_locks, 1);
    // The active one dies without clean-up; the other takes over.
    first.abort();
    let _ = first.await;
    first_token.cancel();
    app.create_technology("Relayed two").await;
    assert_stream_equals_feed(&app, 2).await;
    second_token.cancel();
    second.await.unwrap();
}

#[tokio::test]
async fn the_cli_reports_status_and_rebuilds() {
    let app = spawn_app().await;
    app.create_technology("Via the CLI").await;
    app.create_job().await;
    app.wait_caught_up().await;
    let database_url = sqlx::query_scalar::<_, String>("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let url = format!("{}/{}", crate::helpers::server_url(), database_url);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("CC_NATS_PREFIX", &app.nats.prefix)
            .output()
            .expect("commandcenter runs")
    };
    let status = run(&["projections", "status", "--json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["events"], 2);
    assert_eq!(report["relay"]["lag_events"], 0);
    assert_eq!(report["projections"][0]["name"], "technology_view");
    let table = run(&["projections", "status"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("technology_view"));
    let rebuilt = run(&["projections", "rebuild", "job_view"]);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(String::from_utf8_lossy(&rebuilt.stdout).starts_with("job_view: 1 events"));
    // Another prefix than the servers': said, not shown as a false relay lag.
    let other = std::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"))
        .args(["projections", "status"])
        .env("DATABASE_URL", &url)
        .env("CC_NATS_PREFIX", "not_the_servers")
        .output()
        .expect("commandcenter runs");
    let text = String::from_utf8_lossy(&other.stdout);
    assert!(
        text.contains("no stream for prefix \"not_the_servers\" in this database's deployment")
            && text.contains(&app.nats.stream().name()),
        "{text}"
    );
    let unknown = run(&["projections", "rebuild", "nope_view"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown read model"));
    assert_eq!(rows(&app, "job_view").await.len(), 1);
}

#[tokio::test]
async fn only_one_rebuild_of_a_read_model_runs_at_a_time() {
    let app = spawn_app().await;
    app.create_technology("Guarded").await;
    app.wait_caught_up().await;
    let mut holder = app.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(commandcenter_event_store::lock_key(
            "rebuild:technology_view",
        ))
        .execute(&mut *holder)
        .await
        .unwrap();
    let refused = rebuild(&app.pool, &TechnologyView, 100).await.unwrap_err();
    assert!(refused.to_string().contains("already running"), "{refused}");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    assert_eq!(
        rebuild(&app.pool, &TechnologyView, 100)
            .await
            .unwrap()
            .events,
        1
    );
}

/// Seeds `technologies` technologies in one project straight into the store (bulk
/// appends, as `demo seed` does), for the live projector to project.
async fn bulk_load_technologies(app: &TestApp, technologies: u64) {
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let plan = commandcenter::demo::SeedPlan {
        projects: 1,
        technologies,
        updates_per_technology: 0,
        jobs: 0,
    };
    commandcenter::demo::seed(&store, plan)
        .await
        .expect("technologies seeded");
}

/// After a bulk load through the live projector, the read model's statistics follow
/// without a manual `ANALYZE` or a rebuild: `last_analyze` is set (autovacuum would set
/// `last_autoanalyze` instead) and the rows changed since are within the keeper's
/// threshold of the planner's row count (10 % + 500), so the count is near the table's.
#[tokio::test]
async fn the_live_projector_analyzes_a_read_model_after_a_bulk_load() {
    let app = spawn_app().await;
    bulk_load_technologies(&app, 3_000).await;
    app.wait_caught_up().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let (analyzed, rows, changed): (bool, f64, i64) = sqlx::query_as(
            "SELECT s.last_analyze IS NOT NULL, c.reltuples::float8, s.n_mod_since_analyze \
               FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
              WHERE s.schemaname = 'public' AND s.relname = 'technology_view'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let threshold = commandcenter_projections::statistics::STALE_FRACTION * rows
            + commandcenter_projections::statistics::STALE_BASE;
        if analyzed && (changed as f64) <= threshold && rows >= 2_000.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "technology_view not analyzed after the load: analyzed {analyzed}, \
             reltuples {rows}, {changed} rows changed since"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many times `events` was analyzed, by anyone.
async fn events_analyzed(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT analyze_count + autoanalyze_count FROM pg_stat_user_tables \
          WHERE schemaname = 'public' AND relname = 'events'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// A finished rebuild releases its lock before it returns, so a rebuild started right
/// after it is not refused as already running. Leaving the release to the server, when it
/// notices the dropped connection, refused a second rebuild in a row now and then; here a
/// proxy makes the server notice a closed connection only a second late, every time.
#[tokio::test]
async fn a_finished_rebuild_releases_its_lock_before_it_returns() {
    let app = spawn_app().await;
    app.create_technology("Rebuilt twice").await;
    app.wait_caught_up().await;
    let proxy = late_closing_proxy().await;
    let late = sqlx::PgPool::connect(&crate::helpers::url_through(&app.database_url(), proxy))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            rebuild(&late, &TechnologyView, 100).await.unwrap().events,
            1
        );
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
              WHERE l.locktype = 'advisory' AND d.datname = current_database() \
                AND (l.classid::int8 << 32 | l.objid::int8) = $1",
        )
        .bind(commandcenter_event_store::lock_key(
            "rebuild:technology_view",
        ))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(held, 0, "the rebuild returned holding its lock");
    }
}

/// A TCP proxy in front of the test PostgreSQL that passes everything through, but
/// closes a server connection only a second after its client closed it. Its address.
async fn late_closing_proxy() -> std::net::SocketAddr {
    let upstream = crate::helpers::server_address(&crate::helpers::server_url());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(server_write);
            });
        }
    });
    addr
}

/// A rebuild analyzes `events` first when its statistics are stale (never taken, or
/// after a bulk load), so that its batched reads are planned for the table's real size;
/// a rebuild finding them fresh (the second view's, after the first one's) does not
/// analyze it again.
#[tokio::test]
async fn a_rebuild_analyzes_the_event_store_only_when_its_statistics_are_stale() {
    let app = spawn_app_with(|args| args.no_projectors = true).await;
    // Only the rebuilds analyze `events` here.
    sqlx::query("ALTER TABLE events SET (autovacuum_enabled = off)")
        .execute(&app.pool)
        .await
        .unwrap();
    bulk_load_technologies(&app, 2_000).await;
    // Backends publish their table counters up to seconds after their transactions, and
    // one arriving after an ANALYZE counts as a change since: wait for the load's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let inserted: i64 = sqlx::query_scalar(
            "SELECT n_tup_ins FROM pg_stat_user_tables \
              WHERE schemaname = 'public' AND relname = 'events'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if inserted >= 2_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{inserted} inserts counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // As a store loaded and never analyzed (the seed analyzes `events` as it ends).
    sqlx::query("SELECT pg_stat_reset_single_table_counters('events'::regclass)")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(events_analyzed(&app).await, 0);
    let first = rebuild(&app.pool, &TechnologyView, 500).await.unwrap();
    assert_eq!(first.events, 2_000);
    assert_eq!(
        events_analyzed(&app).await,
        1,
        "the never analyzed store was not analyzed"
    );
    let second = rebuild(&app.pool, &TechnologyView, 500).await.unwrap();
    assert_eq!(second.events, 2_000);
    assert_eq!(
        events_analyzed(&app).await,
        1,
        "fresh statistics were taken again"
    );
}

/// An idle projector moves its checkpoint across the events of other aggregate types
/// committed after its own last one, so its lag and catch-up read from near the head.
#[tokio::test]
async fn an_idle_projector_moves_its_checkpoint_to_the_head() {
    let app = spawn_app().await;
    app.create_technology("Before the jobs").await;
    for _ in 0..3 {
        app.create_job().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = app.wait_caught_up().await;
        let tech = report
            .projections
            .iter()
            .find(|p| p.name == "technology_view")
            .unwrap();
        if tech.checkpoint == report.head {
            assert!(!tech.lag_estimated);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "technology_view's checkpoint stays behind the jobs' events: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A release starts on a schema a later release migrated: the migrations it does not
/// know are let be (a rolling upgrade restarts processes of both releases, and a rollback
/// runs the previous release on the newer schema).
#[tokio::test]
async fn a_release_starts_on_a_schema_a_later_release_migrated() {
    let db = crate::helpers::TestDb::new();
    commandcenter::database::ensure_database(&db.url)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    commandcenter::database::migrate(&pool).await.unwrap();
    // What a later release's migration leaves: its change, and its row in sqlx's ledger.
    for statement in [
        "CREATE TABLE later_release (id int)",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29991231000000, 'later release', true, '\\x00'::bytea, 1)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    commandcenter::database::migrate(&pool).await.unwrap();
    assert!(commandcenter::database::migrations_applied(&pool)
        .await
        .unwrap());
    // Each known migration counts, not the latest version: without 0018's row, the later
    // one does not make the schema this release's.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 20261201000018")
        .execute(&pool)
        .await
        .unwrap();
    assert!(!commandcenter::database::migrations_applied(&pool)
        .await
        .unwrap());
    pool.close().await;
}

/// Migration 0016 finds the index it replaces by its definition, not its name: a view
/// rebuilt before the upgrade carries the names PostgreSQL gave the shadow table's copies
/// (an upgrade of such a store failed with "index … does not exist"). After it, searches
/// read the stored `search_text`, equal to the function the index was on; after 0018,
/// `technology_search` holds the rows' search columns; after 0019, the full-text index is
/// gone.
#[tokio::test]
async fn the_search_text_migration_applies_to_a_view_rebuilt_before_it() {
    use commandcenter_event_store::MIGRATOR;
    use sqlx::migrate::Migrator;

    // The release before: every migration older than 0016, from a copy of the folder.
    /// Removes the folder however the test ends.
    struct Folder(std::path::PathBuf);
    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let older =
        Folder(std::env::temp_dir().join(format!("cc-migrations-{}", uuid::Uuid::now_v7())));
    let older = &older.0;
    std::fs::create_dir_all(older).unwrap();
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for file in std::fs::read_dir(&folder).unwrap() {
        let file = file.unwrap();
        let name = file.file_name().into_string().unwrap();
        if name.as_str() < "20261130000016" {
            std::fs::copy(file.path(), older.join(&name)).unwrap();
        }
    }
    let before = Migrator::new(older.as_path()).await.unwrap();
    assert_eq!(before.iter().map(|m| m.version).max(), Some(20261130000015));
    let db = crate::helpers::TestDb::new();
    commandcenter::database::ensure_database(&db.url)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    before.run(&pool).await.unwrap();
    let store = EventStore::new(pool.clone(), AppendSignal::local());
    let plan = commandcenter::demo::SeedPlan {
        projects: 1,
        technologies: 30,
        updates_per_technology: 0,
        jobs: 0,
    };
    commandcenter::demo::seed(&store, plan).await.unwrap();
    // What a rebuild by that release left: the view's rows, in a table made in a shadow
    // schema `LIKE` the live one, whose indexes carry the names PostgreSQL gave the
    // copies. (Made here as that rebuild made it: this release's rebuild writes tables
    // the older schema lacks.)
    for statement in [
        "CREATE SCHEMA shadow",
        "CREATE TABLE shadow.technology_view (LIKE public.technology_view INCLUDING ALL)",
        "INSERT INTO shadow.technology_view (id, project_id, title, description, tags, domain, \
             status, relevance_score, priority, dependencies, alternatives, created_at, updated_at, \
             version, position) \
         SELECT r.id, r.project_id, r.title, r.description, r.tags, r.domain, r.status, \
                r.relevance_score, r.priority, r.dependencies, r.alternatives, r.created_at, \
                r.updated_at, r.version, r.position \
           FROM events e, jsonb_populate_record(NULL::public.technology_view, \
                e.payload -> 'TechnologyCreated' -> 'technology' || jsonb_build_object( \
                    'id', e.aggregate_id, 'project_id', 1, 'created_at', e.recorded_at, \
                    'updated_at', e.recorded_at, 'version', 1, 'position', '0')) r \
          WHERE e.event_type = 'TechnologyCreated'",
        "DROP TABLE public.technology_view",
        "ALTER TABLE shadow.technology_view SET SCHEMA public",
        "DROP SCHEMA shadow",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let expression_indexes = "SELECT count(*) FROM pg_index i \
         WHERE i.indrelid = 'technology_view'::regclass \
           AND pg_get_indexdef(i.indexrelid) LIKE '%cc_search_text(%gin_trgm_ops%'";
    let renamed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'technology_view' \
            AND indexname = 'technology_view_substring_idx'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(renamed, 0, "the rebuilt view's index has another name");
    let on_expression: i64 = sqlx::query_scalar(expression_indexes)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(on_expression, 1);
    let full_text: Vec<String> = sqlx::query_scalar(
        "SELECT i.indexrelid::regclass::text FROM pg_index i \
          WHERE i.indrelid = 'technology_view'::regclass \
            AND pg_get_indexdef(i.indexrelid) LIKE '%USING gin (search)'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(full_text.len(), 1);
    // PostgreSQL gave this copy the original's name; renamed, as another copy could be
    // named, so that the migration must find it by what it is on.
    sqlx::query(&format!(
        "ALTER INDEX {} RENAME TO copied_full_text_index",
        full_text[0]
    ))
    .execute(&pool)
    .await
    .unwrap();

    MIGRATOR.run(&pool).await.unwrap();
    let on_expression: i64 = sqlx::query_scalar(expression_indexes)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(on_expression, 0, "the index on the expression is gone");
    // Migration 0019 drops the full-text index no query reads, whatever its name.
    let full_text: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index i WHERE i.indrelid = 'technology_view'::regclass \
            AND pg_get_indexdef(i.indexrelid) LIKE '%USING gin (search)'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(full_text, 0, "the full-text index is gone");
    let (rows, equal): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE search_text = cc_search_text(title, description, tags)) \
           FROM technology_view",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, equal), (30, 30));
    // Migration 0018 copies what a search's count reads from the rows already there.
    let copied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM technology_view t JOIN technology_search s USING (id) \
          WHERE (s.project_id, s.domain, s.status, s.search_text) \
              = (t.project_id, t.domain, t.status, t.search_text)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(copied, 30);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM technology_view t WHERE t.search_text LIKE '%seeded%'",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|line| line.contains("search_text_idx")),
        "{plan:#?}"
    );
    drop(tx);
    pool.close().await;
}
