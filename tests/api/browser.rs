//! The dashboard in a real browser: each test starts the service (real PostgreSQL and
//! NATS, workers on) on its own database, makes its keys, and runs one scenario of
//! `web/e2e/scenarios.mjs` — headless Debian Chromium driven by `playwright-core` — whose
//! exit status is the verdict. Chromium and `web/node_modules` are installed by
//! `scripts/test.sh`; when either is missing these tests fail, they never skip.
//!
//! One browser runs at a time (a 2-core machine shared with the rest of the suite keeps
//! the "within 1 s" scenario honest); each scenario brings its own data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::helpers::{spawn_app_with, TestApp};

/// Serializes the browser scenarios.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The longest a scenario may take.
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn chromium() -> String {
    std::env::var("CC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Fails (never skips) when the browser or the driver is missing.
fn require_tools() {
    assert!(
        Path::new(&chromium()).exists(),
        "Chromium is missing at {}: scripts/test.sh installs it (apt-get install chromium), or set CC_CHROMIUM",
        chromium()
    );
    assert!(
        web_dir().join("node_modules/playwright-core").exists(),
        "web/node_modules is missing: scripts/test.sh runs `npm ci` in web/"
    );
}

/// Starts a service with workers (and the demo data when `demo`).
async fn start(demo: bool) -> TestApp {
    spawn_app_with(|args| {
        args.no_workers = false;
        args.demo = demo;
    })
    .await
}

/// Runs `scenario` against `app` with keys of every role for project 1; returns stdout.
async fn run(app: &TestApp, scenario: &str, extra: &[(&str, String)]) -> String {
    require_tools();
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let mut command = Command::new("node");
    command
        .arg(web_dir().join("e2e/scenarios.mjs"))
        .arg(scenario)
        .current_dir(web_dir())
        .env("CC_BASE_URL", &app.base)
        .env("CC_CHROMIUM", chromium())
        .env("CC_PROJECT", "1")
        .env("CC_KEY_ROOT", &app.admin_key)
        .kill_on_drop(true);
    for role in ["reader", "writer", "auditor", "admin"] {
        command.env(
            format!("CC_KEY_{}", role.to_uppercase()),
            app.key(Some(1), role).await,
        );
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    let output = tokio::time::timeout(SCENARIO_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("scenario {scenario} ran over {SCENARIO_LIMIT:?}"))
        .expect("node runs (Node.js is installed by scripts/test.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "scenario {scenario} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn scenario(name: &str) {
    let app = start(false).await;
    run(&app, name, &[]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_takes_a_good_key_refuses_a_bad_one_and_a_401_returns_to_sign_in() {
    scenario("sign_in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_no_write_controls() {
    scenario("reader_sees_no_write_controls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technology_created_through_the_form_is_on_the_radar_and_in_the_table() {
    scenario("create_technology_through_the_form").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_sort_filter_search_and_page_by_cursor() {
    scenario("tables_sort_filter_search_and_page").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_field_error_shows_at_its_field_and_a_stale_edit_explains_412() {
    scenario("field_errors_and_stale_edits").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_another_client_appears_on_the_open_page_within_a_second() {
    scenario("external_changes_appear_live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_cards_and_activity_feed_follow_changes_made_elsewhere() {
    scenario("dashboard_follows_changes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_job_file_downloads_from_its_page() {
    scenario("export_artifact_downloads").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_and_dispatched_on_the_page_shows_progress_and_completes() {
    scenario("a_job_runs_to_completion_on_the_page").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_the_page_stops_a_running_job() {
    scenario("cancel_stops_a_running_job").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_slider_shows_the_value_at_an_older_version() {
    scenario("history_slider_travels_through_versions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_history_shows_its_lifecycle_and_the_slider_goes_back_to_pending() {
    scenario("job_history_travels_through_its_lifecycle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_a_title_renders_as_text() {
    scenario("markup_in_titles_renders_as_text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_sends_its_security_headers_and_loads_nothing_from_elsewhere() {
    scenario("security_headers_are_sent").await;
}

/// The interactive API reference at `/docs` lists every documented operation and runs
/// one for real with the key given to "Authorize", within the page's policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_lists_every_operation_and_tries_one() {
    scenario("api_reference").await;
}

/// Takes a screenshot of each view on the demo data (1440×900) into `web/e2e/output/`
/// (ignored by git, so a test run leaves the tree clean); with
/// `CC_UPDATE_SCREENSHOTS=1`, into `docs/screenshots/`, the README's pictures, to refresh
/// them when the views change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_each_view_on_the_demo_data() {
    let app = start(true).await;
    app.wait_caught_up().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let folder = if std::env::var_os("CC_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        root.join("docs/screenshots")
    } else {
        root.join("web/e2e/output/screenshots")
    };
    const VIEWS: [&str; 7] = [
        "sign-in",
        "dashboard",
        "radar",
        "radar-edit",
        "jobs",
        "job-detail",
        "history",
    ];
    for view in VIEWS {
        let _ = std::fs::remove_file(folder.join(format!("{view}.png")));
    }
    run(
        &app,
        "screenshots",
        &[("CC_SCREENSHOTS", folder.display().to_string())],
    )
    .await;
    for view in VIEWS {
        assert!(folder.join(format!("{view}.png")).exists(), "{view}.png");
    }
    app.stop().await;
}

/// The closing measurements (not part of the suite: they take a minute and print
/// figures): time to first meaningful render on the demo data, the radar with 10,000
/// technologies, and the latency of 50 external changes as seen by the page.
/// `cargo test --test api browser::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_page_load_and_change_latency() {
    use commandcenter::demo::{seed, SeedPlan};
    use commandcenter_event_store::{AppendSignal, EventStore};
    let demo = start(true).await;
    demo.wait_caught_up().await;
    println!("{}", run(&demo, "measure", &[]).await);
    demo.stop().await;

    let large = start(false).await;
    let store = EventStore::new(large.pool.clone(), AppendSignal::local());
    let plan = SeedPlan {
        projects: 1,
        technologies: 10_000,
        updates_per_technology: 0,
        jobs: 0,
    };
    seed(&store, plan)
        .await
        .expect("10,000 technologies seeded");
    large.wait_caught_up().await;
    println!("{}", run(&large, "measure_large", &[]).await);
    large.stop().await;
}
