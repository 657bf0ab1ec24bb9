//! What the technology aggregate refuses, and why.

use crate::error::ValidationError;

/// A command the technology aggregate rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TechnologyError {
    /// No technology has this id.
    #[error("technology not found")]
    NotFound,
    /// A create for an id that already exists.
    #[error("technology already exists")]
    AlreadyExists,
    /// The technology was deleted; it accepts no further command.
    #[error("technology has been deleted")]
    Deleted,
    /// Archived technologies only accept a status change.
    #[error("technology is archived: change its status before editing other fields")]
    Archived,
    /// A field value breaks a rule that needs the aggregate's state to check.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}
