//! `POST/PATCH/DELETE /api/v1/technologies[/{id}]`: request bodies parsed into validated
//! domain values, then run as technology commands.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use commandcenter_domain::serde_helpers::double_option;
use commandcenter_domain::technology::{
    CostTier, Dependencies, IntegrationDifficulty, MaturityLevel, StatusChange, Technology,
    TechnologyChanges, TechnologyCommand, TechnologyDomain, TechnologyFields, TechnologyRecord,
    TechnologyStatus, DEFAULT_PRIORITY, DEFAULT_RELEVANCE,
};
use commandcenter_domain::values::{
    bounded_text, AggregateId, HttpUrl, NonNegative, Priority, ProjectId, Score, Tags, Title,
    MAX_LABEL_LEN, MAX_TEXT_LEN,
};
use commandcenter_domain::ValidationError;
use commandcenter_executor::clock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::extract::{CommandContext, JsonBody};
use crate::forms::{read_only, required_version, ListForm};
use crate::reply::Reply;
use crate::ApiError;
use crate::CommandState;
use commandcenter_executor::{CommandError, Outcome};

/// Most entries in `dependencies` or `alternatives`.
pub const MAX_LINKS: usize = 100;

/// A technology as the write API returns it: the record, its version (also in `ETag`)
/// and the position of the write (also in `X-CC-Position`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Technology)]
pub struct TechnologyBody<'a> {
    #[serde(flatten)]
    record: &'a TechnologyRecord,
    /// The technology's version: the number of its events.
    #[schema(minimum = 1)]
    version: i64,
    /// The position of the write; pass it as `X-CC-Min-Position` to read it back.
    #[schema(value_type = commandcenter_event_store::Position)]
    position: String,
}

fn technology_reply(
    status: StatusCode,
    outcome: &Outcome<Technology>,
) -> Result<Reply, CommandError> {
    let record = outcome.state.record().ok_or(CommandError::Invariant(
        "technology has no record after a command",
    ))?;
    let body = TechnologyBody {
        record,
        version: outcome.committed.version,
        position: outcome.committed.position.to_string(),
    };
    Reply::json(status, &outcome.committed, &body)
}

/// The body of `POST /api/v1/technologies`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTechnologyBody {
    /// Defaults to the key's project; required with a deployment-wide key.
    #[schema(value_type = Option<ProjectId>)]
    project_id: Option<i64>,
    #[schema(value_type = Title)]
    title: String,
    #[schema(value_type = Option<commandcenter_domain::values::schema::Label>)]
    vendor: Option<String>,
    /// Default `other`.
    #[schema(value_type = Option<TechnologyDomain>)]
    domain: Option<String>,
    /// Default `discovery`.
    #[schema(value_type = Option<TechnologyStatus>)]
    status: Option<String>,
    /// Default 50.
    #[schema(value_type = Option<Score>)]
    relevance_score: Option<i64>,
    /// Default 3.
    #[schema(value_type = Option<Priority>)]
    priority: Option<i64>,
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    description: Option<String>,
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    notes: Option<String>,
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    use_cases: Option<String>,
    #[schema(value_type = Option<HttpUrl>)]
    documentation_url: Option<String>,
    #[schema(value_type = Option<HttpUrl>)]
    repository_url: Option<String>,
    #[schema(value_type = Option<HttpUrl>)]
    website_url: Option<String>,
    /// An array, or a comma-separated string (the previous API's form).
    tags: Option<ListForm>,
    #[schema(value_type = Option<NonNegative>)]
    latency_ms: Option<f64>,
    #[schema(value_type = Option<NonNegative>)]
    throughput_qps: Option<f64>,
    #[schema(value_type = Option<IntegrationDifficulty>)]
    integration_difficulty: Option<String>,
    #[schema(minimum = 0, maximum = 36500)]
    integration_time_estimate_days: Option<i64>,
    #[schema(value_type = Option<MaturityLevel>)]
    maturity_level: Option<String>,
    #[schema(value_type = Option<Score>)]
    stability_score: Option<i64>,
    #[schema(value_type = Option<CostTier>)]
    cost_tier: Option<String>,
    #[schema(value_type = Option<NonNegative>)]
    cost_monthly_usd: Option<f64>,
    /// When it was last mentioned on Hacker News (RFC 3339).
    last_hn_mention: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// The mean score of its Hacker News mentions.
    #[schema(value_type = Option<NonNegative>)]
    hn_score_avg: Option<f64>,
    /// Stars of its GitHub repository.
    #[schema(minimum = 0, maximum = 4294967295_i64)]
    github_stars: Option<i64>,
    /// When its GitHub repository last had a commit (RFC 3339).
    github_last_commit: Option<chrono::DateTime<chrono::FixedOffset>>,
    #[schema(value_type = Option<commandcenter_domain::values::schema::Dependencies>)]
    dependencies: Option<Dependencies>,
    /// Technology ids: an array, or a comma-separated string.
    alternatives: Option<ListForm>,
}

