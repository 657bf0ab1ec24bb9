//! Revocation: `keys revoke` (CLI or HTTP) publishes the key id on
//! `<prefix>.keys.revoked`; every server also polls for keys revoked or expired since its
//! last look, in case an announcement was missed. Either way the key's cached
//! authentication is dropped and its open sockets are told to close.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::Guard;
use crate::AccessError;

/// The subject revocations are announced on.
pub fn revocation_subject(prefix: &str) -> String {
    format!("{prefix}.keys.revoked")
}

/// Announces that `key_id` was revoked, so servers close its sockets at once (they would
/// otherwise notice within their poll interval).
pub async fn announce_revocation(
    nats: &async_nats::Client,
    prefix: &str,
    key_id: &str,
) -> Result<(), async_nats::Error> {
    nats.publish(revocation_subject(prefix), key_id.to_string().into())
        .await?;
    nats.flush().await?;
    Ok(())
}

impl Guard {
    /// Forgets everything known about `key_id` and tells its sockets to close. The key's
    /// session stays, marked revoked, so a request that authenticated just before is
    /// still refused when it reaches its session.
    pub fn forget(&self, key_id: &str) {
        self.session(key_id).revoked.send_replace(true);
        self.0.principals.forget(key_id);
    }

    /// Whether this process knows `key_id` to be revoked.
    pub(super) fn is_revoked(&self, key_id: &str) -> bool {
        self.0
            .sessions
            .get(key_id)
            .is_some_and(|session| session.is_revoked())
    }

    /// Revokes a key, here at once and on other servers through `nats` (when given).
    pub async fn revoke(
        &self,
        key_id: &str,
        nats: Option<(&async_nats::Client, &str)>,
    ) -> Result<Option<crate::ApiKey>, AccessError> {
        let revoked = self.0.keys.revoke(key_id).await?;
        if revoked.is_some() {
            self.forget(key_id);
            if let Some((client, prefix)) = nats {
                if let Err(err) = announce_revocation(client, prefix, key_id).await {
                    tracing::warn!(%err, key_id, "revocation not announced; other servers notice it by polling");
                }
            }
        }
        Ok(revoked)
    }

    /// Applies revocations as they are announced on NATS, and polls the database for
    /// revocations and expiries, until `shutdown`.
    pub async fn watch_revocations(
        self,
        nats: async_nats::Client,
        prefix: String,
        shutdown: CancellationToken,
    ) {
        let mut announced = match nats.subscribe(revocation_subject(&prefix)).await {
            Ok(subscriber) => Some(subscriber),
            Err(err) => {
                tracing::warn!(%err, "cannot subscribe to key revocations; polling only");
                None
            }
        };
        let mut since: Option<DateTime<Utc>> = None;
        let mut every = tokio::time::interval(self.0.config.revocation_poll);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                message = async {
                    match announced.as_mut() {
                        Some(s) => futures::StreamExt::next(s).await,
                        None => std::future::pending().await,
                    }
                } => match message {
                    Some(message) => {
                        if let Ok(id) = std::str::from_utf8(&message.payload) {
                            self.forget(id.trim());
                        }
                    }
                    None => announced = None,
                },
                _ = every.tick() => {
                    let from = since.unwrap_or_else(Utc::now) - chrono::Duration::seconds(1);
                    match self.0.keys.ended_since(from).await {
                        Ok((ids, now)) => {
                            for id in ids {
                                self.forget(&id);
                            }
                            since = Some(now);
                        }
                        Err(err) => tracing::warn!(%err, "cannot poll for key revocations; will retry"),
                    }
                }
            }
        }
    }
}
