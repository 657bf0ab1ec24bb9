//! Job parameters: a JSON object, validated per job type when the job is created.

use serde_json::{json, Map, Value};

use super::JobType;
use crate::error::ValidationError;
use crate::values::{HttpUrl, ProjectId};

/// Largest serialized parameter object we accept, in bytes.
pub const MAX_PARAMETERS_BYTES: usize = 64 * 1024;

/// Most steps a `noop` job may take.
pub const NOOP_MAX_STEPS: i64 = 100_000;
/// Longest `noop` step, in milliseconds.
pub const NOOP_MAX_STEP_MS: i64 = 60_000;
/// Most projects one batch job covers.
pub const BATCH_MAX_PROJECTS: usize = 100;
/// Longest webhook timeout, in milliseconds.
pub const WEBHOOK_MAX_TIMEOUT_MS: i64 = 60_000;

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON array of technology objects.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

impl ExportFormat {
    /// `json` or `csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }

    /// The format named `name` (`json` or `csv`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// The media type of the file.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    /// Where attempt `attempt` of export job `job_id` writes its file, relative to the
    /// data directory: `artifacts/<job_id>-<attempt>.<format>`. One file per attempt, so
    /// an attempt that lost its claim can never overwrite the one that completed.
    pub fn artifact_path(self, job_id: &str, attempt: u32) -> String {
        format!("artifacts/{job_id}-{attempt}.{}", self.as_str())
    }
}

/// What an analysis looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisOptions {
    /// A technology not updated for this many days is stale.
    pub stale_days: i64,
    /// How many top technologies to list.
    pub top: i64,
}

/// A job's parameters, typed per job type.
#[derive(Debug, Clone, PartialEq)]
pub enum JobParameters {
    /// `analysis` and `scheduled_analysis`: the job's own project.
    Analysis(AnalysisOptions),
    /// `export`: the job's own project.
    Export(ExportFormat),
    /// `batch_analysis`: each listed project.
    BatchAnalysis {
        /// The projects, in order, without repeats.
        project_ids: Vec<ProjectId>,
        /// What to look at.
        options: AnalysisOptions,
    },
    /// `batch_export`: each listed project, in one file.
    BatchExport {
        /// The projects, in order, without repeats.
        project_ids: Vec<ProjectId>,
        /// File format.
        format: ExportFormat,
    },
    /// `webhook_delivery`.
    Webhook {
        /// Where to POST.
        url: HttpUrl,
        /// The JSON body.
        payload: Value,
        /// Per-request timeout, in milliseconds.
        timeout_ms: i64,
    },
    /// `noop`.
    Noop {
        /// Steps to take.
        steps: i64,
        /// Sleep per step, in milliseconds.
        step_ms: i64,
    },
}

/// Validates `value` as the parameters of a `job_type` job and returns it normalized
/// (defaults filled in). Errors name the field as `parameters.<name>`.
pub fn parse_parameters(
    job_type: JobType,
    value: Value,
) -> Result<Map<String, Value>, ValidationError> {
    Ok(parse_typed_parameters(job_type, value)?.to_map())
}

/// Validates `value` as the parameters of a `job_type` job, typed.
pub fn parse_typed_parameters(
    job_type: JobType,
    value: Value,
) -> Result<JobParameters, ValidationError> {
    let params = match value {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => return Err(ValidationError::new("parameters", "must be a JSON object")),
    };
    let size = Value::Object(params.clone()).to_string().len();
    if size > MAX_PARAMETERS_BYTES {
        return Err(ValidationError::new(
            "parameters",
            format!("must serialize to at most {MAX_PARAMETERS_BYTES} bytes (got {size})"),
        ));
    }
    typed_parameters(job_type, &params)
}