fn label(field: &str, value: &str) -> Result<String, ValidationError> {
    bounded_text(field, value, 1, MAX_LABEL_LEN)
}

fn text(field: &str, value: &str) -> Result<String, ValidationError> {
    bounded_text(field, value, 0, MAX_TEXT_LEN)
}

/// A time sent with any offset, kept in UTC to the microsecond (as every stored time).
fn utc(at: chrono::DateTime<chrono::FixedOffset>) -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    at.with_timezone(&chrono::Utc).trunc_subsecs(6)
}

fn stars(field: &str, value: i64) -> Result<u32, ValidationError> {
    u32::try_from(value)
        .map_err(|_| ValidationError::new(field, "must be a whole number from 0 to 4294967295"))
}

fn days(field: &str, value: i64) -> Result<u32, ValidationError> {
    u32::try_from(value)
        .ok()
        .filter(|d| *d <= 36_500)
        .ok_or_else(|| {
            ValidationError::new(field, "must be a whole number of days from 0 to 36500")
        })
}

/// The most bytes `dependencies` may take as JSON.
pub const MAX_DEPENDENCIES_BYTES: usize = 16 * 1024;

/// Any JSON object (the previous API's form), bounded; keys that are technology ids (UUIDs)
/// are normalized like every other link so a self-reference is caught whatever its case.
fn dependencies(value: Dependencies) -> Result<Dependencies, ValidationError> {
    if value.len() > MAX_LINKS {
        return Err(ValidationError::new(
            "dependencies",
            format!("must have at most {MAX_LINKS} entries"),
        ));
    }
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_DEPENDENCIES_BYTES {
        return Err(ValidationError::new(
            "dependencies",
            format!("must take at most {MAX_DEPENDENCIES_BYTES} bytes as JSON"),
        ));
    }
    let mut normalized = Dependencies::new();
    for (key, entry) in value {
        let field = format!("dependencies.{key}");
        let key = match Uuid::parse_str(key.trim()) {
            Ok(id) => id.hyphenated().to_string(),
            Err(_) => label(&field, &key)?,
        };
        if normalized.insert(key, entry).is_some() {
            return Err(ValidationError::new(
                &field,
                "names the same technology as another key",
            ));
        }
    }
    Ok(normalized)
}

