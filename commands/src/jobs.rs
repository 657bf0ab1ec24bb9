//! `POST/PATCH/DELETE /api/v1/jobs[/{id}]`, `POST /api/v1/jobs/{id}/dispatch` and
//! `POST /api/v1/jobs/{id}/cancel`: request bodies parsed into validated domain values,
//! then run as job commands.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use commandcenter_domain::job::{
    parse_typed_parameters, Job, JobCommand, JobParameters, JobPatch, JobRecord, JobStatus,
    JobType, DEFAULT_MAX_ATTEMPTS, JOB_IDENTITY_FIELDS, MAX_ATTEMPTS_LIMIT,
    MAX_DISPATCH_DELAY_SECONDS,
};
use commandcenter_domain::values::{
    bounded_text, Progress, ProjectId, Tags, MAX_LABEL_LEN, MAX_TEXT_LEN,
};
use commandcenter_domain::ValidationError;
use commandcenter_executor::clock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::extract::{CommandContext, JsonBody};
use crate::forms::{required_version, TagsForm, TextForm};
use crate::reply::Reply;
use crate::ApiError;
use crate::CommandState;
use commandcenter_executor::{CommandError, Outcome};

/// A job as the write API returns it: the record, whether it is finished, its version
/// (also in `ETag`) and the position of the write (also in `X-CC-Position`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobBody<'a> {
    #[serde(flatten)]
    record: &'a JobRecord,
    /// True once nothing more will happen to the job.
    is_terminal: bool,
    /// `completed_at - started_at` once it has ended, as the read side answers.
    duration_seconds: Option<f64>,
    /// The job's version: the number of its events.
    #[schema(minimum = 1)]
    version: i64,
    /// The position of the write; pass it as `X-CC-Min-Position` to read it back.
    #[schema(value_type = commandcenter_event_store::Position)]
    position: String,
}

fn job_reply(status: StatusCode, outcome: &Outcome<Job>) -> Result<Reply, CommandError> {
    let record = outcome
        .state
        .record()
        .ok_or(CommandError::Invariant("job has no record after a command"))?;
    let body = JobBody {
        record,
        is_terminal: record.status.is_terminal(),
        duration_seconds: record.duration_seconds(),
        version: outcome.committed.version,
        position: outcome.committed.position.to_string(),
    };
    Reply::json(status, &outcome.committed, &body)
}

/// The body of `POST /api/v1/jobs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobBody {
    /// Defaults to the key's project; required with a deployment-wide key.
    #[schema(value_type = Option<ProjectId>)]
    project_id: Option<i64>,
    #[schema(value_type = JobType)]
    job_type: String,
    /// What the job works on; its fields depend on `job_type` (default `{}`; `null` is
    /// the default too).
    #[serde(default)]
    #[schema(value_type = Option<commandcenter_domain::job::JobParametersForm>)]
    parameters: Value,
    /// An array of labels, or an object (the previous API's form) whose entries become
    /// `key:value` labels.
    tags: Option<TagsForm>,
    /// Text, or an integer (the previous API's user id), stored as text.
    created_by: Option<TextForm>,
    /// Attempts before the job is given up (default 3).
    #[schema(minimum = 1, maximum = 20)]
    max_attempts: Option<i64>,
}

