//! `serve --demo`: a small, realistic dataset written through the real command path
//! (aggregates, events, hash chain, title claims), so a newcomer sees a living system.
//! Seeds only an empty event store, so restarting with `--demo` never duplicates data.

use anyhow::Context;
use commandcenter_commands::clock;
use commandcenter_commands::executor::{execute, Execution, Outcome, WriteModel};
use commandcenter_commands::extract::RequestMeta;
use commandcenter_commands::reply::Reply;
use commandcenter_commands::ApiError;
use commandcenter_domain::job::{parse_parameters, Job, JobCommand, JobType};
use commandcenter_domain::technology::{
    IntegrationDifficulty, MaturityLevel, StatusChange, Technology, TechnologyCommand,
    TechnologyDomain, TechnologyFields, TechnologyStatus,
};
use commandcenter_domain::values::{Priority, Progress, ProjectId, Score, Tags, Title};
use commandcenter_event_store::EventStore;
use serde_json::json;
use uuid::Uuid;

/// `(title, vendor, domain, status, relevance, priority, maturity, tags)`.
type Seed = (
    &'static str,
    &'static str,
    TechnologyDomain,
    TechnologyStatus,
    i64,
    i64,
    MaturityLevel,
    &'static [&'static str],
);

const TECHNOLOGIES: &[Seed] = &[
    (
        "JUCE",
        "Raw Material Software",
        TechnologyDomain::AudioDsp,
        TechnologyStatus::Integrated,
        92,
        5,
        MaturityLevel::Mature,
        &["c++", "plugins"],
    ),
    (
        "Faust",
        "GRAME",
        TechnologyDomain::AudioDsp,
        TechnologyStatus::Evaluation,
        78,
        4,
        MaturityLevel::Stable,
        &["dsl", "dsp"],
    ),
    (
        "Web Audio API",
        "W3C",
        TechnologyDomain::AudioDsp,
        TechnologyStatus::Implementation,
        85,
        4,
        MaturityLevel::Stable,
        &["browser"],
    ),
    (
        "ONNX Runtime",
        "Microsoft",
        TechnologyDomain::AiMl,
        TechnologyStatus::Research,
        74,
        3,
        MaturityLevel::Mature,
        &["inference"],
    ),
    (
        "Demucs",
        "Meta",
        TechnologyDomain::AiMl,
        TechnologyStatus::Discovery,
        66,
        3,
        MaturityLevel::Beta,
        &["source-separation"],
    ),
    (
        "music21",
        "MIT",
        TechnologyDomain::MusicTheory,
        TechnologyStatus::Research,
        58,
        2,
        MaturityLevel::Mature,
        &["python", "analysis"],
    ),
    (
        "Tonal.js",
        "danigb",
        TechnologyDomain::MusicTheory,
        TechnologyStatus::Discovery,
        49,
        2,
        MaturityLevel::Stable,
        &["javascript"],
    ),
    (
        "Tracy Profiler",
        "Bartosz Taudul",
        TechnologyDomain::Performance,
        TechnologyStatus::Integrated,
        70,
        3,
        MaturityLevel::Stable,
        &["profiling"],
    ),
    (
        "Dear ImGui",
        "Omar Cornut",
        TechnologyDomain::UiUx,
        TechnologyStatus::Evaluation,
        61,
        3,
        MaturityLevel::Mature,
        &["immediate-mode"],
    ),
    (
        "NATS JetStream",
        "Synadia",
        TechnologyDomain::Infrastructure,
        TechnologyStatus::Integrated,
        88,
        4,
        MaturityLevel::Stable,
        &["messaging"],
    ),
    (
        "RNNoise",
        "Xiph.Org",
        TechnologyDomain::AudioDsp,
        TechnologyStatus::Archived,
        35,
        1,
        MaturityLevel::Legacy,
        &["denoise"],
    ),
    (
        "Basic Pitch",
        "Spotify",
        TechnologyDomain::AiMl,
        TechnologyStatus::Discovery,
        63,
        3,
        MaturityLevel::Alpha,
        &["transcription"],
    ),
];

fn ok<A>(_: &Outcome<A>) -> Result<Reply, ApiError> {
    Ok(Reply {
        status: axum::http::StatusCode::OK,
        headers: Vec::new(),
        body: Vec::new(),
    })
}

