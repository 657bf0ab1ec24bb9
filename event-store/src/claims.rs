//! Uniqueness claims that span aggregates (a technology title per project).
//!
//! A claim is taken and released inside the same transaction as the events that need it,
//! so a crash can never leave a claim without its events or the reverse. A claim held by
//! a concurrent, uncommitted transaction makes the second claimant wait for it to end.

use sqlx::PgConnection;

use crate::StoreError;

/// A key that must be unique within its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// What is unique, and within what (e.g. `technology_title:42`).
    pub scope: String,
    /// The normalized unique value.
    pub key: String,
}

/// Takes `claim` for `owner_id`, or fails with [`StoreError::ClaimTaken`] when another
/// owner holds it. Taking a claim one already holds succeeds.
pub async fn claim(
    conn: &mut PgConnection,
    claim: &Claim,
    owner_id: &str,
) -> Result<(), StoreError> {
    let taken = sqlx::query(
        "INSERT INTO unique_claims (scope, key, owner_id) VALUES ($1, $2, $3) \
         ON CONFLICT (scope, key) DO UPDATE SET owner_id = EXCLUDED.owner_id \
             WHERE unique_claims.owner_id = EXCLUDED.owner_id",
    )
    .bind(&claim.scope)
    .bind(&claim.key)
    .bind(owner_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 0;
    if taken {
        return Err(StoreError::ClaimTaken {
            scope: claim.scope.clone(),
            key: claim.key.clone(),
        });
    }
    Ok(())
}

/// Releases `claim` if `owner_id` holds it.
pub async fn release(
    conn: &mut PgConnection,
    claim: &Claim,
    owner_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM unique_claims WHERE scope = $1 AND key = $2 AND owner_id = $3")
        .bind(&claim.scope)
        .bind(&claim.key)
        .bind(owner_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes many new claims at once (bulk loads). Fails with [`StoreError::ClaimTaken`],
/// naming the first, if any is already held.
pub async fn claim_batch(
    conn: &mut PgConnection,
    claims: &[(Claim, String)],
) -> Result<(), StoreError> {
    let scopes: Vec<&str> = claims.iter().map(|(c, _)| c.scope.as_str()).collect();
    let keys: Vec<&str> = claims.iter().map(|(c, _)| c.key.as_str()).collect();
    let owners: Vec<&str> = claims.iter().map(|(_, o)| o.as_str()).collect();
    let taken: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.scope, c.key FROM UNNEST($1::text[], $2::text[]) AS c(scope, key) \
           JOIN unique_claims u USING (scope, key)",
    )
    .bind(&scopes)
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    if let Some((scope, key)) = taken.into_iter().next() {
        return Err(StoreError::ClaimTaken { scope, key });
    }
    sqlx::query(
        "INSERT INTO unique_claims (scope, key, owner_id) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
    )
    .bind(&scopes)
    .bind(&keys)
    .bind(&owners)
    .execute(conn)
    .await
    .map_err(|err| match crate::error::violated_constraint(&err) {
        Some("unique_claims_pkey") => StoreError::ClaimTaken {
            scope: "(batch)".into(),
            key: "(a concurrent claim)".into(),
        },
        _ => err.into(),
    })?;
    Ok(())
}
