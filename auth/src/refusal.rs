//! [`AccessError`] as an `application/problem+json` response, shaped like the rest of the
//! API's problems, and as an [`ApiError`] for handlers that mix access checks with other
//! failures.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use commandcenter_api_error::problem::{problem_body, problem_response, Refusal};
use commandcenter_api_error::ApiError;

use crate::AccessError;

impl AccessError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::UnknownProject { .. } | Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) | Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The problem type's last segment.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::UnknownProject { .. } | Self::Invalid { .. } => "validation",
            Self::RateLimited { .. } => "rate-limited",
            Self::TooMany(_) => "too-many",
            Self::Timeout(_) => "timeout",
            Self::Database(_) => "unavailable",
        }
    }

    /// The field at fault, if one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::UnknownProject { field, .. } | Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl Refusal for AccessError {
    fn status(&self) -> StatusCode {
        AccessError::status(self)
    }

    fn kind(&self) -> &'static str {
        AccessError::kind(self)
    }

    fn field(&self) -> Option<&str> {
        AccessError::field(self)
    }

    fn to_response(&self) -> Response {
        let status = self.status();
        let detail = match self {
            Self::Database(err) => {
                tracing::warn!(%err, "access check could not read the database");
                "the access check could not be completed; try again".to_string()
            }
            Self::Invalid { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let body = problem_body(status, self.kind(), &detail, self.field());
        let mut response = problem_response(status, &body);
        let headers = response.headers_mut();
        match self {
            Self::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"commandcenter\""),
                );
            }
            Self::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::TooMany(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl IntoResponse for AccessError {
    fn into_response(self) -> Response {
        self.to_response()
    }
}

impl From<AccessError> for ApiError {
    fn from(err: AccessError) -> Self {
        ApiError::Access(Box::new(err))
    }
}
