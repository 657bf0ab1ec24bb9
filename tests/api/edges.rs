//! Hardened edges (issue 19): honest 503s when the database goes away, a job socket
//! that accepts a job created a moment ago.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::chaos::PrivatePostgres;
use crate::helpers::spawn_app_on;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_shutdown_answers_503_and_commits_nothing_it_refused() {
    let postgres = PrivatePostgres::start().await;
    let app = spawn_app_on(&postgres.url(), &crate::helpers::nats_url(), |_| {}).await;
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let client = app.client.clone();
            let url = app.url("/api/v1/technologies");
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(6);
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let title = format!("shutdown {w}-{n}");
                    let Ok(response) = client
                        .post(&url)
                        .json(&json!({"project_id": 1, "title": title, "domain": "other"}))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let status = response.status().as_u16();
                    let retry_after = response.headers().get("retry-after").is_some();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    outcomes.push((title, status, retry_after, body));
                }
                outcomes
            })
        })
        .collect();
    for mode in ["fast", "fast", "immediate"] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        postgres.restart(mode);
    }
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.extend(writer.await.unwrap());
    }
    let failures: Vec<&(String, u16, bool, Value)> =
        outcomes.iter().filter(|(_, s, _, _)| *s >= 500).collect();
    assert!(
        failures
            .iter()
            .all(|(_, status, retry, body)| *status == 503
                && *retry
                && body["type"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("unavailable")),
        "every failure is a 503 with Retry-After: {:?}",
        failures
            .iter()
            .map(|(_, s, _, b)| format!("{s} {b}"))
            .collect::<Vec<_>>()
    );
    // A fresh pool: the test's own connections died with the server.
    let pool = sqlx::PgPool::connect(&app.database_url()).await.unwrap();
    let stored: HashSet<String> =
        sqlx::query_scalar("SELECT jsonb_path_query_first(payload, '$.**.title') #>> '{}' FROM events WHERE sequence = 1")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (title, status, _, _) in &outcomes {
        match status {
            201 => assert!(
                stored.contains(title),
                "{title} answered 201 but is not stored"
            ),
            503 => assert!(
                !stored.contains(title),
                "{title} answered 503 but was committed"
            ),
            _ => {}
        }
    }
    println!(
        "database shutdowns: {} commands, {} answered 503",
        outcomes.len(),
        failures.len()
    );
    assert!(!failures.is_empty(), "the restarts met commands in flight");
    app.stop().await;
}

/// Log lines captured from the test's own thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The default single-threaded runtime runs the server on this thread, so a thread-local
// subscriber sees every line it logs.
#[tokio::test]
async fn a_client_caused_503_is_not_logged_as_an_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let app = crate::helpers::spawn_app_with(|args| args.query.min_position_wait_ms = 100).await;
    let response = app
        .client
        .get(app.url("/api/v1/technologies"))
        .header("x-cc-min-position", "7fffffffffffffff7fffffffffffffff")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["type"], "urn:commandcenter:problem:not-caught-up",
        "{body}"
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "logged at ERROR: {errors:?}");
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains("503")),
        "the 503 is still logged, at WARN:\n{logs}"
    );
}