/// The body of `PATCH /api/v1/jobs/{id}` (external workers).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchJobBody {
    #[schema(value_type = Option<JobStatus>)]
    status: Option<String>,
    #[schema(value_type = Option<Progress>)]
    progress: Option<i64>,
    #[schema(value_type = Option<commandcenter_domain::values::schema::Label>)]
    current_step: Option<String>,
    /// What the job produced (any JSON).
    result: Option<Value>,
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    error: Option<String>,
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    traceback: Option<String>,
    /// Read-only, accepted when a client sends back a job it read: must be this job's.
    #[schema(value_type = Option<String>)]
    id: Option<Value>,
    /// Read-only: must be the job's project.
    #[schema(value_type = Option<i64>)]
    project_id: Option<Value>,
    /// Read-only: must be the job's type.
    #[schema(value_type = Option<JobType>)]
    job_type: Option<Value>,
    /// Read-only: must be the job's parameters.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Read-only: must be the job's labels, as read.
    #[schema(value_type = Option<Vec<String>>)]
    tags: Option<Value>,
    /// Read-only: must be who created the job, as read.
    #[schema(value_type = Option<String>)]
    created_by: Option<Value>,
    /// Read-only: must be the job's attempt limit.
    #[schema(value_type = Option<i64>)]
    max_attempts: Option<Value>,
    /// Read-only: must be when the job was created.
    #[schema(value_type = Option<String>)]
    created_at: Option<Value>,
    /// Read-only: the version read; a stale one is a 412, as with `If-Match`.
    #[schema(value_type = Option<i64>)]
    version: Option<Value>,
    // The job's other read-only fields, ignored: they describe its run or its last write,
    // which only its events change.
    /// Read-only, ignored.
    #[schema(value_type = Option<i64>)]
    #[serde(rename = "attempts")]
    _attempts: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<i64>)]
    #[serde(rename = "releases")]
    _releases: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "scheduled_for")]
    _scheduled_for: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "dispatched_at")]
    _dispatched_at: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "worker_id")]
    _worker_id: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "lease_until")]
    _lease_until: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<bool>)]
    #[serde(rename = "cancel_requested")]
    _cancel_requested: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "started_at")]
    _started_at: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "completed_at")]
    _completed_at: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "updated_at")]
    _updated_at: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<f64>)]
    #[serde(rename = "duration_seconds")]
    _duration_seconds: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<bool>)]
    #[serde(rename = "is_terminal")]
    _is_terminal: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "position")]
    _position: Option<Value>,
    /// Read-only, ignored.
    #[schema(value_type = Option<String>)]
    #[serde(rename = "created_position")]
    _created_position: Option<Value>,
}

/// The optional body of `POST /api/v1/jobs/{id}/cancel`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJobBody {
    #[schema(value_type = Option<commandcenter_domain::values::schema::Text>)]
    reason: Option<String>,
}

/// The query of `POST /api/v1/jobs/{id}/dispatch`.
#[derive(Debug, Deserialize)]
pub struct DispatchQuery {
    delay_seconds: Option<String>,
}

fn label(field: &str, value: &str) -> Result<String, ValidationError> {
    bounded_text(field, value, 1, MAX_LABEL_LEN)
}

fn text(field: &str, value: &str) -> Result<String, ValidationError> {
    bounded_text(field, value, 0, MAX_TEXT_LEN)
}

impl CreateJobBody {
    /// The command, and its parameters typed.
    fn parse(
        self,
        id: String,
        project_id: ProjectId,
    ) -> Result<(JobCommand, JobParameters), ValidationError> {
        let job_type = JobType::parse("job_type", &self.job_type)?;
        let max_attempts = match self.max_attempts {
            None => DEFAULT_MAX_ATTEMPTS,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_ATTEMPTS_LIMIT).contains(n))
                .ok_or_else(|| {
                    ValidationError::new(
                        "max_attempts",
                        format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
                    )
                })?,
        };
        let typed = parse_typed_parameters(job_type, self.parameters)?;
        let command = JobCommand::CreateJob {
            id,
            project_id,
            job_type,
            parameters: typed.to_map(),
            tags: Tags::parse(
                "tags",
                &self.tags.map(TagsForm::into_vec).unwrap_or_default(),
            )?,
            created_by: self
                .created_by
                .map(|v| label("created_by", &v.into_text()))
                .transpose()?,
            max_attempts,
            at: clock::now(),
        };
        Ok((command, typed))
    }
}

impl PatchJobBody {
    /// The patch, and the version the body requires (its `version`, when it sends back a
    /// job it read).
    fn parse(self) -> Result<(JobPatch, Option<Value>), ValidationError> {
        // In the order of JOB_IDENTITY_FIELDS.
        let sent = [
            self.id,
            self.project_id,
            self.job_type,
            self.parameters,
            self.tags,
            self.created_by,
            self.max_attempts,
            self.created_at,
        ];
        let read_back = JOB_IDENTITY_FIELDS
            .iter()
            .zip(sent)
            .filter_map(|(field, sent)| sent.map(|sent| ((*field).to_string(), sent)))
            .collect();
        let patch = JobPatch {
            status: self
                .status
                .map(|v| JobStatus::parse("status", &v))
                .transpose()?,
            progress: self
                .progress
                .map(|v| Progress::parse("progress", v))
                .transpose()?,
            current_step: self
                .current_step
                .map(|v| label("current_step", &v))
                .transpose()?,
            result: self.result,
            error: self.error.map(|v| text("error", &v)).transpose()?,
            traceback: self.traceback.map(|v| text("traceback", &v)).transpose()?,
            read_back,
        };
        Ok((patch, self.version))
    }
}

