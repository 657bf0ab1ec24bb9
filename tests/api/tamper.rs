//! Tamper evidence without holes (issue 20): chained, append-only checkpoints with a
//! witness on NATS, pinned `recorded_at`, exports that cannot be cut unnoticed,
//! restores that rebuild uniqueness claims, history pages from snapshots.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::audit::{cli_on, create, stdout, tamper, update};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

async fn checkpoint(app: &TestApp) -> Value {
    app.feed_until("", 1).await;
    let made = cli_on(
        &app.database_url(),
        &app.nats.prefix,
        &["events", "checkpoint"],
    )
    .await;
    assert!(made.status.success(), "{made:?}");
    serde_json::from_str(&stdout(&made)).unwrap()
}

async fn verify_cli(app: &TestApp, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["events", "verify"];
    args.extend_from_slice(extra);
    let output = cli_on(&app.database_url(), &app.nats.prefix, &args).await;
    (
        output.status.success(),
        format!(
            "{}{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Events of `app` in the feed (waiting for the gap-safe head to pass them).
async fn settle(app: &TestApp, events: usize) {
    app.feed_until("", events).await;
}

#[tokio::test]
async fn deleting_tail_events_and_newer_checkpoints_is_detected_with_and_without_the_witness() {
    let app = spawn_app().await;
    let id = create(&app, 1, "Chained").await;
    update(&app, &id, 1).await;
    settle(&app, 2).await;
    let first = checkpoint(&app).await;
    update(&app, &id, 2).await;
    update(&app, &id, 3).await;
    settle(&app, 4).await;
    let second = checkpoint(&app).await;
    assert_eq!(second["previous_hash"], first["hash"], "chained");
    let (ok, report) = verify_cli(&app, &["--witness"]).await;
    assert!(ok, "{report}");
    assert!(report.contains("2 checkpoint(s) witnessed"), "{report}");

    // Append-only, like the events.
    let refused = sqlx::query("DELETE FROM audit_checkpoints")
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");

    // An intruder with superuser rights removes the tail events and the checkpoint that
    // covered them: the remaining chain is consistent in itself.
    tamper(
        &app.pool,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence > 2",
        &id,
    )
    .await;
    tamper(
        &app.pool,
        "DELETE FROM audit_checkpoints WHERE id = $1::bigint",
        &second["id"].to_string(),
    )
    .await;
    let (ok, report) = verify_cli(&app, &[]).await;
    assert!(!ok, "{report}");
    assert!(
        report.contains("checkpoint ids up to 2 were issued but the newest checkpoint is 1"),
        "{report}"
    );
    let (ok, report) = verify_cli(&app, &["--witness"]).await;
    assert!(!ok, "{report}");
    assert!(
        report.contains("checkpoint 2 (head") && report.contains("was witnessed but is missing"),
        "{report}"
    );
    assert!(
        report.contains("events covered by witnessed checkpoint 2 are missing or changed"),
        "{report}"
    );
}

#[tokio::test]
async fn recorded_at_is_pinned_and_a_backdated_event_is_named() {
    let app = spawn_app().await;
    // A writer cannot choose the time of an event.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, recorded_at) \
         VALUES ('technology', 'pinned', 1, 'TechnologyDeleted', '1.0', '{}', '{}', '2000-01-01Z')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (recent,): (bool,) = sqlx::query_as(
        "SELECT recorded_at > now() - interval '1 minute' FROM events WHERE aggregate_id = 'pinned'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(recent, "recorded_at is the database's time");
    // Restore mode keeps times only into an empty store.
    let mut restore = app.pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('cc.restoring', 'on', true)")
        .execute(&mut *restore)
        .await
        .unwrap();
    let refused = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, recorded_at) \
         VALUES ('technology', 'backdated', 1, 'TechnologyDeleted', '1.0', '{}', '{}', '2000-01-01Z')",
    )
    .execute(&mut *restore)
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("only into an empty event store"),
        "{refused}"
    );
    drop(restore);

    // An intruder backdates one event and recomputes the hash chain after it, so every
    // link holds: the time order does not.
    let id = create(&app, 1, "Backdated").await;
    for k in 1..=3 {
        update(&app, &id, k).await;
    }
    settle(&app, 5).await;
    let (ok, report) = verify_cli(&app, &[]).await;
    assert!(ok, "{report}");
    tamper(
        &app.pool,
        "WITH RECURSIVE chain AS ( \
            SELECT e.aggregate_type, e.aggregate_id, e.sequence, \
                   CASE WHEN e.sequence = 3 THEN e.recorded_at - interval '1 day' ELSE e.recorded_at END AS at, \
                   sha256(p.hash || cc_event_canonical(e.aggregate_type, e.aggregate_id, e.sequence, \
                       e.event_type, e.event_version, e.payload, e.metadata, \
                       e.recorded_at - interval '1 day')) AS hash \
              FROM events e JOIN events p ON p.aggregate_id = e.aggregate_id AND p.sequence = 2 \
             WHERE e.aggregate_id = $1 AND e.sequence = 3 \
            UNION ALL \
            SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.recorded_at, \
                   sha256(c.hash || cc_event_canonical(e.aggregate_type, e.aggregate_id, e.sequence, \
                       e.event_type, e.event_version, e.payload, e.metadata, e.recorded_at)) \
              FROM events e JOIN chain c ON e.aggregate_id = c.aggregate_id AND e.sequence = c.sequence + 1) \
         UPDATE events e SET recorded_at = chain.at, hash = chain.hash FROM chain \
          WHERE e.aggregate_id = chain.aggregate_id AND e.sequence = chain.sequence",
        &id,
    )
    .await;
    let (ok, report) = verify_cli(&app, &[]).await;
    assert!(!ok, "{report}");
    assert!(
        !report.contains("hash does not match"),
        "links hold: {report}"
    );
    assert!(
        report.contains(&format!("{id} event 3"))
            && report.contains("goes backwards along the chain"),
        "{report}"
    );
}

#[tokio::test]
async fn a_cut_or_altered_export_is_refused_and_a_restore_keeps_titles_unique() {
    let app = spawn_app().await;
    let kept = create(&app, 1, "Restored title").await;
    update(&app, &kept, 1).await;
    create(&app, 2, "Another").await;
    settle(&app, 3).await;
    let file = std::env::temp_dir().join(format!("{}-export.ndjson", app.nats.prefix));
    let path = file.to_str().unwrap();
    let exported = cli_on(
        &app.database_url(),
        &app.nats.prefix,
        &["events", "export", "--output", path],
    )
    .await;
    assert!(exported.status.success(), "{exported:?}");
    let whole = std::fs::read_to_string(&file).unwrap();

    let target = spawn_app().await;
    let import = |text: String| {
        let target = &target;
        let file = file.clone();
        async move {
            std::fs::write(&file, text).unwrap();
            let output = cli_on(
                &target.database_url(),
                &target.nats.prefix,
                &["events", "import", file.to_str().unwrap()],
            )
            .await;
            let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&target.pool)
                .await
                .unwrap();
            (output, events)
        }
    };
    // Cut after the second event: no trailer.
    let cut: String = whole.lines().take(2).map(|l| format!("{l}\n")).collect();
    let (output, events) = import(cut).await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ends without its trailer"),
        "{output:?}"
    );
    assert_eq!(events, 0, "a refused import leaves the store empty");
    // One event dropped from the middle, trailer kept.
    let lines: Vec<&str> = whole.lines().collect();
    let dropped: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let (output, events) = import(dropped).await;
    assert!(!output.status.success());
    assert_eq!(events, 0);
    // A trailer re-signed without the key.
    let mut forged: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
    let last = forged.len() - 1;
    let mut trailer: Value = serde_json::from_str(&forged[last]).unwrap();
    trailer["trailer"]["hmac"] = json!("00".repeat(32));
    forged[last] = trailer.to_string();
    let (output, events) = import(forged.join("\n") + "\n").await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("signature does not hold"),
        "{output:?}"
    );
    assert_eq!(events, 0);

    // The whole file restores, with its claims: the title stays taken.
    let (output, events) = import(whole).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(events, 3);
    let _ = std::fs::remove_file(&file);
    let again = target
        .post(
            "/api/v1/technologies",
            &json!({"project_id": 1, "title": "restored  TITLE", "priority": 3}),
        )
        .await;
    assert_eq!(again.status(), 409, "a restored title is claimed");
    let (ok, report) = verify_cli(&target, &[]).await;
    assert!(ok, "restored times and hashes verify: {report}");
}

