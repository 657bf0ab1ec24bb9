//! Keys recently authenticated, so a request does not read the key table: bounded, each
//! entry trusted for `GuardConfig::principal_ttl`, and dropped at once when its key is
//! revoked. Entries are keyed by the SHA-256 of the token; tokens themselves are not kept.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::Guard;
use crate::{AccessError, Principal};

/// Most authenticated keys remembered; the least used are forgotten first.
const MAX_PRINCIPALS: u64 = 100_000;

/// sha256(token) → principal, for at most the configured time.
pub(super) struct Principals(Cache<[u8; 32], Arc<Principal>>);

impl Principals {
    /// An empty memory whose entries live `ttl`.
    pub(super) fn new(ttl: Duration) -> Self {
        Self(
            Cache::builder()
                .max_capacity(MAX_PRINCIPALS)
                .time_to_live(ttl)
                .build(),
        )
    }

    /// Drops every token of `key_id`.
    pub(super) fn forget(&self, key_id: &str) {
        for (digest, principal) in &self.0 {
            if principal.key_id == key_id {
                self.0.invalidate(&*digest);
            }
        }
    }
}

impl Guard {
    /// The principal of `token`, from memory when read recently.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Arc<Principal>>, AccessError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let principals = &self.0.principals.0;
        if let Some(principal) = principals.get(&digest) {
            return Ok((!principal.expired_at(Utc::now())).then_some(principal));
        }
        let Some(principal) = self.0.keys.authenticate(token).await? else {
            principals.invalidate(&digest);
            return Ok(None);
        };
        // Revoked while it was being read: never cache it.
        if self.is_revoked(&principal.key_id) {
            return Ok(None);
        }
        let principal = Arc::new(principal);
        principals.insert(digest, principal.clone());
        Ok(Some(principal))
    }
}