/// The typed parameters of a `job_type` job from its (stored) parameter object.
pub fn typed_parameters(
    job_type: JobType,
    params: &Map<String, Value>,
) -> Result<JobParameters, ValidationError> {
    let allowed: &[&str] = match job_type {
        JobType::Analysis | JobType::ScheduledAnalysis => &["stale_days", "top"],
        JobType::Export => &["format"],
        JobType::BatchAnalysis => &["project_ids", "stale_days", "top"],
        JobType::BatchExport => &["project_ids", "format"],
        JobType::WebhookDelivery => &["url", "payload", "timeout_ms"],
        JobType::Noop => &["steps", "step_ms"],
    };
    if let Some(key) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ValidationError::new(
            format!("parameters.{key}"),
            format!(
                "unknown parameter for a {} job (expected {})",
                job_type.as_str(),
                allowed.join(", ")
            ),
        ));
    }
    Ok(match job_type {
        JobType::Analysis | JobType::ScheduledAnalysis => {
            JobParameters::Analysis(analysis_options(params)?)
        }
        JobType::Export => JobParameters::Export(export_format(params)?),
        JobType::BatchAnalysis => JobParameters::BatchAnalysis {
            project_ids: project_ids(params)?,
            options: analysis_options(params)?,
        },
        JobType::BatchExport => JobParameters::BatchExport {
            project_ids: project_ids(params)?,
            format: export_format(params)?,
        },
        JobType::WebhookDelivery => {
            let url = match params.get("url") {
                Some(Value::String(url)) => HttpUrl::parse("parameters.url", url)?,
                Some(_) => {
                    return Err(ValidationError::new(
                        "parameters.url",
                        "must be an http or https URL string",
                    ))
                }
                None => return Err(ValidationError::new("parameters.url", "is required")),
            };
            JobParameters::Webhook {
                url,
                payload: params
                    .get("payload")
                    .cloned()
                    .unwrap_or(Value::Object(Map::new())),
                timeout_ms: integer_in(params, "timeout_ms", 5000, 100, WEBHOOK_MAX_TIMEOUT_MS)?,
            }
        }
        JobType::Noop => JobParameters::Noop {
            steps: integer_in(params, "steps", 1, 1, NOOP_MAX_STEPS)?,
            step_ms: integer_in(params, "step_ms", 0, 0, NOOP_MAX_STEP_MS)?,
        },
    })
}

