//! The dashboard as the service serves it: the page and its assets need no key and carry
//! the security headers; `/api/v1/session` tells a key what it may do; the radar's cells
//! come from the dashboard statistics; and the committed build in `web/dist` is the one
//! the sources produce.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_page_and_its_assets_are_served_without_a_key_with_security_headers() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();
    for (path, media_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
        ("/docs", "text/html; charset=utf-8"),
        ("/docs/", "text/html; charset=utf-8"),
        (
            "/docs/assets/swagger-ui-bundle.js",
            "text/javascript; charset=utf-8",
        ),
        ("/docs/assets/swagger-ui.css", "text/css; charset=utf-8"),
        ("/docs/assets/docs.js", "text/javascript; charset=utf-8"),
        ("/docs/assets/docs.css", "text/css; charset=utf-8"),
        (
            "/docs/assets/swagger-ui-LICENSE.txt",
            "text/plain; charset=utf-8",
        ),
    ] {
        let response = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(header("content-type"), media_type, "{path}");
        let csp = header("content-security-policy");
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
    let page = anonymous.get(app.url("/")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
    assert!(!html.contains("http"), "the page names no other host");
    let missing = anonymous
        .get(app.url("/assets/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("content-security-policy"));

    // The API reference starts on this service's document and asks no other host.
    let docs = anonymous.get(app.url("/docs")).send().await.unwrap();
    let html = docs.text().await.unwrap();
    assert!(html.contains(r#"<script src="/docs/assets/docs.js" defer></script>"#));
    let start = anonymous
        .get(app.url("/docs/assets/docs.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(start.contains("/api/v1/openapi.json"), "{start}");
    assert!(start.contains("validatorUrl:null"), "{start}");
}

#[tokio::test]
async fn the_session_route_tells_a_key_its_role_project_and_rights() {
    let app = spawn_app().await;
    let cases = [
        ("reader", Some(2), false, false),
        ("writer", Some(2), true, false),
        ("auditor", Some(2), false, true),
        ("admin", Some(2), true, true),
    ];
    for (role, project, can_write, can_audit) in cases {
        let key = app.key(project, role).await;
        let body: Value = app
            .client_with(&key)
            .get(app.url("/api/v1/session"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            body,
            json!({
                "key_id": crate::helpers::key_id(&key),
                "role": role,
                "project_id": project,
                "expires_at": null,
                "can_write": can_write,
                "can_audit": can_audit,
            })
        );
    }
    let root: Value = app.get("/api/v1/session").await.json().await.unwrap();
    assert_eq!(root["project_id"], Value::Null);
    assert_eq!(root["role"], "admin");
    let anonymous = reqwest::Client::new()
        .get(app.url("/api/v1/session"))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(anonymous, 401, "").await;
}

#[tokio::test]
async fn dashboard_statistics_count_technologies_by_domain_and_status_together() {
    let app = spawn_app().await;
    for (title, domain, status) in [
        ("a", "ai-ml", "research"),
        ("b", "ai-ml", "research"),
        ("c", "ai-ml", "integrated"),
        ("d", "audio-dsp", "research"),
    ] {
        let response = app
            .post(
                "/api/v1/technologies",
                &json!({"project_id": 1, "title": title, "domain": domain, "status": status}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    app.post(
        "/api/v1/technologies",
        &json!({"project_id": 2, "title": "elsewhere", "domain": "ai-ml", "status": "research"}),
    )
    .await;
    app.wait_caught_up().await;
    let stats: Value = app
        .get("/api/v1/dashboard/stats?project_id=1")
        .await
        .json()
        .await
        .unwrap();
    let mut cells: Vec<(String, String, i64)> = stats["technologies"]["by_domain_status"]
        .as_array()
        .expect("by_domain_status")
        .iter()
        .map(|c| {
            (
                c["domain"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect();
    cells.sort();
    assert_eq!(
        cells,
        [
            ("ai-ml".to_string(), "integrated".to_string(), 1),
            ("ai-ml".to_string(), "research".to_string(), 2),
            ("audio-dsp".to_string(), "research".to_string(), 1),
        ]
    );
    // Across projects (a deployment-wide key), one cell per pair, summed.
    let all: Value = app
        .get("/api/v1/dashboard/stats")
        .await
        .json()
        .await
        .unwrap();
    let research: Vec<i64> = all["technologies"]["by_domain_status"]
        .as_array()
        .expect("by_domain_status")
        .iter()
        .filter(|c| c["domain"] == "ai-ml" && c["status"] == "research")
        .map(|c| c["count"].as_i64().unwrap())
        .collect();
    assert_eq!(research, [3], "{all}");
}

/// `web/dist` is committed (so `cargo build` needs no Node.js); this fails when it is not
/// what `npm run build` makes of `web/src`, and when the sources do not type-check.
#[test]
fn the_committed_dashboard_build_matches_its_sources() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/esbuild").exists(),
        "web/node_modules is missing: scripts/test.sh runs `npm ci` in web/"
    );
    let output = std::process::Command::new("npm")
        .args(["run", "--silent", "check"])
        .current_dir(&web)
        .output()
        .expect("npm runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
