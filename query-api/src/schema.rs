//! The shapes of the read side's answers, for the OpenAPI document. Most read answers are
//! JSON that PostgreSQL renders from a read model's row (`to_jsonb`) or that a handler
//! assembles with `json!`, so no Rust type serializes them: these types describe the
//! same shapes, field for field, and are only ever used as schemas. A column added to a
//! view, or a field to an answer, is added here too: `scripts/schemathesis.sh` checks
//! real answers against these schemas.
#![allow(dead_code)]

use std::collections::BTreeMap;

use commandcenter_domain::job::{JobRecord, JobStatus};
use commandcenter_domain::technology::{TechnologyDomain, TechnologyRecord, TechnologyStatus};
use commandcenter_event_store::audit::VerifyReport;
use commandcenter_event_store::Position;
use serde::Serialize;
use utoipa::ToSchema;

/// A technology as the read model holds it (a row of `technology_view`), or, with a
/// time-travel parameter, as it was then (with `as_of`).
#[derive(Serialize, ToSchema)]
pub struct TechnologyView {
    #[serde(flatten)]
    record: TechnologyRecord,
    /// The technology's version: the number of its events.
    #[schema(minimum = 1)]
    version: i64,
    /// The position of its last event.
    position: Position,
    /// Only with a time-travel parameter: what state this is.
    #[schema(required = false)]
    as_of: Option<AsOfState>,
}

/// What a time-travel answer is: the state after `version`, rebuilt from the events.
#[derive(Serialize, ToSchema)]
pub struct AsOfState {
    /// The version the state is at.
    version: i64,
    /// The position of the event at that version.
    position: Position,
    /// `live`, or `deleted` when the aggregate had been deleted by then.
    #[schema(value_type = Lifecycle)]
    lifecycle: String,
    /// Always `event-store`.
    source: String,
}

/// Whether an aggregate existed or had been deleted at a moment.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// It existed.
    Live,
    /// It had been deleted.
    Deleted,
}

/// A page of technologies.
#[derive(Serialize, ToSchema)]
pub struct TechnologyList {
    /// The technologies of the page.
    items: Vec<TechnologyView>,
    /// How many technologies match the filters. Exact, except for a search matching more
    /// than 1,000 technologies: then an estimate (more than 1,000), and
    /// `total_is_estimate` is true.
    #[schema(minimum = 0)]
    total: i64,
    /// True when `total` is an estimate (a search with more than 1,000 matches).
    total_is_estimate: bool,
    /// The page number for offset pages: `skip / limit + 1`.
    #[schema(minimum = 1)]
    page: i64,
    /// The `limit` in force.
    #[schema(minimum = 1, maximum = 1000)]
    page_size: i64,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
    /// The read model's checkpoint the page reflects.
    position: Position,
}

/// A job as the read model holds it (a row of `job_view`), or, with a time-travel
/// parameter, as it was then (with `as_of`; without the view's own columns).
#[derive(Serialize, ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    record: JobRecord,
    /// Seconds from start to end of a finished job.
    #[schema(required = false, minimum = 0)]
    duration_seconds: Option<f64>,
    /// True once nothing more will happen to the job.
    #[schema(required = false)]
    is_terminal: bool,
    /// The job's version: the number of its events.
    #[schema(minimum = 1)]
    version: i64,
    /// The position of its last event.
    position: Position,
    /// The position of its creation: the order of job pages.
    #[schema(required = false)]
    created_position: Position,
    /// Only with a time-travel parameter: what state this is.
    #[schema(required = false)]
    as_of: Option<AsOfState>,
}

/// `GET /api/v1/jobs/{id}/progress`.
#[derive(Serialize, ToSchema)]
pub struct JobProgress {
    /// The job's id.
    job_id: String,
    status: JobStatus,
    #[schema(value_type = commandcenter_domain::values::Progress)]
    progress: i64,
    /// What the current attempt is doing.
    current_step: Option<String>,
    /// True once nothing more will happen to the job.
    is_terminal: bool,
    /// True while the job is pending or running.
    is_active: bool,
    /// When it was created.
    created_at: chrono::DateTime<chrono::Utc>,
    /// When the latest attempt started.
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it reached a terminal status.
    completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Seconds from start to end of a finished job.
    #[schema(minimum = 0)]
    duration_seconds: Option<f64>,
}

/// Jobs counted by status and type, from the precomputed counts.
#[derive(Serialize, ToSchema)]
pub struct JobSummary {
    /// All jobs.
    #[schema(minimum = 0)]
    total: i64,
    /// Jobs per status (every status named, 0 included).
    by_status: BTreeMap<JobStatus, i64>,
    /// Jobs per type (only types with jobs).
    by_type: BTreeMap<String, i64>,
    /// completed / (completed + failed) as a percentage, from 0 to 100 (as the previous
    /// API answered); null before any job ended so.
    #[schema(minimum = 0, maximum = 100)]
    success_rate: Option<f64>,
    /// The same as a fraction, from 0 to 1.
    #[schema(minimum = 0, maximum = 1)]
    success_fraction: Option<f64>,
    /// Pending and running jobs.
    #[schema(minimum = 0)]
    active_jobs: i64,
    /// Mean duration of finished jobs; null before any.
    #[schema(minimum = 0)]
    average_duration_seconds: Option<f64>,
}

/// `GET /api/v1/jobs/statistics/summary`.
#[derive(Serialize, ToSchema)]
pub struct JobStatistics {
    #[serde(flatten)]
    summary: JobSummary,
    /// The read model's checkpoint the counts reflect.
    position: Position,
}