impl JobParameters {
    /// The normalized parameter object, every default spelled out.
    pub fn to_map(&self) -> Map<String, Value> {
        let ids = |ids: &[ProjectId]| Value::from(ids.iter().map(|p| p.get()).collect::<Vec<_>>());
        let value = match self {
            Self::Analysis(o) => json!({"stale_days": o.stale_days, "top": o.top}),
            Self::Export(format) => json!({"format": format.as_str()}),
            Self::BatchAnalysis {
                project_ids,
                options,
            } => json!({
                "project_ids": ids(project_ids),
                "stale_days": options.stale_days,
                "top": options.top,
            }),
            Self::BatchExport {
                project_ids,
                format,
            } => json!({"project_ids": ids(project_ids), "format": format.as_str()}),
            Self::Webhook {
                url,
                payload,
                timeout_ms,
            } => json!({"url": url.as_str(), "payload": payload, "timeout_ms": timeout_ms}),
            Self::Noop { steps, step_ms } => json!({"steps": steps, "step_ms": step_ms}),
        };
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

fn analysis_options(params: &Map<String, Value>) -> Result<AnalysisOptions, ValidationError> {
    Ok(AnalysisOptions {
        stale_days: integer_in(params, "stale_days", 90, 1, 3650)?,
        top: integer_in(params, "top", 10, 1, 100)?,
    })
}

fn export_format(params: &Map<String, Value>) -> Result<ExportFormat, ValidationError> {
    let invalid = || ValidationError::new("parameters.format", "must be \"json\" or \"csv\"");
    match params.get("format") {
        None => Ok(ExportFormat::Json),
        Some(Value::String(name)) => ExportFormat::from_name(name).ok_or_else(invalid),
        Some(_) => Err(invalid()),
    }
}

fn project_ids(params: &Map<String, Value>) -> Result<Vec<ProjectId>, ValidationError> {
    const FIELD: &str = "parameters.project_ids";
    let Some(value) = params.get("project_ids") else {
        return Err(ValidationError::new(FIELD, "is required"));
    };
    let items = value
        .as_array()
        .filter(|a| (1..=BATCH_MAX_PROJECTS).contains(&a.len()))
        .ok_or_else(|| {
            ValidationError::new(
                FIELD,
                format!("must be a list of 1 to {BATCH_MAX_PROJECTS} project ids"),
            )
        })?;
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let id = item
            .as_i64()
            .ok_or_else(|| ValidationError::new(FIELD, "must hold integer project ids"))
            .and_then(|n| ProjectId::parse(FIELD, n))?;
        if ids.contains(&id) {
            return Err(ValidationError::new(
                FIELD,
                format!("lists project {id} twice"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn integer_in(
    params: &Map<String, Value>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ValidationError> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ValidationError::new(
                    format!("parameters.{name}"),
                    format!("must be an integer from {min} to {max}"),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn noop_parameters_get_defaults_and_bounds() {
        let p = parse_parameters(JobType::Noop, json!({})).unwrap();
        assert_eq!(Value::Object(p), json!({"steps": 1, "step_ms": 0}));
        let e = parse_parameters(JobType::Noop, json!({"steps": 0})).unwrap_err();
        assert_eq!(e.field, "parameters.steps");
        let e = parse_parameters(JobType::Noop, json!({"step_ms": "x"})).unwrap_err();
        assert_eq!(e.field, "parameters.step_ms");
        let e = parse_parameters(JobType::Noop, json!({"stepz": 1})).unwrap_err();
        assert_eq!(e.field, "parameters.stepz");
    }

    #[test]
    fn parameters_must_be_an_object_of_bounded_size() {
        assert!(parse_parameters(JobType::Analysis, json!([1])).is_err());
        assert!(parse_parameters(JobType::Analysis, Value::Null).is_ok());
        let big =
            json!({"url": "http://example.test/", "payload": "x".repeat(MAX_PARAMETERS_BYTES)});
        let e = parse_parameters(JobType::WebhookDelivery, big).unwrap_err();
        assert_eq!(e.field, "parameters");
    }

    fn field_of(job_type: JobType, value: Value) -> String {
        parse_parameters(job_type, value).unwrap_err().field
    }

    #[test]
    fn each_job_type_validates_its_own_parameters() {
        let p = parse_parameters(JobType::Analysis, json!({})).unwrap();
        assert_eq!(Value::Object(p), json!({"stale_days": 90, "top": 10}));
        assert_eq!(
            field_of(JobType::Analysis, json!({"top": 0})),
            "parameters.top"
        );
        assert_eq!(
            field_of(JobType::ScheduledAnalysis, json!({"stale_days": -1})),
            "parameters.stale_days"
        );
        assert_eq!(
            field_of(JobType::Analysis, json!({"format": "csv"})),
            "parameters.format"
        );

        let p = parse_parameters(JobType::Export, json!({"format": "csv"})).unwrap();
        assert_eq!(Value::Object(p), json!({"format": "csv"}));
        assert_eq!(
            field_of(JobType::Export, json!({"format": "xml"})),
            "parameters.format"
        );

        assert_eq!(
            field_of(JobType::BatchExport, json!({})),
            "parameters.project_ids"
        );
        assert_eq!(
            field_of(JobType::BatchExport, json!({"project_ids": []})),
            "parameters.project_ids"
        );
        assert_eq!(
            field_of(JobType::BatchAnalysis, json!({"project_ids": [1, 1]})),
            "parameters.project_ids"
        );
        assert_eq!(
            field_of(JobType::BatchAnalysis, json!({"project_ids": [0]})),
            "parameters.project_ids"
        );
        let p = parse_parameters(
            JobType::BatchAnalysis,
            json!({"project_ids": [2, 1], "top": 3}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"project_ids": [2, 1], "stale_days": 90, "top": 3})
        );

        assert_eq!(
            field_of(JobType::WebhookDelivery, json!({})),
            "parameters.url"
        );
        assert_eq!(
            field_of(JobType::WebhookDelivery, json!({"url": "ftp://x"})),
            "parameters.url"
        );
        assert_eq!(
            field_of(
                JobType::WebhookDelivery,
                json!({"url": "http://x.test/", "timeout_ms": 5})
            ),
            "parameters.timeout_ms"
        );
        let p = parse_parameters(
            JobType::WebhookDelivery,
            json!({"url": "https://hooks.test/in"}),
        )
        .unwrap();
        assert_eq!(p["payload"], json!({}));
        assert_eq!(p["timeout_ms"], json!(5000));
    }

    #[test]
    fn stored_parameters_read_back_typed() {
        let p = parse_parameters(JobType::Noop, json!({"steps": 4})).unwrap();
        assert_eq!(
            typed_parameters(JobType::Noop, &p).unwrap(),
            JobParameters::Noop {
                steps: 4,
                step_ms: 0
            }
        );
    }
}

/// The OpenAPI form of a job's `parameters`: one object per job type (each field
/// optional unless said, with its default and bounds), as [`typed_parameters`] reads them.
pub mod schema {
    use utoipa::openapi::schema::{
        AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type,
    };
    use utoipa::openapi::{RefOr, Schema};
    use utoipa::{PartialSchema, ToSchema};

    use super::*;

    /// `parameters` of a job: which form applies depends on `job_type`.
    pub struct JobParametersForm;

    fn integer(min: i64, max: i64, default: i64, description: &str) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min as f64))
            .maximum(Some(max as f64))
            .default(Some(default.into()))
            .description(Some(description))
    }

    fn format() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["json", "csv"]))
            .default(Some("json".into()))
            .description(Some("File format"))
    }

    fn project_ids() -> ArrayBuilder {
        ArrayBuilder::new()
            .items(crate::values::ProjectId::schema())
            .min_items(Some(1))
            .max_items(Some(BATCH_MAX_PROJECTS))
            .description(Some("The projects, in order (repeats dropped); required"))
    }

    fn form(title: &str, fields: Vec<(&str, RefOr<Schema>)>, required: &[&str]) -> ObjectBuilder {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some(title))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for (name, schema) in fields {
            object = object.property(name, schema);
        }
        for name in required {
            object = object.required(*name);
        }
        object
    }

