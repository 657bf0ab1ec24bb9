//! Job parameters: a JSON object, validated per job type when the job is created.

use serde_json::{Map, Value};

use super::JobType;
use crate::error::ValidationError;

/// Largest serialized parameter object we accept, in bytes.
pub const MAX_PARAMETERS_BYTES: usize = 64 * 1024;

/// Most steps a `noop` job may take.
pub const NOOP_MAX_STEPS: i64 = 100_000;
/// Longest `noop` step, in milliseconds.
pub const NOOP_MAX_STEP_MS: i64 = 60_000;

/// Validates `value` as the parameters of a `job_type` job and returns it normalized
/// (defaults filled in). Errors name the field as `parameters.<name>`.
pub fn parse_parameters(
    job_type: JobType,
    value: Value,
) -> Result<Map<String, Value>, ValidationError> {
    let mut params = match value {
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
    if job_type == JobType::Noop {
        for key in params.keys() {
            if key != "steps" && key != "step_ms" {
                return Err(ValidationError::new(
                    format!("parameters.{key}"),
                    "unknown parameter for a noop job (expected steps, step_ms)",
                ));
            }
        }
        let steps = integer_in(&params, "steps", 1, 1, NOOP_MAX_STEPS)?;
        let step_ms = integer_in(&params, "step_ms", 0, 0, NOOP_MAX_STEP_MS)?;
        params.insert("steps".into(), steps.into());
        params.insert("step_ms".into(), step_ms.into());
    }
    Ok(params)
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
        let big = json!({"blob": "x".repeat(MAX_PARAMETERS_BYTES)});
        assert!(parse_parameters(JobType::Analysis, big).is_err());
    }
}
