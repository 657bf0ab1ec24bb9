//! `Idempotency-Key`: the same key with the same request returns the first response and
//! appends nothing; with another request it is refused (422).
//!
//! The key is reserved as the *first* statement of the command's writes and the response
//! saved in the same transaction, so a concurrent duplicate waits on the reservation (or,
//! in the same batch, is refused at once) and then replays, and a crash leaves either
//! both events and response or neither. Keys are kept for [`RETENTION`].

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};

use crate::CommandError;

/// How long a key and its response are kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// A keyed request: the key, whose keys it is among, and a hash of what was asked.
#[derive(Debug, Clone)]
pub struct IdempotentRequest {
    scope: String,
    key: String,
    request_hash: Vec<u8>,
}

impl IdempotentRequest {
    /// Hashes method, path and body; `scope` separates callers (the actor).
    pub fn new(key: String, scope: &str, method: &str, path: &str, body: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        for part in [method.as_bytes(), path.as_bytes(), body] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Self {
            scope: scope.to_string(),
            key,
            request_hash: hasher.finalize().to_vec(),
        }
    }

    /// The key as the client sent it.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The answer saved with a key, replayed byte for byte: an HTTP status, header names
/// and values, and the body. The executor stores it without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedReply {
    /// The status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// What the store knows of a key.
pub enum Lookup {
    /// Never seen: execute the command.
    Fresh,
    /// Seen with this very request: answer this.
    Replay(SavedReply),
    /// Seen with another request.
    Mismatch,
}

/// Looks `request`'s key up.
pub async fn lookup(pool: &PgPool, request: &IdempotentRequest) -> Result<Lookup, CommandError> {
    let row = sqlx::query(
        "SELECT request_hash, response_status, response_headers, response_body \
           FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(&request.scope)
    .bind(&request.key)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Lookup::Fresh);
    };
    let hash: Vec<u8> = row.try_get("request_hash")?;
    if hash != request.request_hash {
        return Ok(Lookup::Mismatch);
    }
    let status: Option<i16> = row.try_get("response_status")?;
    let headers: Option<sqlx::types::Json<Vec<(String, String)>>> =
        row.try_get("response_headers")?;
    let body: Option<Vec<u8>> = row.try_get("response_body")?;
    match (status, headers, body) {
        (Some(status), Some(headers), Some(body)) => {
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| CommandError::CorruptIdempotencyRecord {
                    key: request.key.clone(),
                    reason: format!("stored status {status} is invalid"),
                })?;
            Ok(Lookup::Replay(SavedReply {
                status,
                headers: headers.0,
                body,
            }))
        }
        // Reserved rows are only ever committed with their response.
        _ => Err(CommandError::CorruptIdempotencyRecord {
            key: request.key.clone(),
            reason: "saved without its response".into(),
        }),
    }
}

/// Reserves the key inside the command's transaction; `false` when another request holds
/// it (the caller rolls back and looks the key up again).
pub async fn reserve(
    conn: &mut PgConnection,
    request: &IdempotentRequest,
) -> Result<bool, CommandError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) \
         ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(&request.scope)
    .bind(&request.key)
    .bind(&request.request_hash)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Saves the response for the reserved key, in the same transaction.
pub async fn save(
    conn: &mut PgConnection,
    request: &IdempotentRequest,
    reply: &SavedReply,
) -> Result<(), CommandError> {
    sqlx::query(
        "UPDATE idempotency_keys \
            SET response_status = $3, response_headers = $4, response_body = $5 \
          WHERE scope = $1 AND key = $2",
    )
    .bind(&request.scope)
    .bind(&request.key)
    .bind(i16::try_from(reply.status).unwrap_or(500))
    .bind(sqlx::types::Json(&reply.headers))
    .bind(&reply.body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes keys older than [`RETENTION`]; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let seconds = RETENTION.as_secs_f64();
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(seconds)
    .execute(pool)
    .await?
    .rows_affected())
}
