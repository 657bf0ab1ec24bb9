//! Facts about a technology, in the past tense. Payloads are stored as JSON and never
//! rewritten; a changed shape gets a new `event_version` and an upcaster.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{TechnologyChanges, TechnologyFields, TechnologyStatus};
use crate::values::ProjectId;

/// Something that happened to a technology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TechnologyEvent {
    /// The technology was put on the radar.
    TechnologyCreated {
        /// Aggregate id.
        id: String,
        /// Owning project.
        project_id: ProjectId,
        /// Initial values.
        technology: Box<TechnologyFields>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// Some fields changed; only the changed ones are recorded.
    TechnologyUpdated {
        /// The new values of the changed fields.
        changes: Box<TechnologyChanges>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The radar status changed.
    TechnologyStatusChanged {
        /// Previous status.
        from: TechnologyStatus,
        /// New status.
        to: TechnologyStatus,
        /// Why, when given.
        reason: Option<String>,
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
    /// The technology was removed.
    TechnologyDeleted {
        /// When it happened: the command's time, cut to microseconds.
        at: DateTime<Utc>,
    },
}

impl TechnologyEvent {
    /// When the event happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::TechnologyCreated { at, .. }
            | Self::TechnologyUpdated { at, .. }
            | Self::TechnologyStatusChanged { at, .. }
            | Self::TechnologyDeleted { at } => *at,
        }
    }
}

impl DomainEvent for TechnologyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::TechnologyCreated { .. } => "TechnologyCreated",
            Self::TechnologyUpdated { .. } => "TechnologyUpdated",
            Self::TechnologyStatusChanged { .. } => "TechnologyStatusChanged",
            Self::TechnologyDeleted { .. } => "TechnologyDeleted",
        }
        .to_string()
    }

    /// `TechnologyCreated` and `TechnologyUpdated` are at 1.1 (`tags` a list; see
    /// `crate::upcasting`), the others at 1.0.
    fn event_version(&self) -> String {
        match self {
            Self::TechnologyCreated { .. } | Self::TechnologyUpdated { .. } => "1.1",
            Self::TechnologyStatusChanged { .. } | Self::TechnologyDeleted { .. } => "1.0",
        }
        .to_string()
    }
}
