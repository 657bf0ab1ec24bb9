//! The query API answers errors with the write API's problem documents
//! (`commandcenter_commands::ApiError`): one format for the whole HTTP surface.

use commandcenter_commands::ApiError;

/// A 400 naming query parameter `name`.
pub fn bad_parameter(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadParameter {
        name: name.to_string(),
        message: message.into(),
    }
}

/// A 422 naming query parameter `name` (a well-formed but invalid value).
pub fn invalid(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(commandcenter_domain::ValidationError::new(name, message))
}
