//! The ordering trap, both ways round: the gap-safe feed never returns an event before
//! one that precedes it in `(tx_id, global_position)` order can still commit, and never
//! skips one.

use std::time::Duration;

use commandcenter_domain::technology::TechnologyEvent;
use commandcenter_event_store::{
    count_range, read_feed_of, read_feed_of_upto, read_range, AggregateEvents, AppendSignal,
    CompactEvent, EventStore, NewEvent, Position, StoredEvent,
};
use commandcenter_projections::FoldEvent;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::helpers::{spawn_app, TestApp};

fn event(n: u32) -> NewEvent {
    NewEvent {
        event_type: "TechnologyDeleted".into(),
        event_version: "1.0".into(),
        payload: json!({"TechnologyDeleted": {"at": format!("2026-11-29T00:00:{n:02}Z")}}),
    }
}

async fn feed_after(app: &TestApp, after: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("/api/v1/events?after={after}&limit=100"))
        .await
        .json()
        .await
        .unwrap();
    page["events"].as_array().unwrap().clone()
}

fn ids(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["aggregate_id"].as_str().unwrap())
        .collect()
}

/// What `read` returns once it holds `len` events (within 30 s). The feed is gap-safe
/// across the server: a transaction still open in another test's database holds it back
/// for a while.
async fn read_until_len<T, F, Fut>(len: usize, read: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = read().await;
        if events.len() == len {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} events, {len} expected",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` sessions of this database wait on a lock.
pub async fn wait_for_lock_waiters(pool: &PgPool, n: i64) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no session started waiting on a lock");
}

#[tokio::test]
async fn a_later_position_that_commits_first_waits_for_the_earlier_one() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let zero = "0".repeat(32);

    // A draws position p and stays open.
    let mut a = store.begin().await.unwrap();
    let pa = store
        .append(&mut a, "technology", "a", 0, &[event(1)], &json!({}))
        .await
        .unwrap();
    // B draws p+1 and commits first.
    let mut b = store.begin().await.unwrap();
    let pb = store
        .append(&mut b, "technology", "b", 0, &[event(2)], &json!({}))
        .await
        .unwrap();
    assert!(pb.position.global_position > pa.position.global_position);
    store.commit(b).await.unwrap();

    assert!(
        feed_after(&app, &zero).await.is_empty(),
        "B must wait while A can still commit before it"
    );

    store.commit(a).await.unwrap();
    let feed = app.feed_until(&zero, 2).await;
    assert_eq!(ids(&feed), ["a", "b"], "each once, A first");
}

#[tokio::test]
async fn an_earlier_position_still_in_flight_is_never_skipped() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let zero = "0".repeat(32);

    // A gets its transaction id first, by writing elsewhere.
    let mut a = store.begin().await.unwrap();
    sqlx::query("INSERT INTO unique_claims (scope, key, owner_id) VALUES ('test', 'a', 'a')")
        .execute(&mut *a)
        .await
        .unwrap();
    // B then draws position p, A draws p+1.
    let mut b = store.begin().await.unwrap();
    let pb = store
        .append(&mut b, "technology", "b", 0, &[event(1)], &json!({}))
        .await
        .unwrap();
    let pa = store
        .append(&mut a, "technology", "a", 0, &[event(2)], &json!({}))
        .await
        .unwrap();
    assert!(pa.position.global_position > pb.position.global_position);
    assert!(pa.position.tx_id < pb.position.tx_id);

    // A commits while B is open: A may be read, B not yet.
    store.commit(a).await.unwrap();
    let first = app.feed_until(&zero, 1).await;
    assert_eq!(ids(&first), ["a"]);
    let reader_position = first[0]["position"].as_str().unwrap().to_string();
    assert!(feed_after(&app, &reader_position).await.is_empty());

    // When B commits, a reader already past A still receives B: nothing is skipped.
    store.commit(b).await.unwrap();
    let rest = app.feed_until(&reader_position, 1).await;
    assert_eq!(ids(&rest), ["b"]);
    let whole = app.feed_until(&zero, 2).await;
    assert_eq!(ids(&whole), ["a", "b"], "each event once, in feed order");
}

#[tokio::test]
async fn many_concurrent_writers_with_held_transactions_lose_nothing() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16u32 {
        let store = store.clone();
        writers.spawn(async move {
            for i in 0..10u32 {
                let mut tx = store.begin().await.unwrap();
                let id = format!("w{w}-{i}");
                store
                    .append(&mut tx, "technology", &id, 0, &[event(i)], &json!({}))
                    .await
                    .unwrap();
                // Every few appends, hold the transaction open for a while.
                if (w + i) % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(w % 5) * 7)).await;
                }
                store.commit(tx).await.unwrap();
            }
        });
    }
    // Tail the feed while the writers run, as a relay would.
    let mut seen: Vec<String> = Vec::new();
    let mut after = "0".repeat(32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 160 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "feed stalled at {}",
            seen.len()
        );
        let page = feed_after(&app, &after).await;
        if let Some(last) = page.last() {
            after = last["position"].as_str().unwrap().to_string();
        }
        seen.extend(ids(&page).into_iter().map(str::to_string));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    assert!(
        feed_after(&app, &after).await.is_empty(),
        "nothing beyond the 160 events"
    );
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 160, "every event exactly once");
    let zero = "0".repeat(32);
    let whole: Vec<String> = ids(&app.feed_until(&zero, 160).await)
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(seen, whole, "the tailing reader saw the final feed order");
}

