//! Who may do what, in one place.
//!
//! - [`projects`]: the project registry; every technology and job belongs to one.
//! - [`keys`]: API keys (`cc_<id>_<secret>`, only a hash kept), each with a [`Role`] and
//!   scoped to one project, or a deployment-wide admin key.
//! - [`policy`]: the access rule of every route, keyed by method and route template; a
//!   route without a rule is open to deployment-wide admins only.
//! - [`guard`]: the middleware every route passes — authentication (401), role (403),
//!   project isolation (another project's resource is a 404; list filters are rewritten to
//!   the key's project), per-key rate limits (429), request timeouts, and per-key socket
//!   and subscription budgets; revocations close sockets at once.
//! - [`http`]: project and key management over HTTP (admin keys).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod guard;
pub mod http;
pub mod keys;
pub mod policy;
pub mod projects;
mod refusal;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use guard::{Caller, Guard, GuardConfig, KeySession};
pub use keys::{ApiKey, KeyStore, NewKey};
pub use policy::{Access, Rule, Scope};
pub use projects::{Project, ProjectStore};

/// Longest name of a project or key.
pub const MAX_NAME_LEN: usize = 200;

/// Checks a project's or key's `name`: at least `min` and at most [`MAX_NAME_LEN`]
/// characters, none of them control characters.
pub(crate) fn check_name(name: &str, min: usize) -> Result<(), AccessError> {
    let len = name.chars().count();
    if len < min || len > MAX_NAME_LEN || name.chars().any(char::is_control) {
        let length = if min == 0 {
            format!("at most {MAX_NAME_LEN}")
        } else {
            format!("{min} to {MAX_NAME_LEN}")
        };
        return Err(AccessError::Invalid {
            field: "name".into(),
            message: format!("must be {length} characters, without control characters"),
        });
    }
    Ok(())
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and WebSockets.
    Reader,
    /// Reader, and commands.
    Writer,
    /// Reader, and histories, the event feed, time travel, verification and export.
    Auditor,
    /// Everything, and key management.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 4] = [Role::Reader, Role::Writer, Role::Auditor, Role::Admin];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: use reader, writer, auditor or admin"))
    }
}

/// An authenticated key: who is acting, with what role, on which project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's public id (recorded as `actor`).
    pub key_id: String,
    /// Its role.
    pub role: Role,
    /// Its project; `None` for a deployment-wide admin key.
    pub project: Option<i64>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// Whether this key may see and touch `project`'s data.
    pub fn sees_project(&self, project: i64) -> bool {
        self.project.is_none_or(|own| own == project)
    }

    /// Whether the key has expired at `now`.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No key, or not one we know (or revoked, or expired).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The key's role does not allow this.
    #[error("this API key's role ({role}) does not allow this request; it needs {needs}")]
    Forbidden {
        /// The key's role.
        role: Role,
        /// What the route needs.
        needs: &'static str,
    },
    /// Another project's resource, or a project the key cannot see: reported as missing,
    /// so a key never learns what exists elsewhere.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A field names a project that is not registered.
    #[error("{field}: project {project} does not exist")]
    UnknownProject {
        /// The field at fault.
        field: String,
        /// The project named.
        project: i64,
    },
    /// A field is required for this key.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The key's rate limit is exhausted.
    #[error("rate limit of this API key exceeded; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request will be admitted.
        retry_after_secs: u64,
    },
    /// Too many sockets or subscriptions for this key.
    #[error("{0}")]
    TooMany(String),
    /// The request did not finish in time.
    #[error("the request did not complete within {0} ms")]
    Timeout(u128),
    /// The database could not answer.
    #[error("access check failed: {0}")]
    Database(#[from] sqlx::Error),
}
