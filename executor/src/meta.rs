//! Who asked for a command and which request chain it belongs to.

/// Who asked, and which request chain this is, recorded in every event's metadata. The
/// HTTP layer fills it from the request's headers and key; workers and the seeder name
/// themselves.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// This request (from `X-Request-Id`, or generated).
    pub request_id: String,
    /// The business flow it belongs to (from `X-Correlation-Id`, else the trace id of
    /// `traceparent`, else the request id).
    pub correlation_id: String,
    /// The message that caused it (from `X-Causation-Id`), if any.
    pub causation_id: Option<String>,
    /// The acting key's id (`anonymous` where no key was needed).
    pub actor: String,
}
