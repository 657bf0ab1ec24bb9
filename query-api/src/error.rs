//! The query API answers errors with the write API's problem documents
//! (`commandcenter_api_error::ApiError`): one format for the whole HTTP surface.

use commandcenter_api_error::ApiError;

/// A 400 naming query parameter `name`: every bad query parameter of the API is a 400,
/// malformed or out of its range or set; 422 is for body values.
pub fn bad_parameter(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadParameter {
        name: name.to_string(),
        message: message.into(),
    }
}

/// A query parameter's value refused by a domain type (a project id, a status): a 400
/// naming it, like every bad query parameter.
pub fn query_value(err: commandcenter_domain::ValidationError) -> ApiError {
    bad_parameter(&err.field, err.message)
}
