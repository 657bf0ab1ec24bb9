//! API keys: created once and shown once as `cc_<id>_<secret>`; the store keeps the id and
//! `sha256(secret)` only. The id is public (listed, recorded as `actor`); the secret is 256
//! random bits, so a plain hash is enough and lookup is by id, compared in constant time.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::{AccessError, Principal, Role};

/// A key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    /// Public id, recorded as `actor` in the events the key causes.
    pub id: String,
    /// The project it is scoped to; `null` for a deployment-wide admin key.
    pub project_id: Option<i64>,
    /// Its role.
    pub role: Role,
    /// A label.
    pub name: String,
    /// When it was created.
    #[serde(serialize_with = "commandcenter_domain::serde_helpers::time")]
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    #[serde(serialize_with = "commandcenter_domain::serde_helpers::opt_time")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    #[serde(serialize_with = "commandcenter_domain::serde_helpers::opt_time")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// `active`, `revoked` or `expired`.
    #[schema(value_type = KeyStatus)]
    pub status: &'static str,
}

/// Whether a key works (the `status` of [`ApiKey`]; a schema only).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum KeyStatus {
    /// It works.
    Active,
    /// It was revoked.
    Revoked,
    /// It expired.
    Expired,
}

/// A key just created: the only time its secret exists outside the caller. Its `Debug`
/// form leaves the token out.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct NewKey {
    /// The key's record.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The bearer token, `cc_<id>_<secret>`. Shown once; store it now.
    pub token: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("key", &self.key)
            .field("token", &"<redacted>")
            .finish()
    }
}

type KeyRow = (
    String,
    Option<i64>,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// What authentication reads: hash, project, role, expiry.
type SecretRow = (Vec<u8>, Option<i64>, String, Option<DateTime<Utc>>);

const KEY_COLUMNS: &str = "id, project_id, role, name, created_at, expires_at, revoked_at";

fn key_from_row(row: KeyRow) -> ApiKey {
    let (id, project_id, role, name, created_at, expires_at, revoked_at) = row;
    let status = if revoked_at.is_some() {
        "revoked"
    } else if expires_at.is_some_and(|at| at <= Utc::now()) {
        "expired"
    } else {
        "active"
    };
    ApiKey {
        id,
        project_id,
        // The column's CHECK admits only the four names.
        role: role.parse().unwrap_or(Role::Reader),
        name,
        created_at,
        expires_at,
        revoked_at,
        status,
    }
}

/// A presented token split into its id and secret, if it has the shape of one.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix("cc_")?.split_once('_')?;
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex(id, 16) && hex(secret, 64)).then_some((id, secret))
}

/// `sha256` of a token's secret part.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn random_hex(bytes: usize) -> Result<String, AccessError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|err| AccessError::Invalid {
        field: "key".into(),
        message: format!("no randomness available to make a key: {err}"),
    })?;
    Ok(hex::encode(buf))
}

/// `--expires`: an RFC 3339 time, or a span from `now` of at most 100 years such as `90d`,
/// `12h`, `30m` or `1h 30m` (humantime's units: `M` is months, `m` minutes).
pub fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let at = if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        at.with_timezone(&Utc)
    } else {
        let span = humantime::parse_duration(text)
            .ok()
            .and_then(|span| Duration::from_std(span).ok())
            // 100 years as humantime counts them (365.25 days each).
            .filter(|span| *span > Duration::zero() && *span <= Duration::seconds(100 * 31_557_600))
            .ok_or_else(|| {
                format!(
                    "{text:?} is neither an RFC 3339 time nor a span of at most 100 years like \
                     90d, 12h or 1h 30m"
                )
            })?;
        now + span
    };
    if at <= now {
        return Err(format!("{text:?} is not in the future"));
    }
    Ok(at)
}

/// The key table.
#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
}

