//! The validation error every `parse` in this crate returns: it names the field at fault,
//! so the HTTP edge can answer with a problem document pointing at it.

use serde::Serialize;

/// One rejected input field and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field's name as the client wrote it (`tags[2]`, `parameters.steps`).
    pub field: String,
    /// What is wrong, in words a client developer understands.
    pub message: String,
}

impl ValidationError {
    /// Builds an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