fn alternatives(value: Vec<String>) -> Result<Vec<String>, ValidationError> {
    if value.len() > MAX_LINKS {
        return Err(ValidationError::new(
            "alternatives",
            format!("must have at most {MAX_LINKS} entries"),
        ));
    }
    let mut ids: Vec<String> = Vec::with_capacity(value.len());
    for (i, id) in value.iter().enumerate() {
        let id = technology_id(&format!("alternatives[{i}]"), id)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// A technology id as written in links: a UUID, normalized to lower-case hyphenated form.
fn technology_id(field: &str, value: &str) -> Result<String, ValidationError> {
    Uuid::parse_str(value.trim())
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ValidationError::new(field, "must be a technology id (a UUID)"))
}

fn opt<T, U>(
    value: Option<T>,
    parse: impl FnOnce(T) -> Result<U, ValidationError>,
) -> Result<Option<U>, ValidationError> {
    value.map(parse).transpose()
}

impl CreateTechnologyBody {
    /// The fields it names, each validated, with defaults for the ones it leaves out (the
    /// benchmark's bare-library ceiling builds its commands with it too).
    pub fn parse(self) -> Result<TechnologyFields, ValidationError> {
        let fields = TechnologyFields {
            title: Title::parse("title", &self.title)?,
            vendor: opt(self.vendor, |v| label("vendor", &v))?,
            domain: opt(self.domain, |v| TechnologyDomain::parse("domain", &v))?
                .unwrap_or_default(),
            status: opt(self.status, |v| TechnologyStatus::parse("status", &v))?
                .unwrap_or_default(),
            relevance_score: Score::parse(
                "relevance_score",
                self.relevance_score.unwrap_or(i64::from(DEFAULT_RELEVANCE)),
            )?,
            priority: Priority::parse(
                "priority",
                self.priority.unwrap_or(i64::from(DEFAULT_PRIORITY)),
            )?,
            description: opt(self.description, |v| text("description", &v))?,
            notes: opt(self.notes, |v| text("notes", &v))?,
            use_cases: opt(self.use_cases, |v| text("use_cases", &v))?,
            documentation_url: opt(self.documentation_url, |v| {
                HttpUrl::parse("documentation_url", &v)
            })?,
            repository_url: opt(self.repository_url, |v| {
                HttpUrl::parse("repository_url", &v)
            })?,
            website_url: opt(self.website_url, |v| HttpUrl::parse("website_url", &v))?,
            tags: Tags::parse(
                "tags",
                &self.tags.map(ListForm::into_vec).unwrap_or_default(),
            )?,
            latency_ms: opt(self.latency_ms, |v| NonNegative::parse("latency_ms", v))?,
            throughput_qps: opt(self.throughput_qps, |v| {
                NonNegative::parse("throughput_qps", v)
            })?,
            integration_difficulty: opt(self.integration_difficulty, |v| {
                IntegrationDifficulty::parse("integration_difficulty", &v)
            })?,
            integration_time_estimate_days: opt(self.integration_time_estimate_days, |v| {
                days("integration_time_estimate_days", v)
            })?,
            maturity_level: opt(self.maturity_level, |v| {
                MaturityLevel::parse("maturity_level", &v)
            })?,
            stability_score: opt(self.stability_score, |v| Score::parse("stability_score", v))?,
            cost_tier: opt(self.cost_tier, |v| CostTier::parse("cost_tier", &v))?,
            cost_monthly_usd: opt(self.cost_monthly_usd, |v| {
                NonNegative::parse("cost_monthly_usd", v)
            })?,
            dependencies: dependencies(self.dependencies.unwrap_or_default())?,
            alternatives: alternatives(
                self.alternatives
                    .map(ListForm::into_vec)
                    .unwrap_or_default(),
            )?,
            last_hn_mention: self.last_hn_mention.map(utc),
            hn_score_avg: opt(self.hn_score_avg, |v| NonNegative::parse("hn_score_avg", v))?,
            github_stars: opt(self.github_stars, |v| stars("github_stars", v))?,
            github_last_commit: self.github_last_commit.map(utc),
        };
        Ok(fields)
    }
}

/// The body of `PATCH /api/v1/technologies/{id}`: any subset of fields. Nullable fields
/// accept `null` to clear them; the others refuse `null` (the schema says which).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTechnologyBody {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Title)]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<commandcenter_domain::values::schema::Label>)]
    vendor: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = TechnologyDomain)]
    domain: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = TechnologyStatus)]
    status: Option<Option<String>>,
    #[serde(default)]
    /// Why the status changes; only with `status`.
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    status_reason: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Score)]
    relevance_score: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Priority)]
    priority: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    notes: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    use_cases: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<HttpUrl>)]
    documentation_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<HttpUrl>)]
    repository_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<HttpUrl>)]
    website_url: Option<Option<String>>,
    /// An array, or a comma-separated string (the previous API's form).
    #[serde(default, deserialize_with = "double_option")]
    tags: Option<Option<ListForm>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NonNegative>)]
    latency_ms: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NonNegative>)]
    throughput_qps: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<IntegrationDifficulty>)]
    integration_difficulty: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(minimum = 0, maximum = 36500)]
    integration_time_estimate_days: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<MaturityLevel>)]
    maturity_level: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Score>)]
    stability_score: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<CostTier>)]
    cost_tier: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NonNegative>)]
    cost_monthly_usd: Option<Option<f64>>,
    /// When it was last mentioned on Hacker News (RFC 3339); `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    last_hn_mention: Option<Option<chrono::DateTime<chrono::FixedOffset>>>,
    /// The mean score of its Hacker News mentions; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NonNegative>)]
    hn_score_avg: Option<Option<f64>>,
    /// Stars of its GitHub repository; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(minimum = 0, maximum = 4294967295_i64)]
    github_stars: Option<Option<i64>>,
    /// When its GitHub repository last had a commit (RFC 3339); `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    github_last_commit: Option<Option<chrono::DateTime<chrono::FixedOffset>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = commandcenter_domain::values::schema::Dependencies)]
    dependencies: Option<Option<Dependencies>>,
    /// Technology ids: an array, or a comma-separated string.
    #[serde(default, deserialize_with = "double_option")]
    alternatives: Option<Option<ListForm>>,
    /// Read-only, accepted when a client sends back an object it read: must be this
    /// technology's id.
    #[schema(value_type = Option<String>)]
    id: Option<Value>,
    /// Read-only: must be the technology's project.
    #[schema(value_type = Option<i64>)]
    project_id: Option<Value>,
    /// Read-only: must be when the technology was created.
    #[schema(value_type = Option<String>)]
    created_at: Option<Value>,
    /// Read-only: the version read; a stale one is a 412, as with `If-Match`.
    #[schema(value_type = Option<i64>)]
    version: Option<Value>,
    /// Read-only, ignored (it describes the last write).
    #[schema(value_type = Option<String>)]
    updated_at: Option<Value>,
    /// Read-only, ignored (it describes the last write).
    #[schema(value_type = Option<String>)]
    position: Option<Value>,
}