/// The jobs part of the dashboard.
#[derive(Serialize, ToSchema)]
pub struct DashboardJobs {
    #[serde(flatten)]
    summary: JobSummary,
    /// Pending and running jobs.
    #[schema(minimum = 0)]
    active: i64,
    /// Failures in the current hour and the 24 before it.
    #[schema(minimum = 0)]
    failed_last_24h: i64,
}

/// One cell of the radar: technologies of a domain in a status.
#[derive(Serialize, ToSchema)]
pub struct RadarCell {
    domain: TechnologyDomain,
    status: TechnologyStatus,
    /// At least 1 (empty cells are left out).
    #[schema(minimum = 1)]
    count: i64,
}

/// The technologies part of the dashboard.
#[derive(Serialize, ToSchema)]
pub struct DashboardTechnologies {
    /// All technologies.
    #[schema(minimum = 0)]
    total: i64,
    /// Technologies per domain (only domains with technologies).
    by_domain: BTreeMap<TechnologyDomain, i64>,
    /// Technologies per status (only statuses with technologies).
    by_status: BTreeMap<TechnologyStatus, i64>,
    /// Technologies per domain and status.
    by_domain_status: Vec<RadarCell>,
    /// Technologies of priority 4 or 5, highest priority and relevance first, at most 50.
    #[schema(max_items = 50)]
    high_priority: Vec<TechnologyBrief>,
}

/// A technology named in the dashboard.
#[derive(Serialize, ToSchema)]
pub struct TechnologyBrief {
    /// Its id.
    id: String,
    #[schema(value_type = commandcenter_domain::values::Title)]
    title: String,
    status: TechnologyStatus,
    domain: TechnologyDomain,
    #[schema(value_type = commandcenter_domain::values::Priority)]
    priority: i64,
    #[schema(value_type = commandcenter_domain::values::Score)]
    relevance_score: i64,
    /// When any event last touched it.
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// A recently changed technology.
#[derive(Serialize, ToSchema)]
pub struct RecentTechnology {
    /// Its id.
    id: String,
    #[schema(value_type = commandcenter_domain::values::Title)]
    title: String,
    status: TechnologyStatus,
    domain: TechnologyDomain,
    #[schema(value_type = commandcenter_domain::values::Priority)]
    priority: i64,
    /// When any event last touched it.
    updated_at: chrono::DateTime<chrono::Utc>,
    /// The position of its last event.
    position: Position,
}

/// A recently changed job.
#[derive(Serialize, ToSchema)]
pub struct RecentJob {
    /// Its id.
    id: String,
    job_type: commandcenter_domain::job::JobType,
    status: JobStatus,
    #[schema(value_type = commandcenter_domain::values::Progress)]
    progress: i64,
    /// When any event last touched it.
    updated_at: chrono::DateTime<chrono::Utc>,
    /// The position of its last event.
    position: Position,
}

/// `GET /api/v1/dashboard/recent-activity`.
#[derive(Serialize, ToSchema)]
pub struct RecentActivity {
    /// The project asked for; null for every project the key sees.
    #[schema(minimum = 1)]
    project_id: Option<i64>,
    /// Most recently changed first.
    recent_technologies: Vec<RecentTechnology>,
    /// Most recently changed first.
    recent_jobs: Vec<RecentJob>,
    /// The older of the two read models' checkpoints.
    position: Position,
}

/// `GET /api/v1/dashboard/stats`.
#[derive(Serialize, ToSchema)]
pub struct DashboardStats {
    /// The project asked for; null for every project the key sees.
    #[schema(minimum = 1)]
    project_id: Option<i64>,
    technologies: DashboardTechnologies,
    jobs: DashboardJobs,
    /// The older of the two read models' checkpoints.
    position: Position,
}

/// `GET /api/v1/audit/verify`.
#[derive(Serialize, ToSchema)]
pub struct Verification {
    /// True when no link is broken (and the checkpoints hold).
    passed: bool,
    #[serde(flatten)]
    report: VerifyReport,
}

/// The orders of a technology page: a key, ascending, or with `-` descending. `rank` and
/// `-rank` (by search relevance) are accepted with `search` only, so are left out here.
#[derive(Serialize, ToSchema)]
pub enum TechnologySort {
    /// Priority, then relevance score, then `updated_at`, lowest first.
    #[serde(rename = "importance")]
    Importance,
    /// Highest priority, then relevance, then most recent first (the default, the previous
    /// API's order).
    #[serde(rename = "-importance")]
    ImportanceDesc,
    /// Oldest change first.
    #[serde(rename = "updated_at")]
    UpdatedAt,
    /// Newest change first.
    #[serde(rename = "-updated_at")]
    UpdatedAtDesc,
    /// Oldest first.
    #[serde(rename = "created_at")]
    CreatedAt,
    /// Newest first (unchanging: a cursor walk over it sees each row once).
    #[serde(rename = "-created_at")]
    CreatedAtDesc,
    /// Lowest priority first.
    #[serde(rename = "priority")]
    Priority,
    /// Highest priority first.
    #[serde(rename = "-priority")]
    PriorityDesc,
    /// Least relevant first.
    #[serde(rename = "relevance_score")]
    Relevance,
    /// Most relevant first.
    #[serde(rename = "-relevance_score")]
    RelevanceDesc,
    /// By title, A to Z.
    #[serde(rename = "title")]
    Title,
    /// By title, Z to A.
    #[serde(rename = "-title")]
    TitleDesc,
}