#[tokio::test]
async fn a_waiting_reader_is_woken_by_a_commit() {
    use commandcenter_event_store::{
        wait_for_feed, AppendSignal, EventStore, FeedFilter, Position,
    };
    let app = spawn_app().await;
    // The reader's fallback poll is a minute: only the wake-up can end its wait in time.
    let signal = AppendSignal::local();
    let reader = {
        let (pool, signal) = (app.pool.clone(), signal.clone());
        tokio::spawn(async move {
            wait_for_feed(
                &pool,
                &signal,
                Position::ZERO,
                100,
                &FeedFilter::default(),
                Duration::from_secs(60),
                Duration::from_secs(60),
            )
            .await
        })
    };
    // Commits through a store that fires the signal. The demo dataset commits many
    // times, so a read held back by another test's open transaction is woken again.
    let store = EventStore::new(app.pool.clone(), signal.clone());
    assert!(commandcenter::demo::seed_if_empty(&store).await.unwrap());
    // Later commits go on waking it (another test's long transaction may hold the feed
    // back for a while; that delays the read, it must not strand it).
    let later = signal.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            later.fire().await;
        }
    });
    let woken = tokio::time::timeout(Duration::from_secs(20), reader).await;
    heartbeat.abort();
    let (events, _) = woken
        .expect("the wake-up ends the wait, not the one-minute poll")
        .unwrap()
        .unwrap();
    assert!(!events.is_empty());
}

