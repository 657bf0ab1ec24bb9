//! The HTTP API's one error type, [`ApiError`], and its one mapping to HTTP: an
//! `application/problem+json` document (RFC 9457) that names the field at fault. Every
//! HTTP crate answers its errors through it; the domain, the event store and the command
//! executor know nothing of HTTP, and their errors are mapped here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod problem;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use commandcenter_domain::job::JobError;
use commandcenter_domain::technology::TechnologyError;
use commandcenter_domain::ValidationError;
use commandcenter_event_store::StoreError;
use commandcenter_executor::CommandError;
use serde_json::json;

use crate::problem::{problem_body, problem_response, Refusal};

/// The cause of an internal or unavailable error, kept for the log.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything a command or event-store request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field value breaks a rule.
    #[error("{0}")]
    Validation(ValidationError),
    /// The body is not JSON at all.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is not declared as JSON.
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    /// The body exceeds the configured limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A header or query parameter is malformed.
    #[error("{name}: {message}")]
    BadParameter {
        /// The header or parameter name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The resource does not exist (or no longer does).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No route has this path.
    #[error("no route {0}")]
    NoRoute(String),
    /// The route exists, but not with this method.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// The command conflicts with the resource's current state or with a concurrent write.
    #[error("{detail}")]
    Conflict {
        /// What conflicts.
        detail: String,
        /// The field at fault, if one is.
        field: Option<String>,
    },
    /// `If-Match` named another version than the current one.
    #[error("version {expected} was expected but the current version is {actual}")]
    PreconditionFailed {
        /// From `If-Match`.
        expected: i64,
        /// The aggregate's version.
        actual: i64,
    },
    /// The same Idempotency-Key came with another request.
    #[error("Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// A dependency (the database) is unavailable; retry later. A server fault: logged
    /// at ERROR.
    #[error("service unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The connection to the database was lost while a command committed, and whether it
    /// was applied could not be read back: 503 with `Retry-After`, a type of its own
    /// (`outcome-unknown`), unlike `unavailable`, which means nothing was applied. A server
    /// fault: logged at ERROR.
    #[error(
        "the database connection was lost while the command was committing: it may have \
         been applied; retry it with the same Idempotency-Key, or read the resource, to know"
    )]
    OutcomeUnknown(#[source] BoxError),
    /// Too much expensive work is running; retry later (503 with `Retry-After`).
    #[error("{0}")]
    Overloaded(String),
    /// The read model has not reached the position the client asked for
    /// (`X-CC-Min-Position`) in time; retry later. The client's choice, not a fault.
    #[error("{0}")]
    NotCaughtUp(String),
    /// A bug or an unexpected failure; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
    /// The calling key may not do this (or not on this project): the access guard's
    /// refusal, answered with its own headers.
    #[error("{0}")]
    Access(Box<dyn Refusal>),
}