/// The read-only fields of a `PATCH` body, as the client read them.
struct Echo {
    id: Option<Value>,
    project_id: Option<Value>,
    created_at: Option<Value>,
    version: Option<Value>,
}

impl UpdateTechnologyBody {
    /// Takes the read-only fields out of the body.
    fn echo(&mut self) -> Echo {
        // Ignored: they describe the last write, and `version` covers staleness.
        let _ = (self.updated_at.take(), self.position.take());
        Echo {
            id: self.id.take(),
            project_id: self.project_id.take(),
            created_at: self.created_at.take(),
            version: self.version.take(),
        }
    }
}

impl Echo {
    /// Checks the identity fields against technology `id` (loaded only when one was
    /// sent) and returns the version the write requires: `If-Match`, else `version`.
    async fn check(
        self,
        state: &CommandState,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Option<i64>, ApiError> {
        if let Some(sent) = &self.id {
            if sent.as_str() != Some(id) {
                return Err(read_only("id", "names another technology").into());
            }
        }
        if self.project_id.is_some() || self.created_at.is_some() {
            if AggregateId::parse(id).is_none() {
                return Err(ApiError::NotFound("technology"));
            }
            let loaded = state.store.load::<Technology>(id).await?;
            if let Some(record) = loaded.aggregate.record() {
                if let Some(sent) = &self.project_id {
                    if sent.as_i64() != Some(record.project_id.get()) {
                        return Err(read_only(
                            "project_id",
                            "differs from the technology's project",
                        )
                        .into());
                    }
                }
                if let Some(sent) = &self.created_at {
                    let same = sent
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t == record.created_at);
                    if !same {
                        return Err(
                            read_only("created_at", "differs from when it was created").into()
                        );
                    }
                }
            }
        }
        Ok(required_version(if_match, self.version)?)
    }
}

/// A field that must hold a value when present: `null` is refused.
fn required<T, U>(
    field: &str,
    value: Option<Option<T>>,
    parse: impl FnOnce(T) -> Result<U, ValidationError>,
) -> Result<Option<U>, ValidationError> {
    match value {
        None => Ok(None),
        Some(None) => Err(ValidationError::new(field, "cannot be null")),
        Some(Some(v)) => parse(v).map(Some),
    }
}

/// A field that may be cleared with `null`.
fn nullable<T, U>(
    value: Option<Option<T>>,
    parse: impl FnOnce(T) -> Result<U, ValidationError>,
) -> Result<Option<Option<U>>, ValidationError> {
    match value {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(v)) => parse(v).map(|u| Some(Some(u))),
    }
}