/// Runs a command on job `id`, answering with `respond`.
async fn run(
    state: &CommandState,
    id: &str,
    command: JobCommand,
    context: CommandContext,
    body: &[u8],
    respond: impl Fn(&Outcome<Job>) -> Result<Reply, CommandError> + Send + Sync + 'static,
) -> Result<Response, ApiError> {
    crate::run::<Job>(state, id, "job", command, context, body, respond).await
}

fn ok(outcome: &Outcome<Job>) -> Result<Reply, CommandError> {
    job_reply(StatusCode::OK, outcome)
}

/// `POST /api/v1/jobs` → 201 with the pending job.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = CreateJobBody, params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request"), ("X-Project-ID" = Option<i64>, Header, description = "The project of the new resource when the body names none (the previous API's header); must agree with the body and the key")), responses((status = 201, description = "The pending job, with version and position", body = JobBody), (status = 400, description = "Malformed JSON, parameter or header (problem+json)"), (status = 404, description = "Unknown id (problem+json)"), (status = 409, description = "Conflicts with the current state or a concurrent write (problem+json)"), (status = 412, description = "Stale If-Match (problem+json)"), (status = 413, description = "Body too large (problem+json)"), (status = 415, description = "Body is not JSON (problem+json)"), (status = 422, description = "Invalid field, or Idempotency-Key reused with another request (problem+json naming the field)")))]
#[tracing::instrument(skip_all, fields(request_id = %context.meta.request_id, correlation_id = %context.meta.correlation_id))]
pub async fn create_job(
    State(state): State<CommandState>,
    context: CommandContext,
    body: JsonBody<CreateJobBody>,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7().to_string();
    let project_id = context.project_for(body.value.project_id).await?;
    let (command, typed) = body.value.parse(id.clone(), project_id)?;
    // A job's result is its project's data: a batch may not read another project's (its
    // readers could not otherwise be kept from that data). A key that cannot see the
    // project named gets the 404 it gets everywhere else.
    if let JobParameters::BatchAnalysis { project_ids, .. }
    | JobParameters::BatchExport { project_ids, .. } = &typed
    {
        if let Some(other) = project_ids.iter().find(|p| **p != project_id) {
            context
                .caller
                .check_project("parameters.project_ids", other.get())
                .await?;
            return Err(ValidationError::new(
                "parameters.project_ids",
                format!(
                    "a job's results stay in its project: list only project {project_id} \
                     (run one job per project)"
                ),
            )
            .into());
        }
    }
    let location = format!("/api/v1/jobs/{id}");
    run(&state, &id, command, context, &body.raw, move |outcome| {
        Ok(job_reply(StatusCode::CREATED, outcome)?.with_header("location", location.clone()))
    })
    .await
}

/// `PATCH /api/v1/jobs/{id}` → 200: status, progress, step, result or error from an
/// external worker, applied all or nothing.
#[utoipa::path(patch, path = "/api/v1/jobs/{id}", tag = "jobs", request_body = PatchJobBody, params(("id" = String, Path, description = "Job id"), ("If-Match" = Option<String>, Header, description = "The version the write requires (ETag)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")), responses((status = 200, description = "The job after the update, applied all or nothing", body = JobBody), (status = 400, description = "Malformed JSON, parameter or header (problem+json)"), (status = 404, description = "Unknown id (problem+json)"), (status = 409, description = "Conflicts with the current state or a concurrent write (problem+json)"), (status = 412, description = "Stale If-Match (problem+json)"), (status = 413, description = "Body too large (problem+json)"), (status = 415, description = "Body is not JSON (problem+json)"), (status = 422, description = "Invalid field, or Idempotency-Key reused with another request (problem+json naming the field)")))]
#[tracing::instrument(skip_all, fields(request_id = %context.meta.request_id, correlation_id = %context.meta.correlation_id, job_id = %id))]
pub async fn patch_job(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    mut context: CommandContext,
    body: JsonBody<PatchJobBody>,
) -> Result<Response, ApiError> {
    let (patch, version) = body.value.parse()?;
    context.if_match = required_version(context.if_match, version)?;
    let command = JobCommand::PatchJob {
        patch,
        at: clock::now(),
    };
    run(&state, &id, command, context, &body.raw, ok).await
}

