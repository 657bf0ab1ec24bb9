//! Keys managed over HTTP and the CLI, revoked (sockets closed at once), and the first
//! admin key printed by `serve`.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Client;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use super::{ask, OWN};
use crate::helpers::{assert_problem, key_id, spawn_app};

#[tokio::test]
async fn revoking_a_key_refuses_it_and_closes_its_sockets() {
    let app = spawn_app().await;
    let key = app.key(Some(OWN), "reader").await;
    let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws", &key))
        .await
        .unwrap();
    let reply = ask(&mut socket, json!({"subscribe": [format!("jobs:{OWN}")]})).await;
    assert_eq!(reply["type"], "subscribed");
    let client = app.client_with(&key);
    assert_eq!(
        client
            .get(app.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Revoked through the CLI, as an operator would: another process, announced on NATS.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"))
        .args(["keys", "revoke", &key_id(&key)])
        .env("DATABASE_URL", app.database_url())
        .env("CC_NATS_PREFIX", &app.nats.prefix)
        .env("NATS_URL", crate::helpers::nats_url())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the socket is closed at once");
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1008));
    assert_problem(
        client.get(app.url("/api/v1/jobs")).send().await.unwrap(),
        401,
        "",
    )
    .await;
}

#[tokio::test]
async fn projects_and_keys_are_managed_over_http_and_the_cli() {
    let app = spawn_app().await;
    // A deployment-wide admin registers a project; a project admin manages its keys.
    let response = app
        .post("/api/v1/projects", &json!({"name": "Radar North"}))
        .await;
    assert_eq!(response.status(), 201);
    let project: Value = response.json().await.unwrap();
    let id = project["id"].as_i64().unwrap();
    assert_problem(
        app.post("/api/v1/projects", &json!({"name": "radar north"}))
            .await,
        422,
        "name",
    )
    .await;
    let admin = app.client_with(&app.key(Some(id), "admin").await);
    let created: Value = admin
        .post(app.url("/api/v1/keys"))
        .json(&json!({"role": "writer", "name": "ci", "expires_at": "30d"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["project_id"], id);
    let token = created["token"].as_str().unwrap();
    let listed: Value = admin
        .get(app.url("/api/v1/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = listed.to_string();
    assert!(!text.contains(token) && !text.contains("secret"), "{text}");
    assert!(listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["project_id"] == id));
    let projects: Value = admin
        .get(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(projects["projects"].as_array().unwrap().len(), 1);
    // A project admin cannot make a deployment-wide key or register projects.
    assert_problem(
        admin
            .post(app.url("/api/v1/projects"))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap(),
        403,
        "",
    )
    .await;
    assert_problem(
        admin
            .post(app.url("/api/v1/keys"))
            .json(&json!({"role": "owner"}))
            .send()
            .await
            .unwrap(),
        422,
        "role",
    )
    .await;

    // The CLI: create a project, a key, list, and use the key.
    let cli = |args: Vec<String>| {
        let url = app.database_url();
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"))
                .args(args)
                .env("DATABASE_URL", url)
                .output()
                .await
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let project_id: i64 = cli(vec![
        "projects".into(),
        "create".into(),
        "Radar South".into(),
    ])
    .await
    .trim()
    .parse()
    .unwrap();
    let key = cli(vec![
        "keys".into(),
        "create".into(),
        "--project".into(),
        project_id.to_string(),
        "--role".into(),
        "writer".into(),
        "--name".into(),
        "deploy bot".into(),
    ])
    .await;
    let key = key.trim();
    let listing = cli(vec!["keys".into(), "list".into()]).await;
    assert!(
        listing.contains(&key_id(key)) && listing.contains("deploy bot") && !listing.contains(key)
    );
    assert!(cli(vec!["projects".into(), "list".into()])
        .await
        .contains("Radar South"));
    let writer = app.client_with(key);
    let response = writer
        .post(app.url("/api/v1/technologies"))
        .json(&json!({"title": "From the CLI key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["project_id"], project_id);
    // The event names the key as its actor, never the key itself.
    let metadata: Value = sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1")
        .bind(body["id"].as_str().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(metadata["actor"], key_id(key));
    let everything: String =
        sqlx::query_scalar("SELECT string_agg(payload::text || metadata::text, '') FROM events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!everything.contains(key) && !everything.contains(&app.admin_key));
}

#[tokio::test]
async fn serve_prints_one_admin_key_on_first_start_only() {
    let db = crate::helpers::TestDb::new();
    let nats = crate::helpers::nats_url();
    let prefix = format!("cctest_{}", uuid::Uuid::now_v7().simple());
    let data_dir = std::env::temp_dir().join(&prefix);
    let run = |port: u16| {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_commandcenter"))
            .args([
                "serve",
                "--no-workers",
                "--listen-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env("DATABASE_URL", &db.url)
            .env("NATS_URL", &nats)
            .env("CC_NATS_PREFIX", &prefix)
            .env("CC_DATA_DIR", &data_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        (child, stdout)
    };
    let port = free_port();
    let (mut child, stdout) = run(port);
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let key = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(token) = line.split_whitespace().find(|w| is_token(w)) {
                return token.to_string();
            }
        }
        panic!("no key printed");
    })
    .await
    .expect("the key is printed at start");
    let client = Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/keys");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed: Value = loop {
        if let Ok(response) = client.get(&url).bearer_auth(&key).send().await {
            assert_eq!(response.status(), 200);
            break response.json().await.unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed["keys"][0]["role"], "admin");
    assert_eq!(listed["keys"][0]["project_id"], Value::Null);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    child.kill().await.unwrap();

    // A second start prints no key.
    let port = free_port();
    let (mut child, stdout) = run(port);
    let health = format!("http://127.0.0.1:{port}/health/live");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.get(&health).send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
    let mut printed = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::BufReader::new(stdout), &mut printed)
        .await
        .unwrap();
    assert!(!printed.split_whitespace().any(is_token), "{printed}");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&sqlx::PgPool::connect(&db.url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(keys, 1);
    let _ = std::fs::remove_dir_all(&data_dir);
    let client = async_nats::connect(nats).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(commandcenter_relay::EventStream::new(&prefix).name())
        .await;
}

fn is_token(word: &str) -> bool {
    word.len() == 84 && word.starts_with("cc_")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
