//! Query-string parameters, parsed into typed values or a problem naming the parameter.
//! Unknown parameters are ignored (older clients send some).

use std::collections::HashMap;

use commandcenter_api_error::ApiError;
use commandcenter_domain::values::ProjectId;

use crate::error::bad_parameter;

/// The query string of one request.
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// The raw value of `name`, if present and not empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// `project_id`, when present: a project id (a positive integer), or a 400 naming it.
    pub fn project_id(&self) -> Result<Option<i64>, ApiError> {
        self.opt_int("project_id", 1, i64::MAX)?
            .map(|p| {
                ProjectId::parse("project_id", p)
                    .map(ProjectId::get)
                    .map_err(crate::error::query_value)
            })
            .transpose()
    }

    /// An integer from `min` to `max`, or `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.text(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    bad_parameter(name, format!("must be a whole number from {min} to {max}"))
                }),
        }
    }

    /// An optional integer from `min` to `max`.
    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        self.text(name)
            .map(|_| self.int(name, 0, min, max))
            .transpose()
    }

    /// An optional value parsed by `parse` (which names the parameter in its error).
    pub fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str, &str) -> Result<T, commandcenter_domain::ValidationError>,
    ) -> Result<Option<T>, ApiError> {
        self.text(name)
            .map(|text| parse(name, text).map_err(crate::error::query_value))
            .transpose()
    }
}
