//! Intents addressed to a technology. Every value is already validated; `at` is the
//! time the write side accepted the request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{TechnologyChanges, TechnologyFields, TechnologyStatus};
use crate::values::ProjectId;

/// A requested status change with its optional reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The new status.
    pub status: TechnologyStatus,
    /// Why, for the history.
    pub reason: Option<String>,
}

/// A command on the technology aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum TechnologyCommand {
    /// Put a new technology on the radar.
    CreateTechnology {
        /// The new aggregate's id (a UUIDv7 string).
        id: String,
        /// Owning project.
        project_id: ProjectId,
        /// Initial values.
        fields: Box<TechnologyFields>,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Change any subset of fields, and optionally the status.
    UpdateTechnology {
        /// Requested new values; unchanged ones are dropped by the aggregate.
        changes: Box<TechnologyChanges>,
        /// Optional status change.
        status: Option<StatusChange>,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Move the technology to another status.
    ChangeTechnologyStatus {
        /// The change.
        change: StatusChange,
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
    /// Remove the technology from the radar.
    DeleteTechnology {
        /// When the request was accepted.
        at: DateTime<Utc>,
    },
}
