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