    impl PartialSchema for JobParametersForm {
        fn schema() -> RefOr<Schema> {
            let stale_days = || integer(1, 3650, 90, "Not updated for this many days is stale");
            let top = || integer(1, 100, 10, "How many top technologies to list");
            AnyOfBuilder::new()
                .item(form(
                    "analysis, scheduled_analysis",
                    vec![("stale_days", stale_days().into()), ("top", top().into())],
                    &[],
                ))
                .item(form("export", vec![("format", format().into())], &[]))
                .item(form(
                    "batch_analysis",
                    vec![
                        ("project_ids", project_ids().into()),
                        ("stale_days", stale_days().into()),
                        ("top", top().into()),
                    ],
                    &["project_ids"],
                ))
                .item(form(
                    "batch_export",
                    vec![
                        ("project_ids", project_ids().into()),
                        ("format", format().into()),
                    ],
                    &["project_ids"],
                ))
                .item(form(
                    "webhook_delivery",
                    vec![
                        ("url", crate::values::HttpUrl::schema()),
                        (
                            "payload",
                            ObjectBuilder::new()
                                .description(Some("The JSON body to POST (default {})"))
                                .into(),
                        ),
                        (
                            "timeout_ms",
                            integer(100, WEBHOOK_MAX_TIMEOUT_MS, 5000, "Per-request timeout")
                                .into(),
                        ),
                    ],
                    &["url"],
                ))
                .item(form(
                    "noop",
                    vec![
                        (
                            "steps",
                            integer(1, NOOP_MAX_STEPS, 1, "Steps to take").into(),
                        ),
                        (
                            "step_ms",
                            integer(0, NOOP_MAX_STEP_MS, 0, "Sleep per step, in ms").into(),
                        ),
                    ],
                    &[],
                ))
                .description(Some(
                    "The job type's parameters (the form titled with its job_type; at most \
                     64 KiB). Answers spell every default out.",
                ))
                .into()
        }
    }
    impl ToSchema for JobParametersForm {}
}