#[tokio::test]
async fn the_feed_long_poll_answers_when_an_event_commits() {
    let app = spawn_app().await;
    let client = app.client.clone();
    let url = app.url(&format!(
        "/api/v1/events?after={}&wait_ms=20000",
        "0".repeat(32)
    ));
    let waiting = tokio::spawn(async move {
        client
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    app.create_technology("Long-polled").await;
    let page = tokio::time::timeout(Duration::from_secs(25), waiting)
        .await
        .expect("the long poll returns once the event commits")
        .unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
}

/// The range reads a projector runs on every batch (`count_range`, and `read_range`,
/// `read_feed_of` when it fills a hole or catches up; a rebuild's `read_feed_of_upto`)
/// are prepared and run often, so PostgreSQL settles on their generic plans. Those must
/// be driven by the range on `(tx_id, global_position)` alone: a generic plan that also
/// reads the aggregate type's primary-key entries costs every event of the type on each
/// call, and one expecting a large share of the table scans it, growing with the store.
#[tokio::test]
async fn the_type_filtered_range_reads_are_planned_on_the_range_alone() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let batch: Vec<AggregateEvents> = (0..4000u32)
        .map(|n| AggregateEvents {
            aggregate_type: if n % 2 == 0 { "technology" } else { "job" }.into(),
            aggregate_id: format!("a{n}"),
            expected_version: 0,
            events: vec![event(n % 60)],
            metadata: json!({}),
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    store.append_batch(&mut tx, &batch).await.unwrap();
    store.commit(tx).await.unwrap();
    sqlx::query("ANALYZE events")
        .execute(&app.pool)
        .await
        .unwrap();

    // One connection, planning every statement generically, runs the three reads.
    let generic = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET plan_cache_mode = force_generic_plan")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect(&app.database_url())
        .await
        .unwrap();
    let upto = Position::new(u64::MAX >> 1, i64::MAX);
    let mut conn = generic.acquire().await.unwrap();
    let counted = count_range(&mut conn, "technology", Position::ZERO, upto)
        .await
        .unwrap();
    assert_eq!(counted, 2000);
    let read = read_range(&mut conn, "technology", Position::ZERO, upto)
        .await
        .unwrap();
    assert_eq!(read.len(), 2000);
    drop(conn);
    let page = read_until_len(100, || async {
        read_feed_of(&generic, "technology", Position::ZERO, 100)
            .await
            .unwrap()
    })
    .await;
    // Bounded: nothing past `upto`, even with room left in the limit.
    let upto = page[9].position;
    let bounded = read_feed_of_upto(&generic, "technology", Position::ZERO, upto, 100)
        .await
        .unwrap();
    assert_compact(&bounded, &page[..10]);

    // Each statement as sent, explained with the plan it runs under.
    let mut conn = generic.acquire().await.unwrap();
    let prepared: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT name, statement, parameter_types::text[] FROM pg_prepared_statements \
          WHERE statement LIKE '%aggregate_type = $%' AND statement LIKE '%tx_id, global_position%' \
            AND statement NOT LIKE '%pg_prepared_statements%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(prepared.len(), 4, "{prepared:#?}");
    for (name, statement, types) in prepared {
        let args: Vec<&str> = types
            .iter()
            .map(|t| if t == "text" { "'1'" } else { "1" })
            .collect();
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name}({})", args.join(", ")))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let plan = plan.join("\n");
        // A plain walk of the range's index entries: not the whole type's primary-key
        // entries, and not a bitmap or a scan of the table, which is what a plan expecting
        // a large share of the table looks like (over millions of events, a parallel scan
        // of all of them).
        assert!(
            plan.contains("Index Scan using events_tx_position_idx")
                && !plan.contains("events_pkey")
                && !plan.contains("Bitmap")
                && !plan.contains("Seq Scan"),
            "{statement}\n{plan}"
        );
    }
}

/// `compact` are the events `full` as a read model folds them: the same events in the
/// same order, the payload's text the same JSON, decoding to the same domain event, and
/// the correlation id where the metadata holds one as a string.
fn assert_compact(compact: &[CompactEvent], full: &[StoredEvent]) {
    let key = |id: &str, sequence, kind: &str, version: &str, position| {
        format!("{id} {sequence} {kind} {version} {position}")
    };
    assert_eq!(
        compact
            .iter()
            .map(|c| key(
                &c.aggregate_id,
                c.sequence,
                &c.event_type,
                &c.event_version,
                c.position
            ))
            .collect::<Vec<_>>(),
        full.iter()
            .map(|f| key(
                &f.aggregate_id,
                f.sequence,
                &f.event_type,
                &f.event_version,
                f.position
            ))
            .collect::<Vec<_>>()
    );
    for (c, f) in compact.iter().zip(full) {
        assert_eq!(
            serde_json::from_str::<Value>(&c.payload).unwrap(),
            f.payload
        );
        assert_eq!(
            c.correlation_id.as_deref(),
            f.metadata["correlation_id"].as_str()
        );
        assert_eq!(FoldEvent::correlation_id(c), FoldEvent::correlation_id(f));
        let decoded: TechnologyEvent = c.decode().unwrap();
        assert_eq!(decoded, f.decode::<TechnologyEvent>().unwrap());
    }
}

/// A rebuild reads the feed as `CompactEvent`s (payload as text, only the correlation id
/// of the metadata); they must carry exactly what the full events give a read model,
/// whatever the metadata holds and however the payload is escaped.
#[tokio::test]
async fn a_compact_feed_read_gives_what_the_stored_events_give() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let metadata = [
        json!({"correlation_id": "corr-\"1\"-\u{e9}", "actor": "a"}),
        json!({"correlation_id": 7}),
        json!({"correlation_id": null}),
        json!({"correlation_id": {"nested": "x"}}),
        json!({}),
    ];
    let batch: Vec<AggregateEvents> = metadata
        .iter()
        .enumerate()
        .map(|(n, metadata)| AggregateEvents {
            aggregate_type: "technology".into(),
            aggregate_id: format!("t{n}"),
            expected_version: 0,
            events: vec![
                NewEvent {
                    event_type: "TechnologyUpdated".into(),
                    // 1.0: a tags string the decoding upcasts to a list.
                    event_version: "1.0".into(),
                    payload: json!({"TechnologyUpdated": {
                        "changes": {"tags": " dsp, a\"udio ,,", "description": null,
                            "notes": "line\nbreak \\ \u{1F600}", "latency_ms": 0.5},
                        "at": "2026-11-29T00:00:00.000001Z"}}),
                },
                event(n as u32),
            ],
            metadata: metadata.clone(),
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    store.append_batch(&mut tx, &batch).await.unwrap();
    store.commit(tx).await.unwrap();
    // An event of another type in between is not read.
    let job = AggregateEvents {
        aggregate_type: "job".into(),
        aggregate_id: "j".into(),
        expected_version: 0,
        events: vec![event(0)],
        metadata: json!({}),
    };
    let mut tx = store.begin().await.unwrap();
    store.append_batch(&mut tx, &[job]).await.unwrap();
    store.commit(tx).await.unwrap();

    let upto = Position::new(u64::MAX >> 1, i64::MAX);
    let mut conn = app.pool.acquire().await.unwrap();
    let full = read_range(&mut conn, "technology", Position::ZERO, upto)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(full.len(), 10);
    let compact = read_until_len(full.len(), || async {
        read_feed_of_upto(&app.pool, "technology", Position::ZERO, upto, 100)
            .await
            .unwrap()
    })
    .await;
    assert_compact(&compact, &full);
    let correlations: Vec<Option<&str>> = compact
        .iter()
        .step_by(2)
        .map(|c| c.correlation_id.as_deref())
        .collect();
    assert_eq!(
        correlations,
        [Some("corr-\"1\"-\u{e9}"), None, None, None, None]
    );
    // Read in pages, the same events.
    let first = read_feed_of_upto(&app.pool, "technology", Position::ZERO, upto, 3)
        .await
        .unwrap();
    let rest = read_feed_of_upto(&app.pool, "technology", first[2].position, upto, 100)
        .await
        .unwrap();
    assert_eq!([first, rest].concat(), compact);
}