impl UpdateTechnologyBody {
    fn parse(self) -> Result<(TechnologyChanges, Option<StatusChange>), ValidationError> {
        let status = required("status", self.status, |v| {
            TechnologyStatus::parse("status", &v)
        })?;
        let reason = opt(self.status_reason, |v| text("status_reason", &v))?;
        if reason.is_some() && status.is_none() {
            return Err(ValidationError::new(
                "status_reason",
                "is only accepted with status",
            ));
        }
        let changes = TechnologyChanges {
            title: required("title", self.title, |v| Title::parse("title", &v))?,
            domain: required("domain", self.domain, |v| {
                TechnologyDomain::parse("domain", &v)
            })?,
            relevance_score: required("relevance_score", self.relevance_score, |v| {
                Score::parse("relevance_score", v)
            })?,
            priority: required("priority", self.priority, |v| {
                Priority::parse("priority", v)
            })?,
            tags: required("tags", self.tags, |v| Tags::parse("tags", &v.into_vec()))?,
            // `null` empties them, as the previous API's default was null.
            dependencies: self
                .dependencies
                .map(|sent| dependencies(sent.unwrap_or_default()))
                .transpose()?,
            alternatives: required("alternatives", self.alternatives, |v: ListForm| {
                alternatives(v.into_vec())
            })?,
            vendor: nullable(self.vendor, |v| label("vendor", &v))?,
            description: nullable(self.description, |v| text("description", &v))?,
            notes: nullable(self.notes, |v| text("notes", &v))?,
            use_cases: nullable(self.use_cases, |v| text("use_cases", &v))?,
            documentation_url: nullable(self.documentation_url, |v| {
                HttpUrl::parse("documentation_url", &v)
            })?,
            repository_url: nullable(self.repository_url, |v| {
                HttpUrl::parse("repository_url", &v)
            })?,
            website_url: nullable(self.website_url, |v| HttpUrl::parse("website_url", &v))?,
            latency_ms: nullable(self.latency_ms, |v| NonNegative::parse("latency_ms", v))?,
            throughput_qps: nullable(self.throughput_qps, |v| {
                NonNegative::parse("throughput_qps", v)
            })?,
            integration_difficulty: nullable(self.integration_difficulty, |v| {
                IntegrationDifficulty::parse("integration_difficulty", &v)
            })?,
            integration_time_estimate_days: nullable(self.integration_time_estimate_days, |v| {
                days("integration_time_estimate_days", v)
            })?,
            maturity_level: nullable(self.maturity_level, |v| {
                MaturityLevel::parse("maturity_level", &v)
            })?,
            stability_score: nullable(self.stability_score, |v| {
                Score::parse("stability_score", v)
            })?,
            cost_tier: nullable(self.cost_tier, |v| CostTier::parse("cost_tier", &v))?,
            cost_monthly_usd: nullable(self.cost_monthly_usd, |v| {
                NonNegative::parse("cost_monthly_usd", v)
            })?,
            last_hn_mention: self.last_hn_mention.map(|v| v.map(utc)),
            hn_score_avg: nullable(self.hn_score_avg, |v| NonNegative::parse("hn_score_avg", v))?,
            github_stars: nullable(self.github_stars, |v| stars("github_stars", v))?,
            github_last_commit: self.github_last_commit.map(|v| v.map(utc)),
        };
        Ok((
            changes,
            status.map(|status| StatusChange { status, reason }),
        ))
    }
}

/// Runs a command on technology `id`, answering with `respond`.
async fn run(
    state: &CommandState,
    id: &str,
    command: TechnologyCommand,
    context: CommandContext,
    body: &[u8],
    respond: impl Fn(&Outcome<Technology>) -> Result<Reply, CommandError> + Send + Sync + 'static,
) -> Result<Response, ApiError> {
    crate::run::<Technology>(state, id, "technology", command, context, body, respond).await
}