impl ApiError {
    /// A 409 naming no field.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict {
            detail: detail.into(),
            field: None,
        }
    }

    /// An internal error caused by `cause` (logged, never shown to the client).
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MalformedJson(_) | Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::Unavailable(_)
            | Self::OutcomeUnknown(_)
            | Self::NotCaughtUp(_)
            | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Access(refusal) => refusal.status(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation",
            Self::MalformedJson(_) => "malformed-json",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::BadParameter { .. } => "bad-parameter",
            Self::NotFound(_) => "not-found",
            Self::NoRoute(_) => "no-route",
            Self::MethodNotAllowed(_) => "method-not-allowed",
            Self::Conflict { .. } => "conflict",
            Self::PreconditionFailed { .. } => "precondition-failed",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
            Self::Unavailable(_) => "unavailable",
            Self::OutcomeUnknown(_) => "outcome-unknown",
            Self::NotCaughtUp(_) => "not-caught-up",
            Self::Overloaded(_) => "overloaded",
            Self::Internal(_) => "internal",
            Self::Access(refusal) => refusal.kind(),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Self::Validation(e) => Some(&e.field),
            Self::MalformedJson(_) | Self::PayloadTooLarge { .. } | Self::UnsupportedMediaType => {
                Some("body")
            }
            Self::BadParameter { name, .. } => Some(name),
            Self::Conflict { field, .. } => field.as_deref(),
            Self::PreconditionFailed { .. } => Some("If-Match"),
            Self::IdempotencyKeyReused => Some("Idempotency-Key"),
            Self::Access(refusal) => refusal.field(),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Access(refusal) = &self {
            return refusal.to_response();
        }
        let status = self.status();
        let detail = match &self {
            Self::Internal(cause) => {
                tracing::error!(cause = %chain(cause.as_ref()), "request failed");
                "an unexpected error occurred; it has been logged".to_string()
            }
            Self::Unavailable(cause) => {
                tracing::error!(cause = %chain(cause.as_ref()), "a dependency is unavailable");
                self.to_string()
            }
            Self::OutcomeUnknown(cause) => {
                tracing::error!(cause = %chain(cause.as_ref()), "a command's outcome is unknown");
                self.to_string()
            }
            Self::Validation(e) => e.message.clone(),
            other => other.to_string(),
        };
        let mut body = problem_body(status, self.kind(), &detail, self.field());
        if let Self::PreconditionFailed { actual, .. } = &self {
            body["current_version"] = json!(actual);
        }
        problem_response(status, &body)
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::Validation(err)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict { .. } => {
                Self::conflict("the resource was changed concurrently; reload it and retry")
            }
            StoreError::ClaimTaken { scope, key } => {
                match commandcenter_domain::technology::UniqueClaim::from_stored(&scope, &key) {
                    Some(claim) => Self::Conflict {
                        detail: claim.conflict(),
                        field: Some(claim.field().to_string()),
                    },
                    None => Self::conflict(format!("{key:?} is already taken ({scope})")),
                }
            }
            // Overload, not a fault: logged by the store, answered 503 with Retry-After.
            err @ StoreError::Busy { .. } => Self::Overloaded(err.to_string()),
            err @ StoreError::CommitUnknown(_) => Self::OutcomeUnknown(err.into()),
            err if err.is_unavailable() => Self::Unavailable(err.into()),
            err => Self::Internal(err.into()),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    /// A query string that does not parse: 400 naming `query`.
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::BadParameter {
            name: "query".into(),
            message: rejection.body_text(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}

impl From<TechnologyError> for ApiError {
    fn from(err: TechnologyError) -> Self {
        match err {
            TechnologyError::NotFound | TechnologyError::Deleted => Self::NotFound("technology"),
            TechnologyError::Invalid(e) => Self::Validation(e),
            err @ (TechnologyError::AlreadyExists | TechnologyError::Archived) => {
                Self::conflict(err.to_string())
            }
        }
    }
}

impl From<JobError> for ApiError {
    fn from(err: JobError) -> Self {
        match err {
            JobError::NotFound | JobError::Deleted => Self::NotFound("job"),
            JobError::Invalid(e) => Self::Validation(e),
            err @ JobError::ProgressWentBackwards { .. } => Self::Conflict {
                detail: err.to_string(),
                field: Some("progress".into()),
            },
            err => Self::conflict(err.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Technology(err) => err.into(),
            CommandError::Job(err) => err.into(),
            CommandError::Validation(err) => Self::Validation(err),
            CommandError::PreconditionFailed { expected, actual } => {
                Self::PreconditionFailed { expected, actual }
            }
            err @ (CommandError::Concurrent | CommandError::IdempotencyInProgress) => {
                Self::conflict(err.to_string())
            }
            CommandError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            CommandError::Store(err) => err.into(),
            err => Self::Internal(err.into()),
        }
    }
}

/// `err` and its sources, `: `-separated, for one log field.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
