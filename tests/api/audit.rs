//! Auditors: time travel (with snapshots), annotated histories, the filtered and streamed
//! feed, tamper evidence (links and checkpoints), export/import, and upcasting of stored
//! 1.0 events.

use std::process::Output;

use commandcenter_domain::technology::Technology;
use commandcenter_event_store::{AppendSignal, EventStore};
use commandcenter_projections::{rebuild, JobView, TechnologyView};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{assert_problem, spawn_app, TestApp, TestDb, AUDIT_KEY};

/// Runs the `commandcenter` binary with `args` against `database_url`.
async fn cli(database_url: &str, args: &[&str]) -> Output {
    cli_on(database_url, "cc_unused_prefix", args).await
}

/// [`cli`] with the NATS subject prefix `prefix` (for the checkpoints' witness).
pub(crate) async fn cli_on(database_url: &str, prefix: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"));
    command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("NATS_URL", crate::helpers::nats_url())
        .env("CC_NATS_PREFIX", prefix)
        .env("CC_AUDIT_KEY", AUDIT_KEY)
        .env("RUST_LOG", "warn");
    command.output().await.expect("the binary runs")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) async fn create(app: &TestApp, project_id: i64, title: &str) -> String {
    let response = app
        .post(
            "/api/v1/technologies",
            &json!({"project_id": project_id, "title": title, "priority": 3}),
        )
        .await;
    assert_eq!(response.status(), 201, "create {title}");
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

/// Update `k` (1-based) sets `description = "rev k"` and `priority = k % 5 + 1`.
pub(crate) async fn update(app: &TestApp, id: &str, k: i64) {
    let response = app
        .patch(
            &format!("/api/v1/technologies/{id}"),
            &json!({"description": format!("rev {k}"), "priority": k % 5 + 1}),
        )
        .await;
    assert_eq!(response.status(), 200, "update {k}");
}

async fn history(app: &TestApp, id: &str) -> Vec<Value> {
    let body: Value = app
        .get(&format!("/api/v1/technologies/{id}/history?limit=1000"))
        .await
        .json()
        .await
        .unwrap();
    body["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn as_of_every_version_of_a_technology_with_50_updates() {
    let app = spawn_app().await;
    let id = create(&app, 1, "Faust").await;
    for k in 1..=50 {
        update(&app, &id, k).await;
    }
    let events = history(&app, &id).await;
    assert_eq!(events.len(), 51);
    for version in 1..=51_i64 {
        let event = &events[usize::try_from(version - 1).unwrap()];
        let position = event["position"].as_str().unwrap();
        let recorded_at = event["recorded_at"].as_str().unwrap();
        for query in [
            format!("as_of_version={version}"),
            format!("as_of_position={position}"),
            format!("as_of={}", recorded_at.replace('+', "%2B")),
        ] {
            let response = app.get(&format!("/api/v1/technologies/{id}?{query}")).await;
            assert_eq!(response.status(), 200, "{query}");
            assert_eq!(response.headers()["x-cc-source"], "event-store");
            let state: Value = response.json().await.unwrap();
            assert_eq!(state["version"], version, "{query}");
            assert_eq!(state["position"], position, "{query}");
            let k = version - 1;
            let (description, priority) = if k == 0 {
                (Value::Null, json!(3))
            } else {
                (json!(format!("rev {k}")), json!(k % 5 + 1))
            };
            assert_eq!(state["description"], description, "{query}");
            assert_eq!(state["priority"], priority, "{query}");
            assert_eq!(state["as_of"]["lifecycle"], "live");
        }
    }
    // Before it existed, a version it never reached, and malformed parameters.
    assert_problem(
        app.get(&format!(
            "/api/v1/technologies/{id}?as_of=2001-01-01T00:00:00Z"
        ))
        .await,
        404,
        "",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/technologies/{id}?as_of_version=52"))
            .await,
        404,
        "",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/technologies/{id}?as_of=yesterday"))
            .await,
        400,
        "as_of",
    )
    .await;
    assert_problem(
        app.get(&format!("/api/v1/technologies/{id}?as_of_version=0"))
            .await,
        400,
        "as_of_version",
    )
    .await;
    assert_problem(
        app.get(&format!(
            "/api/v1/technologies/{id}?as_of_version=2&as_of_position=00"
        ))
        .await,
        400,
        "as_of",
    )
    .await;

    // Jobs travel too.
    let job = app.create_job().await;
    let job_id = job["id"].as_str().unwrap();
    app.post(&format!("/api/v1/jobs/{job_id}/dispatch"), &json!({}))
        .await;
    let then: Value = app
        .get(&format!("/api/v1/jobs/{job_id}?as_of_version=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(then["status"], "pending");
    assert!(then["dispatched_at"].is_null());
}

#[tokio::test]
async fn snapshot_equals_the_replayed_state() {
    let app = spawn_app().await;
    let id = create(&app, 1, "Long-lived").await;
    for k in 1..=120 {
        update(&app, &id, k).await;
    }
    let snapshots: Vec<(i64, Value)> = sqlx::query_as(
        "SELECT version, state FROM snapshots WHERE aggregate_id = $1 ORDER BY version",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        snapshots.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [100],
        "one snapshot per 100 events"
    );
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());
    let replayed = store.replay::<Technology>(&id, Some(100)).await.unwrap();
    let snapshot: Technology = serde_json::from_value(snapshots[0].1.clone()).unwrap();
    assert_eq!(snapshot, replayed.aggregate);
    // Loads through the snapshot equal replays from the first event.
    for upto in [Some(100), Some(101), Some(115), None] {
        let fast = store.load_upto::<Technology>(&id, upto).await.unwrap();
        let slow = store.replay::<Technology>(&id, upto).await.unwrap();
        assert_eq!(fast.aggregate, slow.aggregate, "{upto:?}");
        assert_eq!((fast.version, fast.position), (slow.version, slow.position));
    }
}

pub(crate) async fn tamper(pool: &PgPool, sql: &str, id: &str) {
    let mut conn = pool.acquire().await.unwrap();
    // As a superuser bypassing the append-only triggers, as an intruder would.
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    let changed = sqlx::query(sql)
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap()
        .rows_affected();
    assert!(changed > 0, "{sql}");
    sqlx::query("SET session_replication_role = DEFAULT")
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn verify(app: &TestApp) -> Value {
    let response = app.get("/api/v1/audit/verify").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn verify_detects_altered_deleted_and_truncated_events() {
    let app = spawn_app().await;
    let db = app.database_url();
    let (a, b, c) = (
        create(&app, 1, "Altered").await,
        create(&app, 1, "Gapped").await,
        create(&app, 2, "Truncated").await,
    );
    for id in [&a, &b, &c] {
        for k in 1..=5 {
            update(&app, id, k).await;
        }
    }
    let clean = verify(&app).await;
    assert_eq!(clean["passed"], true, "{clean}");
    assert_eq!(clean["events_checked"], 18);
    assert!(clean["checkpoint"].is_null());

    // The checkpoint covers the gap-safe head: wait until other tests' open transactions
    // (anywhere in the cluster) no longer hold any of the 18 events back.
    app.feed_until("", 18).await;
    let made = cli_on(&db, &app.nats.prefix, &["events", "checkpoint"]).await;
    assert!(made.status.success(), "{made:?}");
    let checkpoint: Value = serde_json::from_str(&stdout(&made)).unwrap();
    assert_eq!(checkpoint["events"], 18);
    let checked = verify(&app).await;
    assert_eq!(checked["checkpoint"]["intact"], true, "{checked}");
    assert_eq!(checked["checkpoint"]["signature"], "valid");
    assert!(cli(&db, &["events", "verify"]).await.status.success());

    // The last two events of C: every link still holds, the checkpoint does not.
    tamper(
        &app.pool,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence > 4",
        &c,
    )
    .await;
    let report = verify(&app).await;
    assert_eq!(report["broken_count"], 0, "{report}");
    assert_eq!(report["checkpoint"]["intact"], false);
    assert_eq!(report["checkpoint"]["events_now"], 16);
    assert_eq!(report["passed"], false);

    // One byte of A's third event.
    tamper(
        &app.pool,
        "UPDATE events SET payload = jsonb_set(payload, '{TechnologyUpdated,changes,description}', '\"rev X\"') \
         WHERE aggregate_id = $1 AND sequence = 3",
        &a,
    )
    .await;
    // B's third event, from the middle of its chain.
    tamper(
        &app.pool,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &b,
    )
    .await;
    let report = verify(&app).await;
    assert_eq!(report["broken_count"], 2, "{report}");
    let broken = report["broken"].as_array().unwrap();
    let at = |id: &str| {
        broken
            .iter()
            .find(|l| l["aggregate_id"] == id)
            .unwrap_or_else(|| panic!("{id} reported: {report}"))
    };
    assert_eq!(at(&a)["sequence"], 3);
    assert!(at(&a)["reason"].as_str().unwrap().contains("altered"));
    let a3: String = sqlx::query_scalar(
        "SELECT lpad(to_hex(tx_id::text::bigint), 16, '0') || lpad(to_hex(global_position), 16, '0') \
           FROM events WHERE aggregate_id = $1 AND sequence = 3",
    )
    .bind(&a)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(at(&a)["position"], a3);
    assert_eq!(at(&b)["sequence"], 4);
    assert_eq!(at(&b)["reason"], "events 3 to 3 are missing");

    let cli_report = cli(&db, &["events", "verify"]).await;
    assert!(!cli_report.status.success(), "verify exits non-zero");
    let text = stdout(&cli_report);
    assert!(
        text.contains(&format!("BROKEN technology/{a} event 3")),
        "{text}"
    );
    assert!(
        text.contains("BROKEN: events up to it were deleted or altered"),
        "{text}"
    );
    // A project's verify sees only its own aggregates.
    let project_2: Value = app
        .get("/api/v1/audit/verify?project_id=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(project_2["broken_count"], 0, "{project_2}");
    assert_eq!(project_2["events_checked"], 4);
}

#[tokio::test]
async fn export_then_import_verifies_and_rebuilds_the_same_views() {
    let app = spawn_app().await;
    let kept = create(&app, 1, "Kept").await;
    let gone = create(&app, 2, "Gone").await;
    for k in 1..=3 {
        update(&app, &kept, k).await;
    }
    assert_eq!(
        app.delete(&format!("/api/v1/technologies/{gone}"))
            .await
            .status(),
        204
    );
    let job = app.create_job().await;
    let job_id = job["id"].as_str().unwrap();
    app.post(&format!("/api/v1/jobs/{job_id}/dispatch"), &json!({}))
        .await;
    app.post(&format!("/api/v1/jobs/{job_id}/cancel"), &json!({}))
        .await;
    app.wait_caught_up().await;

    let file = std::env::temp_dir().join(format!("{}.ndjson", app.nats.prefix));
    let file_arg = file.to_str().unwrap();
    let exported = cli(
        &app.database_url(),
        &["events", "export", "--output", file_arg],
    )
    .await;
    assert!(exported.status.success(), "{exported:?}");
    let lines = std::fs::read_to_string(&file).unwrap();
    // Nine events and the trailer.
    assert_eq!(lines.lines().count(), 10, "{lines}");
    let trailer: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(trailer["trailer"]["events"], 9, "{trailer}");
    assert!(
        trailer["trailer"]["hmac"].is_string(),
        "signed with CC_AUDIT_KEY"
    );

    let restored = TestDb::new();
    let imported = cli(&restored.url, &["events", "import", file_arg]).await;
    assert!(imported.status.success(), "{imported:?}");
    assert!(stdout(&imported).contains("imported 9 events"));
    // Into a store that is no longer empty: refused.
    let again = cli(&restored.url, &["events", "import", file_arg]).await;
    assert!(!again.status.success());
    let _ = std::fs::remove_file(&file);
    assert!(cli(&restored.url, &["events", "verify"])
        .await
        .status
        .success());

    let pool = PgPool::connect(&restored.url).await.unwrap();
    rebuild(&pool, &TechnologyView, 100).await.unwrap();
    rebuild(&pool, &JobView, 100).await.unwrap();
    // Positions differ between the two stores (and each stored document names its row's).
    for sql in [
        "SELECT coalesce(jsonb_agg(to_jsonb(t) - 'position' - 'search' - 'search_text' - 'doc' ORDER BY id), '[]') FROM technology_view t",
        "SELECT coalesce(jsonb_agg(to_jsonb(j) - 'position' - 'created_position' - 'doc' ORDER BY id), '[]') FROM job_view j",
        "SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c), '[]') FROM technology_counts c",
        "SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c), '[]') FROM job_counts c",
        "SELECT jsonb_agg(encode(hash, 'hex') ORDER BY tx_id, global_position) FROM events",
    ] {
        let original: Value = sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap();
        let copy: Value = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        assert_eq!(original, copy, "{sql}");
    }
    pool.close().await;
}

#[tokio::test]
async fn stored_1_0_events_load_project_and_time_travel() {
    let app = spawn_app().await;
    let id = "0190b6c2-0000-7000-8000-0000000000aa";
    let fixture = include_str!("fixtures/technology_tags_v1_0.ndjson");
    // A store of an older version, restored with its recorded times (only a restore into
    // an empty store keeps them; every other insert gets the database's time).
    let mut restore = app.pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('cc.restoring', 'on', true)")
        .execute(&mut *restore)
        .await
        .unwrap();
    for line in fixture.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                                 payload, metadata, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz)",
        )
        .bind(e["aggregate_type"].as_str())
        .bind(e["aggregate_id"].as_str())
        .bind(e["sequence"].as_i64())
        .bind(e["event_type"].as_str())
        .bind(e["event_version"].as_str())
        .bind(&e["payload"])
        .bind(&e["metadata"])
        .bind(e["recorded_at"].as_str())
        .execute(&mut *restore)
        .await
        .unwrap();
    }
    restore.commit().await.unwrap();
    app.wait_caught_up().await;
    // Projected with the upcast payloads.
    let row: Value = app
        .get(&format!("/api/v1/technologies/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(row["tags"], json!(["dsp", "audio", "compiler"]), "{row}");
    assert_eq!(row["priority"], 4);
    // Time travel reads them too.
    let then: Value = app
        .get(&format!(
            "/api/v1/technologies/{id}?as_of=2025-03-01T12:00:00Z"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(then["version"], 1);
    assert_eq!(then["tags"], json!(["dsp", "audio"]));
    // The aggregate loads for new commands, which write the current version.
    let response = app
        .patch(
            &format!("/api/v1/technologies/{id}"),
            &json!({"tags": ["dsp"]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let (version,): (String,) =
        sqlx::query_as("SELECT event_version FROM events WHERE aggregate_id = $1 AND sequence = 3")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(version, "1.1");
    let events = history(&app, id).await;
    let changes = &events[1]["changes"];
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "tags"
                && c["from"] == json!(["dsp", "audio"])
                && c["to"] == json!(["dsp", "audio", "compiler"])),
        "{changes}"
    );
    assert_eq!(events[0]["actor"], "legacy-import");
    assert_eq!(verify(&app).await["passed"], true);
}

#[tokio::test]
async fn history_lists_who_when_why_and_what_with_filters_and_cursor() {
    let app = spawn_app().await;
    let id = create(&app, 1, "Diffed").await;
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/technologies/{id}")))
        .header("x-correlation-id", "review-42")
        .header("x-causation-id", "ticket-7")
        .json(&json!({"priority": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for k in 1..=4 {
        update(&app, &id, k).await;
    }
    app.patch(
        &format!("/api/v1/technologies/{id}"),
        &json!({"status": "research", "status_reason": "promising"}),
    )
    .await;

    let events = history(&app, &id).await;
    assert_eq!(events.len(), 7);
    let second = &events[1];
    assert_eq!(second["event_type"], "TechnologyUpdated");
    // The acting key's id, never the key itself.
    assert_eq!(second["actor"], crate::helpers::key_id(&app.admin_key));
    assert!(!Value::from(events.clone())
        .to_string()
        .contains(&app.admin_key));
    assert_eq!(second["correlation_id"], "review-42");
    assert_eq!(second["causation_id"], "ticket-7");
    let changes = second["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["field"], "priority");
    assert_eq!(changes[0]["from"], 3);
    assert_eq!(changes[0]["to"], 5);
    assert_eq!(events[0]["changes"][0]["field"], "state");
    assert_eq!(events[0]["changes"][0]["to"], "Live");

    // Filter by type, page by cursor.
    let page: Value = app
        .get(&format!(
            "/api/v1/technologies/{id}/history?event_type=TechnologyUpdated&limit=3"
        ))
        .await
        .json()
        .await
        .unwrap();
    let sequences: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [2, 3, 4]);
    assert_eq!(page["next_cursor"], 4);
    let rest: Value = app
        .get(&format!(
            "/api/v1/technologies/{id}/history?event_type=TechnologyUpdated&limit=3&after_version=4"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["events"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    // Time range.
    let since = events[5]["recorded_at"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");
    let late: Value = app
        .get(&format!("/api/v1/technologies/{id}/history?since={since}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(late["events"].as_array().unwrap().len(), 2);
    assert_problem(
        app.get(&format!("/api/v1/technologies/{id}/history?since=soon"))
            .await,
        400,
        "since",
    )
    .await;

    // The people's timeline.
    let timeline = cli(
        &app.database_url(),
        &["events", "history", "technology", &id],
    )
    .await;
    assert!(timeline.status.success(), "{timeline:?}");
    let text = stdout(&timeline);
    assert!(text.contains("TechnologyStatusChanged"), "{text}");
    assert!(
        text.contains("correlation review-42, caused by ticket-7"),
        "{text}"
    );
}

#[tokio::test]
async fn feed_filters_and_streams_ndjson() {
    let app = spawn_app().await;
    create(&app, 1, "One").await;
    let two = create(&app, 2, "Two").await;
    update(&app, &two, 1).await;
    app.create_job().await;
    // Other tests' open transactions anywhere in the cluster hold the feed back for a
    // moment: wait until all four events are readable.
    app.feed_until("", 4).await;

    let page = |query: &'static str| {
        let app = &app;
        async move {
            let body: Value = app
                .get(&format!("/api/v1/events?{query}"))
                .await
                .json()
                .await
                .unwrap();
            body
        }
    };
    let project_2 = page("project_id=2").await;
    let events = project_2["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["aggregate_id"] == two));
    let jobs = page("aggregate_type=job&event_type=JobCreated").await;
    assert_eq!(jobs["events"].as_array().unwrap().len(), 1);
    // A filter matching nothing still moves the cursor to the head.
    let none = page("event_type=TechnologyDeleted").await;
    assert!(none["events"].as_array().unwrap().is_empty());
    let all = page("limit=1000").await;
    let last = all["events"].as_array().unwrap().last().unwrap()["position"].clone();
    assert_eq!(none["next_after"], last);
    assert_problem(
        app.get("/api/v1/events?project_id=x").await,
        400,
        "project_id",
    )
    .await;

    let response = app
        .client
        .get(app.url("/api/v1/events?aggregate_type=technology"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The stream ends with a record saying it was complete.
    let end = lines.pop().expect("an end record");
    assert_eq!(end["end"]["truncated"], false, "{end}");
    assert_eq!(end["end"]["events"], 3);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|e| e["aggregate_type"] == "technology"));
    // Cut by `limit`: the end record says so, and where to resume.
    let cut = app
        .client
        .get(app.url("/api/v1/events?aggregate_type=technology&limit=2"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cut: Vec<Value> = cut
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cut.len(), 3);
    assert_eq!(cut[2]["end"]["truncated"], true, "{:?}", cut[2]);
    assert_eq!(cut[2]["end"]["next_after"], cut[1]["position"]);
    let positions: Vec<&str> = lines
        .iter()
        .map(|e| e["position"].as_str().unwrap())
        .collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    assert_eq!(positions, sorted, "global order");
}
