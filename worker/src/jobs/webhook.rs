//! `webhook_delivery`: POSTs `payload` (as JSON) to `url`, signed.
//!
//! Headers: `Content-Type: application/json`, `X-CC-Signature: sha256=<hex>` (HMAC-SHA256
//! of the exact body with the configured secret), `X-CC-Job-Id` (the same on every
//! attempt, so a receiver can drop repeats) and `X-CC-Attempt`. A 2xx completes the job;
//! a 5xx, 408, 429, a timeout or a network error fails the attempt retryably (the job is
//! re-queued with backoff while attempts remain); any other status fails the job at once.
//! Redirects are not followed. Private, loopback and link-local destinations are refused
//! unless the deployment allows them (`destinations.rs`).

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::context::{JobContext, JobFailure};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-CC-Signature";

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the value of [`SIGNATURE_HEADER`].
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) async fn deliver(
    context: &JobContext,
    url: &str,
    payload: &Value,
    timeout_ms: i64,
) -> Result<Value, JobFailure> {
    let Some(secret) = context.webhook_secret.as_ref().map(|s| s.expose()) else {
        return Err(JobFailure::permanent(
            "no webhook secret is configured (CC_WEBHOOK_SECRET): deliveries are always signed",
        ));
    };
    if !context.webhook_allow_private {
        if let Some(why) = crate::destinations::refused(url).await {
            return Err(JobFailure::permanent(why));
        }
    }
    let body = serde_json::to_vec(payload)
        .map_err(|e| JobFailure::permanent(format!("cannot encode the payload: {e}")))?;
    let request = context
        .http
        .post(url)
        .timeout(Duration::from_millis(timeout_ms.unsigned_abs()))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sign(secret, &body))
        .header("X-CC-Job-Id", &context.id)
        .header("X-CC-Attempt", context.attempt.to_string())
        .body(body);
    let started = Instant::now();
    let response = tokio::select! {
        () = context.cancel.cancelled() => return Err(JobFailure::stopped()),
        response = request.send() => response,
    };
    let elapsed_ms = started.elapsed().as_millis();
    let response = response.map_err(|err| {
        let kind = if err.is_timeout() {
            format!("timed out after {timeout_ms} ms")
        } else {
            format!("request failed: {err}")
        };
        JobFailure::retryable(format!("webhook to {url} {kind}"))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(json!({
            "url": url,
            "status": status.as_u16(),
            "elapsed_ms": elapsed_ms,
        }));
    }
    let snippet = body_start(response).await;
    let error = format!("webhook to {url} answered {status}: {snippet}");
    let retryable = status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    if retryable {
        Err(JobFailure::retryable(error))
    } else {
        Err(JobFailure::permanent(error))
    }
}

/// The first 200 characters of the body, reading at most 4 KiB of it.
async fn body_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < 4096 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
