//! Demo data.
//!
//! - `serve --demo`: a small, realistic dataset written through the real command path
//!   (executor, aggregates, events, hash chain, title claims), so a newcomer sees a living
//!   system. Seeds only an empty event store, so restarting with `--demo` never
//!   duplicates data.
//! - `demo seed`: a large dataset for benchmarks. Every event is decided by the real
//!   aggregates (`handle`), then appended in bulk ([`EventStore::append_batch`]): the
//!   same rows, metadata and hash chain as a command, without an HTTP round trip each.

use anyhow::Context;
use commandcenter_domain::job::{parse_parameters, Job, JobCommand, JobType};
use commandcenter_domain::technology::{
    IntegrationDifficulty, MaturityLevel, StatusChange, Technology, TechnologyCommand,
    TechnologyDomain, TechnologyFields, TechnologyStatus,
};
use commandcenter_domain::values::{Priority, Progress, ProjectId, Score, Tags, Title};
use commandcenter_event_store::EventStore;
use commandcenter_executor::{apply, clock, CommandError, RequestMeta, WriteModel};
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

async fn run<A>(
    store: &EventStore,
    metrics: &std::sync::Arc<commandcenter_metrics::Metrics>,
    meta: &RequestMeta,
    id: &str,
    command: A::Command,
) -> anyhow::Result<()>
where
    A: WriteModel + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send,
    A: Send + Sync,
    CommandError: From<A::Error>,
{
    apply::<A>(store, metrics, id, command, meta.clone())
        .await
        .with_context(|| format!("the demo command on {id} failed"))?;
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
    // The demo's two projects, by name; the ids the data below uses.
    sqlx::query(
        "INSERT INTO projects (id, name) VALUES (1, 'Demo platform radar'), (2, 'Demo data radar') \
         ON CONFLICT DO NOTHING",
    )
    .execute(store.pool())
    .await
    .context("cannot register the demo projects")?;
    let metrics = commandcenter_metrics::Metrics::new();
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
            last_hn_mention: None,
            hn_score_avg: None,
            github_stars: None,
            github_last_commit: None,
        };
        let create = TechnologyCommand::CreateTechnology {
            id: id.clone(),
            project_id: project,
            fields: Box::new(fields),
            at: clock::now(),
        };
        run::<Technology>(store, &metrics, &meta, &id, create).await?;
        let change = TechnologyCommand::ChangeTechnologyStatus {
            change: StatusChange {
                status: *status,
                reason: Some("demo history".into()),
            },
            at: clock::now(),
        };
        run::<Technology>(store, &metrics, &meta, &id, change).await?;
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
        run::<Job>(store, &metrics, &meta, &id, create).await?;
        if i < 6 {
            run::<Job>(
                store,
                &metrics,
                &meta,
                &id,
                JobCommand::DispatchJob {
                    delay_seconds: 0,
                    at: clock::now(),
                },
            )
            .await?;
        }
        // Only jobs that also finish are started here: a job left running on a made-up
        // worker would lapse its lease a minute later. The other dispatched jobs are run
        // by the real worker of `serve --demo`.
        if i < 2 {
            let start = JobCommand::StartJob {
                worker_id: "demo-worker".into(),
                lease_seconds: 60,
                at: clock::now(),
            };
            run::<Job>(store, &metrics, &meta, &id, start).await?;
            let progress = JobCommand::ReportJobProgress {
                progress: Progress::parse("progress", 40)?,
                current_step: Some("crunching".into()),
                at: clock::now(),
            };
            run::<Job>(store, &metrics, &meta, &id, progress).await?;
        }
        if i < 2 {
            let complete = JobCommand::CompleteJob {
                result: Some(json!({"demo": true})),
                at: clock::now(),
            };
            run::<Job>(store, &metrics, &meta, &id, complete).await?;
        }
    }
    commandcenter_auth::ProjectStore::new(store.pool().clone())
        .register_from_events()
        .await
        .context("cannot register the demo projects")?;
    Ok(true)
}

/// What `demo seed` creates.
#[derive(Debug, Clone, Copy)]
pub struct SeedPlan {
    /// Projects the data is spread over (1..=projects).
    pub projects: i64,
    /// Technologies to create.
    pub technologies: u64,
    /// Updates applied to each technology after its creation.
    pub updates_per_technology: u32,
    /// Jobs to create; each is dispatched, started, reports progress and completes.
    pub jobs: u64,
}

