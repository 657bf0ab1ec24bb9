//! The oracle of the failure tests: what the event store says the read models must hold,
//! folded with the domain's own aggregates (no projection code), compared with the views
//! row for row, and the counts tables compared with a `GROUP BY` over the views; the
//! stream read back; who holds the single-active roles' locks. Shared by the `api` and
//! `cluster` test targets.

use std::collections::HashMap;

use commandcenter_domain::job::Job;
use commandcenter_domain::technology::Technology;
use commandcenter_domain::upcast_payload;
use commandcenter_event_store::{read_feed, Position, StoredEvent};
use cqrs_es::Aggregate;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::time::{Duration, Instant};

/// What the event store says a read-model row must be: present iff the aggregate is
/// live, with its version, last position and a few fields.
pub struct Expected {
    pub live: bool,
    pub version: i64,
    pub position: Position,
    pub fields: Value,
}

/// Folds every event of the store with the domain's aggregates (no projection code).
pub async fn fold_store(pool: &PgPool) -> (HashMap<String, Expected>, HashMap<String, Expected>) {
    let mut technologies: HashMap<String, (Technology, i64, Position)> = HashMap::new();
    let mut jobs: HashMap<String, (Job, i64, Position)> = HashMap::new();
    let mut after = Position::ZERO;
    loop {
        let events = read_feed(pool, after, 5000).await.expect("feed");
        let Some(last) = events.last() else { break };
        after = last.position;
        for event in &events {
            let payload = upcast_payload(
                &event.event_type,
                &event.event_version,
                event.payload.clone(),
            );
            match event.aggregate_type.as_str() {
                "technology" => {
                    let entry = technologies.entry(event.aggregate_id.clone()).or_default();
                    assert_eq!(entry.1 + 1, event.sequence, "store sequences continue");
                    entry
                        .0
                        .apply(serde_json::from_value(payload).expect("event"));
                    entry.1 = event.sequence;
                    entry.2 = event.position;
                }
                "job" => {
                    let entry = jobs.entry(event.aggregate_id.clone()).or_default();
                    assert_eq!(entry.1 + 1, event.sequence, "store sequences continue");
                    entry
                        .0
                        .apply(serde_json::from_value(payload).expect("event"));
                    entry.1 = event.sequence;
                    entry.2 = event.position;
                }
                other => panic!("unknown aggregate type {other}"),
            }
        }
    }
    let technologies = technologies
        .into_iter()
        .map(|(id, (state, version, position))| {
            let fields = match &state {
                Technology::Live(record) => {
                    let row = serde_json::to_value(record).expect("record");
                    json!({ "title": row["title"], "status": row["status"],
                            "relevance_score": row["relevance_score"] })
                }
                _ => Value::Null,
            };
            let live = matches!(state, Technology::Live(_));
            (
                id,
                Expected {
                    live,
                    version,
                    position,
                    fields,
                },
            )
        })
        .collect();
    let jobs = jobs
        .into_iter()
        .map(|(id, (state, version, position))| {
            let fields = match &state {
                Job::Live(record) => json!({ "status": record.status.as_str() }),
                _ => Value::Null,
            };
            let live = matches!(state, Job::Live(_));
            (
                id,
                Expected {
                    live,
                    version,
                    position,
                    fields,
                },
            )
        })
        .collect();
    (technologies, jobs)
}

/// Where the views on `pool` differ from a fold of its store.
pub async fn differences(pool: &PgPool) -> Vec<String> {
    let mut problems = Vec::new();
    let (technologies, jobs) = fold_store(pool).await;
    for (view, expected, fields, served) in [
        (
            "technology_view",
            &technologies,
            "jsonb_build_object('title', title, 'status', status, 'relevance_score', relevance_score)",
            "to_jsonb(t) - 'search' - 'search_text' - 'doc'",
        ),
        (
            "job_view",
            &jobs,
            "jsonb_build_object('status', status)",
            "to_jsonb(t) - 'doc'",
        ),
    ] {
        // Each stored document says what its row says (or is absent, to be rendered).
        let stale: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM {view} t WHERE doc IS NOT NULL AND doc::jsonb <> {served}"
        ))
        .fetch_all(pool)
        .await
        .expect("stored documents");
        problems.extend(stale.into_iter().map(|id| {
            format!("{view} {id}: its stored document differs from its row")
        }));
        let rows: Vec<(String, i64, String, Value)> = sqlx::query_as(&format!(
            "SELECT id, version, position, {fields} FROM {view}"
        ))
        .fetch_all(pool)
        .await
        .expect("view rows");
        let mut seen = 0;
        for (id, version, position, row_fields) in &rows {
            match expected.get(id) {
                Some(e) if e.live => {
                    seen += 1;
                    let position: Position = position.parse().expect("position");
                    if e.version != *version || e.position != position || e.fields != *row_fields {
                        problems.push(format!(
                            "{view} {id}: row version {version} at {position} {row_fields}, \
                             store version {} at {} {}",
                            e.version, e.position, e.fields
                        ));
                    }
                }
                _ => problems.push(format!("{view} {id}: row for an aggregate the store says is deleted or unknown")),
            }
        }
        let live = expected.values().filter(|e| e.live).count();
        if seen != live {
            let present: std::collections::HashSet<&String> = rows.iter().map(|r| &r.0).collect();
            for (id, e) in expected.iter().filter(|(_, e)| e.live) {
                if !present.contains(id) {
                    problems.push(format!(
                        "{view} {id}: missing, store has version {} at {}",
                        e.version, e.position
                    ));
                }
            }
        }
    }
    problems
}