#[tokio::test]
async fn a_history_page_deep_in_a_long_history_starts_from_a_snapshot() {
    let app = spawn_app().await;
    let id = create(&app, 1, "Long lived").await;
    for k in 1..=230 {
        update(&app, &id, k).await;
    }
    let snapshots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM snapshots WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(snapshots, 2, "snapshots at versions 100 and 200");
    let page = |query: String| {
        let app = &app;
        async move {
            let body: Value = app.get(&query).await.json().await.unwrap();
            body
        }
    };
    let deep = page(format!(
        "/api/v1/technologies/{id}/history?after_version=205&limit=5"
    ))
    .await;
    let full = page(format!("/api/v1/technologies/{id}/history?limit=1000")).await;
    assert_eq!(deep["version"], 231);
    assert_eq!(deep["next_cursor"], 210);
    let expected: Vec<&Value> = full["events"].as_array().unwrap()[205..210]
        .iter()
        .collect();
    let got: Vec<&Value> = deep["events"].as_array().unwrap().iter().collect();
    assert_eq!(
        got, expected,
        "the same entries and diffs as a fold from the start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_checkpoints_are_taken_and_witnessed() {
    let app = spawn_app_with(|args| args.checkpoint_every = Some(Duration::from_millis(500))).await;
    let id = create(&app, 1, "Scheduled").await;
    update(&app, &id, 1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, report) = verify_cli(&app, &["--witness"]).await;
        let witnessed = report
            .lines()
            .find_map(|l| l.strip_prefix("witness: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if ok && witnessed >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled checkpoints witnessed: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let every: Option<i32> = sqlx::query_scalar("SELECT max(every_seconds) FROM audit_checkpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(every, Some(1));
    app.stop().await;
}
