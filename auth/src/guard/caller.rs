//! What a handler knows of the key a request came with: [`Caller`], put in the request
//! by the guard and taken out as an extractor.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{Guard, KeySession, SocketPermit};
use crate::policy::Kind;
use crate::{AccessError, Principal};

/// The key a request was admitted with: its principal, and its session in this process.
/// Handlers take it as an extractor; it exists on every route that is not public.
#[derive(Clone)]
pub struct Caller {
    pub(super) principal: Arc<Principal>,
    pub(super) session: Arc<KeySession>,
    pub(super) guard: Guard,
    pub(super) _socket: Option<Arc<SocketPermit>>,
}

impl Caller {
    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The key's id, recorded as `actor`.
    pub fn key_id(&self) -> &str {
        &self.principal.key_id
    }

    /// The key's live state (revocation signal, subscription budget).
    pub fn session(&self) -> &Arc<KeySession> {
        &self.session
    }

    /// Takes one request from the key's rate limit (for messages on an open socket).
    pub fn take_token(&self) -> Result<(), AccessError> {
        self.session.rate.take()
    }

    /// Whether the key may see `project`'s data.
    pub fn sees_project(&self, project: i64) -> bool {
        self.principal.sees_project(project)
    }

    /// Whether the key may see the aggregate `id` (unknown aggregates: only
    /// deployment-wide keys).
    pub async fn sees(&self, kind: Kind, id: &str) -> Result<bool, AccessError> {
        match self.principal.project {
            None => Ok(true),
            Some(own) => Ok(self.guard.owner(kind, id).await? == Some(own)),
        }
    }

    /// The project a create command writes to: the body's `project_id`, defaulting to
    /// the key's project. Another project than the key's is a 404; a deployment-wide key
    /// must name a registered project.
    pub async fn project_for(&self, requested: Option<i64>) -> Result<i64, AccessError> {
        match (self.principal.project, requested) {
            (Some(own), None) => Ok(own),
            (Some(own), Some(asked)) if asked == own => Ok(own),
            (Some(_), Some(_)) => Err(AccessError::NotFound("project")),
            (None, None) => Err(AccessError::Invalid {
                field: "project_id".into(),
                message: "required with a deployment-wide key".into(),
            }),
            (None, Some(asked)) => {
                self.check_project("project_id", asked).await?;
                Ok(asked)
            }
        }
    }

    /// Checks that the key may use `project`, named in `field` (e.g. a batch job's
    /// projects): another project is a 404; for a deployment-wide key, an unregistered
    /// one is a 422.
    pub async fn check_project(&self, field: &str, project: i64) -> Result<(), AccessError> {
        match self.principal.project {
            Some(own) if own == project => Ok(()),
            Some(_) => Err(AccessError::NotFound("project")),
            None if self.guard.projects().exists(project).await? => Ok(()),
            None => Err(AccessError::UnknownProject {
                field: field.to_string(),
                project,
            }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AccessError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(AccessError::Unauthenticated(
                "missing API key: send Authorization: Bearer <key>",
            ))
    }
}