/// Asserts the counts tables on `pool` equal a `GROUP BY` over the views, and
/// `technology_search` the search columns of `technology_view`.
pub async fn assert_counts_match_views_on(pool: &PgPool) {
    let mismatches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ( \
           (SELECT project_id, domain, status, n FROM technology_counts \
            EXCEPT SELECT project_id, domain, status, count(*) FROM technology_view GROUP BY 1, 2, 3) \
           UNION ALL \
           (SELECT project_id, domain, status, count(*) FROM technology_view GROUP BY 1, 2, 3 \
            EXCEPT SELECT project_id, domain, status, n FROM technology_counts)) d",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        mismatches, 0,
        "technology_counts equals COUNT(*) GROUP BY over technology_view"
    );
    let mismatches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ( \
           (SELECT id, project_id, domain, status, search_text FROM technology_search \
            EXCEPT SELECT id, project_id, domain, status, search_text FROM technology_view) \
           UNION ALL \
           (SELECT id, project_id, domain, status, search_text FROM technology_view \
            EXCEPT SELECT id, project_id, domain, status, search_text FROM technology_search)) d",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        mismatches, 0,
        "technology_search holds technology_view's search columns"
    );
    let mismatches: i64 = sqlx::query_scalar(
        "WITH truth AS ( \
           SELECT project_id, job_type, status, count(*) AS n, \
                  coalesce(sum(round(duration_seconds * 1e6)), 0)::bigint AS duration_sum_us, \
                  count(duration_seconds) AS duration_n \
             FROM job_view GROUP BY 1, 2, 3) \
         SELECT count(*) FROM ( \
           (SELECT project_id, job_type, status, n, duration_sum_us, duration_n FROM job_counts EXCEPT SELECT * FROM truth) \
           UNION ALL \
           (SELECT * FROM truth EXCEPT SELECT project_id, job_type, status, n, duration_sum_us, duration_n FROM job_counts)) d",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        mismatches, 0,
        "job_counts equals COUNT(*) GROUP BY over job_view"
    );
}

/// Waits, up to 60 s, for a moment when the views on `pool` equal a fold of its store
/// (the store may still be moving: workers finishing jobs, leases lapsing), awaiting
/// `caught_up` before each look; panics naming the first differences.
pub async fn wait_views_equal_store<F, Fut>(pool: &PgPool, what: &str, mut caught_up: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        caught_up().await;
        let problems = differences(pool).await;
        if problems.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}{} difference(s) between the views and the event store:\n{}",
            problems.len(),
            problems[..problems.len().min(20)].join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every message of stream `name`, decoded, in stream order.
pub async fn read_stream(client: async_nats::Client, name: &str) -> Vec<StoredEvent> {
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(name).await.expect("stream exists");
    let last = stream
        .get_info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut events = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.expect("message");
        events.push(serde_json::from_slice(&message.payload).expect("event payload"));
    }
    events
}

/// The pids of the processes holding the advisory locks whose name contains `what`
/// (`relay:`, `projector:`), from the locks' `application_name`,
/// `commandcenter pid=<pid> <lock>`.
pub async fn lock_holders(pool: &PgPool, what: &str) -> Vec<u32> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.locktype = 'advisory' AND l.granted \
            AND a.application_name LIKE '% ' || $1 || '%' ORDER BY 1",
    )
    .bind(what)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    names
        .iter()
        .filter_map(|n| {
            n.split_whitespace()
                .nth(1)?
                .strip_prefix("pid=")?
                .parse()
                .ok()
        })
        .collect()
}