impl KeyStore {
    /// A store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a key. Only an admin key may be deployment-wide (`project` = `None`).
    pub async fn create(
        &self,
        project: Option<i64>,
        role: Role,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<NewKey, AccessError> {
        let mut tx = self.pool.begin().await?;
        let key = insert_key(&mut tx, project, role, name, expires_at).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Every key, or those of one project.
    pub async fn list(&self, project: Option<i64>) -> Result<Vec<ApiKey>, AccessError> {
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE $1::bigint IS NULL OR project_id = $1 ORDER BY created_at, id"
        ))
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(key_from_row).collect())
    }

    /// One key.
    pub async fn get(&self, id: &str) -> Result<Option<ApiKey>, AccessError> {
        let row: Option<KeyRow> =
            sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(key_from_row))
    }

    /// Revokes a key (revoking twice keeps the first time). `None` if there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<Option<ApiKey>, AccessError> {
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) \
             WHERE id = $1 RETURNING {KEY_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(key_from_row))
    }

    /// The principal of a presented token, if it is a live key.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, AccessError> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(None);
        };
        let row: Option<SecretRow> = sqlx::query_as(
            "SELECT secret_sha256, project_id, role, expires_at FROM api_keys \
             WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((stored, project, role, expires_at)) = row else {
            return Ok(None);
        };
        if !bool::from(stored.as_slice().ct_eq(&secret_hash(secret))) {
            return Ok(None);
        }
        let Ok(role) = role.parse() else {
            return Ok(None);
        };
        Ok(Some(Principal {
            key_id: id.to_string(),
            role,
            project,
            expires_at,
        }))
    }

    /// On a database with no key at all, creates one deployment-wide admin key and returns
    /// it; otherwise `None`. Safe when several servers start at once.
    pub async fn ensure_first_admin(&self) -> Result<Option<NewKey>, AccessError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('commandcenter:first-admin-key'))")
            .execute(&mut *tx)
            .await?;
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .fetch_one(&mut *tx)
            .await?;
        if any {
            return Ok(None);
        }
        let key = insert_key(
            &mut tx,
            None,
            Role::Admin,
            "first admin key (created on first start)",
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(key))
    }

    /// Ids of keys revoked or expired at or after `since`, and the database's time now.
    pub async fn ended_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(Vec<String>, DateTime<Utc>), AccessError> {
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?;
        let ids = sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE revoked_at >= $1 \
             UNION SELECT id FROM api_keys WHERE expires_at >= $1 AND expires_at <= $2",
        )
        .bind(since)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok((ids, now))
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    project: Option<i64>,
    role: Role,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<NewKey, AccessError> {
    if project.is_none() && role != Role::Admin {
        return Err(AccessError::Invalid {
            field: "project_id".into(),
            message: format!(
                "a {role} key must be scoped to a project; only admin keys may be deployment-wide"
            ),
        });
    }
    crate::check_name(name, 0)?;
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(AccessError::Invalid {
            field: "expires_at".into(),
            message: "must be in the future".into(),
        });
    }
    let id = random_hex(8)?;
    let secret = random_hex(32)?;
    let row: KeyRow = sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, secret_sha256, project_id, role, name, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {KEY_COLUMNS}"
    ))
    .bind(&id)
    .bind(secret_hash(&secret).as_slice())
    .bind(project)
    .bind(role.as_str())
    .bind(name)
    .bind(expires_at)
    .fetch_one(&mut **tx)
    .await
    .map_err(|err| match (&err, project) {
        // The foreign key on projects: no such project.
        (sqlx::Error::Database(db), Some(project)) if db.is_foreign_key_violation() => {
            AccessError::UnknownProject {
                field: "project_id".into(),
                project,
            }
        }
        _ => AccessError::Database(err),
    })?;
    Ok(NewKey {
        key: key_from_row(row),
        token: format!("cc_{id}_{secret}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_shape() {
        let id = "0123456789abcdef";
        let secret = "a".repeat(64);
        assert_eq!(
            parse_token(&format!("cc_{id}_{secret}")),
            Some((id, secret.as_str()))
        );
        assert_eq!(parse_token(&format!("cc_{id}_{}", "a".repeat(63))), None);
        assert_eq!(
            parse_token(&format!("cc_{}_{secret}", "A".repeat(16))),
            None
        );
        assert_eq!(parse_token(&format!("xx_{id}_{secret}")), None);
        assert_eq!(parse_token(""), None);
    }

    #[test]
    fn expiry_takes_times_and_spans() {
        let now = Utc::now();
        assert_eq!(parse_expiry("90d", now), Ok(now + Duration::days(90)));
        assert_eq!(parse_expiry("12h", now), Ok(now + Duration::hours(12)));
        assert!(parse_expiry("2000-01-01T00:00:00Z", now).is_err());
        assert!(parse_expiry("0d", now).is_err());
        assert!(parse_expiry("1h 30m", now).is_ok());
        assert!(parse_expiry("100y", now).is_ok());
        assert!(parse_expiry("101y", now).is_err());
        assert!(parse_expiry("soon", now).is_err());
        assert!(parse_expiry("é", now).is_err());
        assert!(parse_expiry("", now).is_err());
    }
}