impl SeedPlan {
    /// The number of events the plan writes.
    pub fn events(&self) -> u64 {
        self.technologies * (1 + u64::from(self.updates_per_technology)) + self.jobs * JOB_EVENTS
    }
}

/// Events a seeded job goes through.
const JOB_EVENTS: u64 = 5;
/// Aggregates appended per transaction.
const SEED_BATCH: u64 = 400;

/// Decides `commands` on a fresh aggregate with its own `handle`, returning the events.
async fn decide<A>(commands: Vec<A::Command>) -> anyhow::Result<(A, Vec<A::Event>)>
where
    A: cqrs_es::Aggregate<Services = ()>,
{
    let mut state = A::default();
    let mut events = Vec::new();
    for command in commands {
        let sink = cqrs_es::event_sink::EventSink::default();
        state
            .handle(command, &(), &sink)
            .await
            .map_err(|e| anyhow::anyhow!("seed command refused: {e}"))?;
        events.extend(sink.collect().await);
    }
    Ok((state, events))
}

fn seeded_technology(
    run: &str,
    n: u64,
    plan: &SeedPlan,
) -> anyhow::Result<(String, Vec<TechnologyCommand>)> {
    use commandcenter_domain::technology::TechnologyChanges;
    let id = Uuid::now_v7().to_string();
    let domains = [
        TechnologyDomain::AudioDsp,
        TechnologyDomain::AiMl,
        TechnologyDomain::MusicTheory,
        TechnologyDomain::Performance,
        TechnologyDomain::UiUx,
        TechnologyDomain::Infrastructure,
        TechnologyDomain::Other,
    ];
    // Never `discovery` (the initial status): a change to the current status records nothing.
    let statuses = [
        TechnologyStatus::Research,
        TechnologyStatus::Evaluation,
        TechnologyStatus::Implementation,
        TechnologyStatus::Integrated,
    ];
    let project = ProjectId::parse("project_id", 1 + (n as i64 % plan.projects.max(1)))?;
    let fields = TechnologyFields {
        title: Title::parse("title", &format!("Seed {run} #{n}"))?,
        vendor: Some(format!("Vendor {}", n % 97)),
        domain: domains[(n % 7) as usize],
        status: TechnologyStatus::Discovery,
        relevance_score: Score::parse("relevance_score", (n * 37 % 101) as i64)?,
        priority: Priority::parse("priority", (n % 5 + 1) as i64)?,
        description: Some(format!("Seeded technology number {n} for benchmarks.")),
        notes: None,
        use_cases: None,
        documentation_url: None,
        repository_url: None,
        website_url: None,
        tags: Tags::parse("tags", &[format!("tag{}", n % 13), "seed".to_string()])?,
        latency_ms: None,
        throughput_qps: None,
        integration_difficulty: Some(IntegrationDifficulty::Moderate),
        integration_time_estimate_days: Some((n % 30) as u32),
        maturity_level: Some(MaturityLevel::Stable),
        stability_score: None,
        cost_tier: None,
        cost_monthly_usd: None,
        dependencies: Default::default(),
        alternatives: Vec::new(),
        last_hn_mention: None,
        hn_score_avg: None,
        github_stars: None,
        github_last_commit: None,
    };
    let at = clock::now();
    let mut commands = vec![TechnologyCommand::CreateTechnology {
        id: id.clone(),
        project_id: project,
        fields: Box::new(fields),
        at,
    }];
    for u in 0..plan.updates_per_technology {
        let command = if u % 2 == 0 {
            TechnologyCommand::UpdateTechnology {
                changes: Box::new(TechnologyChanges {
                    notes: Some(Some(format!("revision {u}"))),
                    relevance_score: Some(Score::parse(
                        "relevance_score",
                        ((n + u64::from(u)) * 13 % 101) as i64,
                    )?),
                    ..Default::default()
                }),
                status: None,
                at,
            }
        } else {
            TechnologyCommand::ChangeTechnologyStatus {
                change: StatusChange {
                    // Consecutive changes differ by two places: never a no-op.
                    status: statuses[((n + u64::from(u)) % 4) as usize],
                    reason: Some("seeded".into()),
                },
                at,
            }
        };
        commands.push(command);
    }
    Ok((id, commands))
}