async fn run<A>(
    store: &EventStore,
    meta: &RequestMeta,
    id: &str,
    command: A::Command,
) -> anyhow::Result<()>
where
    A: WriteModel + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send,
    ApiError: From<A::Error>,
{
    let execution = Execution::<A> {
        aggregate_id: id.to_string(),
        command,
        if_match: None,
        meta: meta.clone(),
        idempotency: None,
    };
    execute(store, execution, ok)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Seeds the demo dataset unless the event store already holds events. Returns whether
/// it seeded.
pub async fn seed_if_empty(store: &EventStore) -> anyhow::Result<bool> {
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .context("cannot count events")?;
    if existing > 0 {
        return Ok(false);
    }
    let meta = RequestMeta {
        request_id: Uuid::now_v7().to_string(),
        correlation_id: "demo-seed".into(),
        causation_id: None,
        actor: "demo".into(),
    };
    for (i, (title, vendor, domain, status, relevance, priority, maturity, tags)) in
        TECHNOLOGIES.iter().enumerate()
    {
        let project = ProjectId::parse("project_id", if i % 3 == 2 { 2 } else { 1 })?;
        let id = Uuid::now_v7().to_string();
        let fields = TechnologyFields {
            title: Title::parse("title", title)?,
            vendor: Some((*vendor).to_string()),
            domain: *domain,
            status: TechnologyStatus::Discovery,
            relevance_score: Score::parse("relevance_score", *relevance)?,
            priority: Priority::parse("priority", *priority)?,
            description: Some(format!("{title} on the radar since the demo began.")),
            notes: None,
            use_cases: None,
            documentation_url: None,
            repository_url: None,
            website_url: None,
            tags: Tags::parse(
                "tags",
                &tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            )?,
            latency_ms: None,
            throughput_qps: None,
            integration_difficulty: Some(IntegrationDifficulty::Moderate),
            integration_time_estimate_days: Some(5 + i as u32),
            maturity_level: Some(*maturity),
            stability_score: Some(Score::parse("stability_score", 60 + (i as i64 * 3) % 40)?),
            cost_tier: None,
            cost_monthly_usd: None,
            dependencies: Default::default(),
            alternatives: Vec::new(),
        };
        let create = TechnologyCommand::CreateTechnology {
            id: id.clone(),
            project_id: project,
            fields: Box::new(fields),
            at: clock::now(),
        };
        run::<Technology>(store, &meta, &id, create).await?;
        let change = TechnologyCommand::ChangeTechnologyStatus {
            change: StatusChange {
                status: *status,
                reason: Some("demo history".into()),
            },
            at: clock::now(),
        };
        run::<Technology>(store, &meta, &id, change).await?;
    }
    for i in 0..8u8 {
        let id = Uuid::now_v7().to_string();
        let job_type = if i % 2 == 0 {
            JobType::Noop
        } else {
            JobType::Analysis
        };
        let create = JobCommand::CreateJob {
            id: id.clone(),
            project_id: ProjectId::parse("project_id", 1)?,
            job_type,
            parameters: parse_parameters(job_type, json!({}))?,
            tags: Tags::default(),
            created_by: Some("demo".into()),
            max_attempts: 3,
            at: clock::now(),
        };
        run::<Job>(store, &meta, &id, create).await?;
        if i < 6 {
            run::<Job>(
                store,
                &meta,
                &id,
                JobCommand::DispatchJob {
                    delay_seconds: 0,
                    at: clock::now(),
                },
            )
            .await?;
        }
        if i < 4 {
            let start = JobCommand::StartJob {
                worker_id: "demo-worker".into(),
                lease_seconds: 60,
                at: clock::now(),
            };
            run::<Job>(store, &meta, &id, start).await?;
            let progress = JobCommand::ReportJobProgress {
                progress: Progress::parse("progress", 40)?,
                current_step: Some("crunching".into()),
                at: clock::now(),
            };
            run::<Job>(store, &meta, &id, progress).await?;
        }
        if i < 2 {
            let complete = JobCommand::CompleteJob {
                result: Some(json!({"demo": true})),
                at: clock::now(),
            };
            run::<Job>(store, &meta, &id, complete).await?;
        }
    }
    Ok(true)
}
