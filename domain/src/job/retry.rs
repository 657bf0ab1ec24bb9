//! Failed attempts: the retry policy and its backoff.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;

use super::state::Job;
use super::{JobError, JobEvent, RetryPolicy, RETRY_MAX_SECONDS};

impl Job {
    pub(super) async fn fail(
        &mut self,
        error: String,
        traceback: Option<String>,
        retry: RetryPolicy,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), JobError> {
        let record = self.running("fail")?;
        if record.cancel_requested {
            let event = JobEvent::JobCancelled {
                reason: Some(format!(
                    "cancel requested; the worker stopped with: {error}"
                )),
                at,
            };
            sink.write(event, self).await;
            return Ok(());
        }
        let attempt = record.attempts;
        let failed = record.failed_attempts();
        let retry_at = match retry {
            RetryPolicy::Backoff { base_ms } if failed < record.max_attempts => {
                Some(at + backoff_after(failed, base_ms))
            }
            RetryPolicy::Backoff { .. } | RetryPolicy::Never => None,
        };
        let event = JobEvent::JobFailed {
            error,
            traceback,
            attempt,
            retry_at,
            at,
        };
        sink.write(event, self).await;
        Ok(())
    }
}

/// Backoff before retrying after failed attempt number `attempt` (1-based), with the
/// default base: 5 s, 10 s, 20 s, … capped at one hour.
#[cfg(test)]
pub(super) fn retry_backoff(attempt: u32) -> Duration {
    backoff_after(attempt, (super::RETRY_BASE_SECONDS * 1000) as u32)
}

/// Backoff after failed attempt `attempt` (1-based) when the first backoff is `base_ms`:
/// doubled per earlier attempt, capped at [`RETRY_MAX_SECONDS`].
pub fn backoff_after(attempt: u32, base_ms: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(24);
    let ms = (i64::from(base_ms) << exponent).min(RETRY_MAX_SECONDS * 1000);
    Duration::milliseconds(ms)
}
