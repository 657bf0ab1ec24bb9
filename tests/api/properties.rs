//! Property: any sequence of commands leaves the counts tables equal to a `GROUP BY`
//! over the views, and a rebuilt view equal, row for row, to the live one.

use proptest::prelude::*;
use serde_json::{json, Value};

use commandcenter_projections::{rebuild, JobView, TechnologyView};

use crate::helpers::spawn_app;
use crate::projections::{assert_counts_match_views, rows};

const DOMAINS: &[&str] = &["audio-dsp", "ai-ml", "other"];
const STATUSES: &[&str] = &["discovery", "research", "archived", "integrated"];
const JOB_TYPES: &[&str] = &["noop", "analysis", "export"];

#[derive(Debug, Clone)]
enum Op {
    CreateTechnology {
        project: i64,
        title: u8,
        domain: usize,
        status: usize,
    },
    UpdateTechnology {
        target: usize,
        domain: Option<usize>,
        status: Option<usize>,
        priority: i64,
    },
    DeleteTechnology {
        target: usize,
    },
    CreateJob {
        project: i64,
        job_type: usize,
        max_attempts: i64,
    },
    Dispatch {
        target: usize,
    },
    Start {
        target: usize,
    },
    Progress {
        target: usize,
        progress: i64,
    },
    Complete {
        target: usize,
    },
    Fail {
        target: usize,
    },
    Cancel {
        target: usize,
    },
    DeleteJob {
        target: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..3i64, 0..12u8, 0..DOMAINS.len(), 0..STATUSES.len())
            .prop_map(|(project, title, domain, status)| Op::CreateTechnology { project, title, domain, status }),
        3 => (any::<usize>(), proptest::option::of(0..DOMAINS.len()), proptest::option::of(0..STATUSES.len()), 1..6i64)
            .prop_map(|(target, domain, status, priority)| Op::UpdateTechnology { target, domain, status, priority }),
        1 => any::<usize>().prop_map(|target| Op::DeleteTechnology { target }),
        3 => (1..3i64, 0..JOB_TYPES.len(), 1..3i64).prop_map(|(project, job_type, max_attempts)| Op::CreateJob { project, job_type, max_attempts }),
        2 => any::<usize>().prop_map(|target| Op::Dispatch { target }),
        2 => any::<usize>().prop_map(|target| Op::Start { target }),
        2 => (any::<usize>(), 0..101i64).prop_map(|(target, progress)| Op::Progress { target, progress }),
        2 => any::<usize>().prop_map(|target| Op::Complete { target }),
        1 => any::<usize>().prop_map(|target| Op::Fail { target }),
        1 => any::<usize>().prop_map(|target| Op::Cancel { target }),
        1 => any::<usize>().prop_map(|target| Op::DeleteJob { target }),
    ]
}

fn pick(ids: &[String], target: usize) -> Option<&String> {
    (!ids.is_empty()).then(|| &ids[target % ids.len()])
}

async fn run_case(ops: Vec<Op>) {
    let app = spawn_app().await;
    let (mut technologies, mut jobs) = (Vec::<String>::new(), Vec::<String>::new());
    for op in ops {
        // Refusals (409, 404) are part of the game; a 5xx never is.
        let response = match op {
            Op::CreateTechnology {
                project,
                title,
                domain,
                status,
            } => {
                let response = app
                    .post(
                        "/api/v1/technologies",
                        &json!({"project_id": project, "title": format!("T{title}"), "domain": DOMAINS[domain], "status": STATUSES[status]}),
                    )
                    .await;
                if response.status() == 201 {
                    let body: Value = response.json().await.unwrap();
                    technologies.push(body["id"].as_str().unwrap().to_string());
                    continue;
                }
                response
            }
            Op::UpdateTechnology {
                target,
                domain,
                status,
                priority,
            } => {
                let Some(id) = pick(&technologies, target) else {
                    continue;
                };
                let mut body = json!({"priority": priority});
                if let Some(d) = domain {
                    body["domain"] = json!(DOMAINS[d]);
                }
                if let Some(s) = status {
                    body["status"] = json!(STATUSES[s]);
                }
                app.patch(&format!("/api/v1/technologies/{id}"), &body)
                    .await
            }
            Op::DeleteTechnology { target } => {
                let Some(id) = pick(&technologies, target) else {
                    continue;
                };
                app.delete(&format!("/api/v1/technologies/{id}")).await
            }
            Op::CreateJob {
                project,
                job_type,
                max_attempts,
            } => {
                let response = app
                    .post(
                        "/api/v1/jobs",
                        &json!({"project_id": project, "job_type": JOB_TYPES[job_type], "max_attempts": max_attempts}),
                    )
                    .await;
                let body: Value = response.json().await.unwrap();
                jobs.push(body["id"].as_str().unwrap().to_string());
                continue;
            }
            Op::Dispatch { target } => {
                let Some(id) = pick(&jobs, target) else {
                    continue;
                };
                app.post(&format!("/api/v1/jobs/{id}/dispatch"), &json!({}))
                    .await
            }
            Op::Start { target } => {
                let Some(id) = pick(&jobs, target) else {
                    continue;
                };
                app.patch(&format!("/api/v1/jobs/{id}"), &json!({"status": "running"}))
                    .await
            }
            Op::Progress { target, progress } => {
                let Some(id) = pick(&jobs, target) else {
                    continue;
                };
                app.patch(
                    &format!("/api/v1/jobs/{id}"),
                    &json!({"progress": progress}),
                )
                .await
            }
            Op::Complete { target } => {
                let Some(id) = pick(&jobs, target) else {
                    continue;
                };
                app.patch(
                    &format!("/api/v1/jobs/{id}"),
                    &json!({"status": "completed"}),
                )
                .await
            }
            Op::Fail { target } => {
                let Some(id) = pick(&jobs, target) else {
                    continue;
                };
                app.patch(
                    &format!("/api/v1/jobs/{id}"),
                    &json!({"status": "failed", "error": "x"}),
                )
                .await
            }
            Op::Cancel { target } => {
                let Some(id) = pick(&jobs, target) else {
                    continue;
                };
                app.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
                    .await
            }
            Op::DeleteJob { target } => {
                let Some(id) = pick(&jobs, target) else {
                    continue;
                };
                app.delete(&format!("/api/v1/jobs/{id}")).await
            }
        };
        assert!(
            response.status().as_u16() < 500,
            "server error: {}",
            response.status()
        );
    }
    app.wait_caught_up().await;
    assert_counts_match_views(&app).await;

    let live = (
        rows(&app, "technology_view").await,
        rows(&app, "technology_counts").await,
        rows(&app, "job_view").await,
        rows(&app, "job_counts").await,
        rows(&app, "job_failures_by_hour").await,
    );
    rebuild(&app.pool, &TechnologyView, 13).await.unwrap();
    rebuild(&app.pool, &JobView, 13).await.unwrap();
    let rebuilt = (
        rows(&app, "technology_view").await,
        rows(&app, "technology_counts").await,
        rows(&app, "job_view").await,
        rows(&app, "job_counts").await,
        rows(&app, "job_failures_by_hour").await,
    );
    assert_eq!(
        live, rebuilt,
        "a rebuilt view equals the live one, row for row"
    );
    app.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn counts_match_views_and_rebuilds_match_live(ops in proptest::collection::vec(op(), 1..80)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run_case(ops));
    }
}