/// `POST /api/v1/jobs/{id}/dispatch?delay_seconds=N` → 200: hands the job to the workers.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/dispatch", tag = "jobs", params(("id" = String, Path, description = "Job id"), ("delay_seconds" = Option<u32>, Query, minimum = 0, maximum = 3600, description = "Start no earlier than this many seconds from now (0-3600)"), ("If-Match" = Option<String>, Header, description = "The version the write requires (ETag)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")), responses((status = 200, description = "The dispatched job", body = JobBody), (status = 400, description = "Malformed JSON, parameter or header (problem+json)"), (status = 404, description = "Unknown id (problem+json)"), (status = 409, description = "Conflicts with the current state or a concurrent write (problem+json)"), (status = 412, description = "Stale If-Match (problem+json)"), (status = 413, description = "Body too large (problem+json)"), (status = 415, description = "Body is not JSON (problem+json)"), (status = 422, description = "Invalid field, or Idempotency-Key reused with another request (problem+json naming the field)")))]
#[tracing::instrument(skip_all, fields(request_id = %context.meta.request_id, correlation_id = %context.meta.correlation_id, job_id = %id))]
pub async fn dispatch_job(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    query: Result<Query<DispatchQuery>, axum::extract::rejection::QueryRejection>,
    context: CommandContext,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let delay_seconds = match query.delay_seconds.as_deref() {
        None | Some("") => 0,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|d| *d <= MAX_DISPATCH_DELAY_SECONDS)
            .ok_or_else(|| {
                ValidationError::new(
                    "delay_seconds",
                    format!(
                        "must be a whole number of seconds from 0 to {MAX_DISPATCH_DELAY_SECONDS}"
                    ),
                )
            })?,
    };
    let command = JobCommand::DispatchJob {
        delay_seconds,
        at: clock::now(),
    };
    run(&state, &id, command, context, b"", ok).await
}

/// `POST /api/v1/jobs/{id}/cancel` → 200: a pending job is cancelled at once, a running
/// one is asked to stop (its worker records `cancelled`). Never waits for the worker.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", request_body(content = Option<CancelJobBody>, description = "Optional reason"), params(("id" = String, Path, description = "Job id"), ("If-Match" = Option<String>, Header, description = "The version the write requires (ETag)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")), responses((status = 200, description = "The job: cancelled if it was pending, cancel_requested if running", body = JobBody), (status = 400, description = "Malformed JSON, parameter or header (problem+json)"), (status = 404, description = "Unknown id (problem+json)"), (status = 409, description = "Conflicts with the current state or a concurrent write (problem+json)"), (status = 412, description = "Stale If-Match (problem+json)"), (status = 413, description = "Body too large (problem+json)"), (status = 415, description = "Body is not JSON (problem+json)"), (status = 422, description = "Invalid field, or Idempotency-Key reused with another request (problem+json naming the field)")))]
#[tracing::instrument(skip_all, fields(request_id = %context.meta.request_id, correlation_id = %context.meta.correlation_id, job_id = %id))]
pub async fn cancel_job(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    context: CommandContext,
    body: JsonBody<CancelJobBody>,
) -> Result<Response, ApiError> {
    let reason = body.value.reason.map(|v| text("reason", &v)).transpose()?;
    let command = JobCommand::RequestJobCancel {
        reason,
        at: clock::now(),
    };
    run(&state, &id, command, context, &body.raw, ok).await
}

/// `DELETE /api/v1/jobs/{id}` → 204 (refused while the job runs).
#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id"), ("If-Match" = Option<String>, Header, description = "The version the write requires (ETag)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")), responses((status = 204, description = "Deleted"), (status = 400, description = "Malformed JSON, parameter or header (problem+json)"), (status = 404, description = "Unknown id (problem+json)"), (status = 409, description = "Conflicts with the current state or a concurrent write (problem+json)"), (status = 412, description = "Stale If-Match (problem+json)"), (status = 413, description = "Body too large (problem+json)"), (status = 415, description = "Body is not JSON (problem+json)"), (status = 422, description = "Invalid field, or Idempotency-Key reused with another request (problem+json naming the field)")))]
#[tracing::instrument(skip_all, fields(request_id = %context.meta.request_id, correlation_id = %context.meta.correlation_id, job_id = %id))]
pub async fn delete_job(
    State(state): State<CommandState>,
    Path(id): Path<String>,
    context: CommandContext,
) -> Result<Response, ApiError> {
    let command = JobCommand::DeleteJob { at: clock::now() };
    run(&state, &id, command, context, b"", |outcome| {
        Ok(Reply::empty(StatusCode::NO_CONTENT, &outcome.committed))
    })
    .await
}
