//! The identity of one event store ("deployment"), created by the migrations.
//!
//! Everything a deployment puts on NATS carries it: its JetStream stream is bound to it
//! (see [`crate::EventStream::ensure`]), every relayed message has a `CC-Deployment`
//! header, and its core NATS subjects live under `<prefix>.<deployment>.…`. Two
//! deployments that share a NATS server and a subject prefix therefore never act on each
//! other's messages: the second is refused when it meets the first one's stream.

use std::fmt;

use sqlx::PgPool;

/// Header: the deployment whose relay published the message.
pub const HEADER_DEPLOYMENT: &str = "CC-Deployment";

/// A deployment id: 32 lowercase hex digits (a UUID without dashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Deployment(String);

impl Deployment {
    /// The deployment of the event store behind `pool`.
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let id: String = sqlx::query_scalar("SELECT replace(id::text, '-', '') FROM deployment")
            .fetch_one(pool)
            .await?;
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 hex digits, enough to tell deployments apart in a message.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(8)]
    }

    /// The prefix of this deployment's core NATS subjects (wake-ups, view changes,
    /// revocations): `<prefix>.<deployment>`. Messages of another deployment on the same
    /// server and prefix never reach a subscriber of this one.
    pub fn core_prefix(&self, prefix: &str) -> String {
        format!("{prefix}.{}", self.0)
    }

    /// True unless `headers` name another deployment. A message without the header comes
    /// from a relay older than deployment ids; the stream's binding vouches for it.
    pub fn owns(&self, headers: Option<&async_nats::HeaderMap>) -> bool {
        match headers.and_then(|h| h.get(HEADER_DEPLOYMENT)) {
            Some(value) => value.as_str() == self.0,
            None => true,
        }
    }
}

impl fmt::Display for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_owned_unless_it_names_another_deployment() {
        let ours = Deployment("a".repeat(32));
        assert!(ours.owns(None));
        let mut headers = async_nats::HeaderMap::new();
        assert!(ours.owns(Some(&headers)));
        headers.insert(HEADER_DEPLOYMENT, "a".repeat(32).as_str());
        assert!(ours.owns(Some(&headers)));
        headers.insert(HEADER_DEPLOYMENT, "b".repeat(32).as_str());
        assert!(!ours.owns(Some(&headers)));
        assert_eq!(ours.core_prefix("cc"), format!("cc.{}", "a".repeat(32)));
    }
}