fn seeded_job(n: u64, plan: &SeedPlan) -> anyhow::Result<(String, Vec<JobCommand>)> {
    let id = Uuid::now_v7().to_string();
    let at = clock::now();
    let commands = vec![
        JobCommand::CreateJob {
            id: id.clone(),
            project_id: ProjectId::parse("project_id", 1 + (n as i64 % plan.projects.max(1)))?,
            job_type: JobType::Noop,
            parameters: parse_parameters(JobType::Noop, json!({}))?,
            tags: Tags::default(),
            created_by: Some("seed".into()),
            max_attempts: 3,
            at,
        },
        JobCommand::DispatchJob {
            delay_seconds: 0,
            at,
        },
        JobCommand::StartJob {
            worker_id: "seed".into(),
            lease_seconds: 60,
            at,
        },
        JobCommand::ReportJobProgress {
            progress: Progress::parse("progress", 50)?,
            current_step: Some("halfway".into()),
            at,
        },
        JobCommand::CompleteJob {
            result: Some(json!({"seeded": true})),
            at,
        },
    ];
    Ok((id, commands))
}

fn seed_metadata(run: &str, project: Option<ProjectId>) -> serde_json::Value {
    let mut metadata = json!({
        "request_id": Uuid::now_v7().to_string(),
        "correlation_id": format!("seed-{run}"),
        "actor": "seed",
    });
    if let Some(project) = project {
        metadata["project_id"] = json!(project.to_string());
    }
    metadata
}

/// Writes `plan` into `store`, showing progress on a terminal. Returns the number of
/// events written.
pub async fn seed(store: &EventStore, plan: SeedPlan) -> anyhow::Result<u64> {
    use commandcenter_event_store::{claim_batch, AggregateEvents, NewEvent};
    use std::io::IsTerminal;

    let run = Uuid::now_v7().simple().to_string()[..8].to_string();
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(plan.events());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "seeding [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut written = 0u64;
    let mut last_log = std::time::Instant::now();
    let total_aggregates = plan.technologies + plan.jobs;
    let mut next = 0u64;
    while next < total_aggregates {
        let end = (next + SEED_BATCH).min(total_aggregates);
        let mut batch = Vec::with_capacity((end - next) as usize);
        let mut claims = Vec::new();
        for n in next..end {
            if n < plan.technologies {
                let (id, commands) = seeded_technology(&run, n, &plan)?;
                let (state, events) = decide::<Technology>(commands).await?;
                claims.extend(state.claims().into_iter().map(|c| (c, id.clone())));
                batch.push(AggregateEvents {
                    aggregate_type: "technology".into(),
                    aggregate_id: id,
                    expected_version: 0,
                    events: events
                        .iter()
                        .map(NewEvent::from_domain)
                        .collect::<Result<_, _>>()?,
                    metadata: seed_metadata(&run, state.project_id()),
                });
            } else {
                let (id, commands) = seeded_job(n - plan.technologies, &plan)?;
                let (state, events) = decide::<Job>(commands).await?;
                batch.push(AggregateEvents {
                    aggregate_type: "job".into(),
                    aggregate_id: id,
                    expected_version: 0,
                    events: events
                        .iter()
                        .map(NewEvent::from_domain)
                        .collect::<Result<_, _>>()?,
                    metadata: seed_metadata(&run, state.project_id()),
                });
            }
        }
        let mut tx = store.begin().await?;
        let n = store.append_batch(&mut tx, &batch).await?;
        if !claims.is_empty() {
            claim_batch(&mut tx, &claims).await?;
        }
        store.commit(tx).await?;
        written += n;
        bar.inc(n);
        if bar.is_hidden() && last_log.elapsed() >= std::time::Duration::from_secs(5) {
            tracing::info!(written, total = plan.events(), "seeding");
            last_log = std::time::Instant::now();
        }
        next = end;
    }
    bar.finish_and_clear();
    // A bulk load leaves the planner's statistics far behind; readers of the feed need
    // them current to stay on the (tx_id, global_position) index.
    sqlx::query("ANALYZE events").execute(store.pool()).await?;
    sqlx::query("ANALYZE unique_claims")
        .execute(store.pool())
        .await?;
    Ok(written)
}