/// `POST /api/v1/technologies` → 201 with the technology as written.
#[utoipa::path(post, path = "/api/v1/technologies", tag = "technologies", request_body = CreateTechnologyBody, params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request"), ("X-Project-ID" = Option<i64>, Header, description = "The project of the new resource when the body names none (the previous API's header); must agree with the body and the key")), responses((status = 201, description = "The technology as written, with version and position (also in ETag and X-CC-Position)", body = TechnologyBody), (status = 400, description = "Malformed JSON, parameter or header (problem+json)"), (status = 404, description = "Unknown id (problem+json)"), (status = 409, description = "Conflicts with the current state or a concurrent write (problem+json)"), (status = 412, description = "Stale If-Match (problem+json)"), (status = 413, description = "Body too large (problem+json)"), (status = 415, description = "Body is not JSON (problem+json)"), (status = 422, description = "Invalid field, or Idempotency-Key reused with another request (problem+json naming the field)")))]
#[tracing::instrument(skip_all, fields(request_id = %context.meta.request_id, correlation_id = %context.meta.correlation_id))]
pub async fn create_technology(
    State(state): State<CommandState>,
    context: CommandContext,
    body: JsonBody<CreateTechnologyBody>,
) -> Result<Response, ApiError> {
    let project_id = context.project_for(body.value.project_id).await?;
    let fields = body.value.parse()?;
    let id = Uuid::now_v7().to_string();
    let command = TechnologyCommand::CreateTechnology {
        id: id.clone(),
        project_id,
        fields: Box::new(fields),
        at: clock::now(),
    };
    let location = format!("/api/v1/technologies/{id}");
    run(&state, &id, command, context, &body.raw, move |outcome| {
        Ok(technology_reply(StatusCode::CREATED, outcome)?
            .with_header("location", location.clone()))
    })
    .await
}

/// `PATCH /api/v1/technologies/{id}` → 200 with the technology as written.
#[utoipa::path(patch, path = "/api/v1/technologies/{id}", tag = "technologies", request_body = UpdateTechnologyBody, params(("id" = String, Path, description = "Technology id"), ("If-Match" = Option<String>, Header, description = "The version the write requires (ETag)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")), responses((status = 200, description = "The technology as written, with version and position", body = TechnologyBody), (status = 400, description = "Malformed JSON, parameter or header (problem+json)"), (status = 404, description = "Unknown id (problem+json)"), (status = 409, description = "Conflicts with the current state or a concurrent write (problem+json)"), (status = 412, description = "Stale If-Match (problem+json)"), (status = 413, description = "Body too large (problem+json)"), (status = 415, description = "Body is not JSON (problem+json)"), (status = 422, description = "Invalid field, or Idempotency-Key reused with another request (problem+json naming the field)")))]
#[tracing::instrument(skip_all, fields(request_id = %context.meta.request_id, correlation_id = %context.meta.correlation_id, technology_id = %id))]
pub async fn update_technology(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    mut context: CommandContext,
    body: JsonBody<UpdateTechnologyBody>,
) -> Result<Response, ApiError> {
    let JsonBody {
        value: mut fields,
        raw,
    } = body;
    context.if_match = fields.echo().check(&state, &id, context.if_match).await?;
    let (changes, status) = fields.parse()?;
    let command = TechnologyCommand::UpdateTechnology {
        changes: Box::new(changes),
        status,
        at: clock::now(),
    };
    run(&state, &id, command, context, &raw, move |outcome| {
        technology_reply(StatusCode::OK, outcome)
    })
    .await
}

/// `DELETE /api/v1/technologies/{id}` → 204.
#[utoipa::path(delete, path = "/api/v1/technologies/{id}", tag = "technologies", params(("id" = String, Path, description = "Technology id"), ("If-Match" = Option<String>, Header, description = "The version the write requires (ETag)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")), responses((status = 204, description = "Deleted; ETag and X-CC-Position name the new version and position"), (status = 400, description = "Malformed JSON, parameter or header (problem+json)"), (status = 404, description = "Unknown id (problem+json)"), (status = 409, description = "Conflicts with the current state or a concurrent write (problem+json)"), (status = 412, description = "Stale If-Match (problem+json)"), (status = 413, description = "Body too large (problem+json)"), (status = 415, description = "Body is not JSON (problem+json)"), (status = 422, description = "Invalid field, or Idempotency-Key reused with another request (problem+json naming the field)")))]
#[tracing::instrument(skip_all, fields(request_id = %context.meta.request_id, correlation_id = %context.meta.correlation_id, technology_id = %id))]
pub async fn delete_technology(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    context: CommandContext,
) -> Result<Response, ApiError> {
    let command = TechnologyCommand::DeleteTechnology { at: clock::now() };
    run(&state, &id, command, context, b"", |outcome| {
        Ok(Reply::empty(StatusCode::NO_CONTENT, &outcome.committed))
    })
    .await
}
