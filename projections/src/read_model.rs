//! What a read model is to the runtime: a name, the aggregate type it follows, the
//! tables it owns, and how a batch of events changes those tables.

use std::future::Future;

use commandcenter_event_store::StoredEvent;
use sqlx::PgConnection;

use crate::{Change, ProjectionError};

/// A read model kept by a projector.
pub trait ReadModel: Send + Sync + 'static {
    /// The read model's name (`technology_view`), also its checkpoint's key.
    const NAME: &'static str;
    /// The aggregate type whose events it follows.
    const AGGREGATE_TYPE: &'static str;
    /// The tables it owns, all rebuilt and swapped together.
    const TABLES: &'static [&'static str];

    /// Applies `events` (in feed order, all of [`Self::AGGREGATE_TYPE`], none applied
    /// before) inside the caller's transaction. Table names are unqualified, so a
    /// rebuild can point them at its shadow tables with `search_path`. Returns the
    /// changed rows, to be announced after the commit.
    fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> impl Future<Output = Result<Vec<Change>, ProjectionError>> + Send;
}

/// The advisory lock every apply transaction of read model `name` takes.
pub fn apply_lock_name(name: &str) -> String {
    format!("apply:{name}")
}

/// Writes a batch's new rows — one upsert statement taking them as a JSON array — and
/// its deletions.
pub(crate) async fn write_rows(
    conn: &mut PgConnection,
    upsert: &str,
    delete: &str,
    upserts: Vec<serde_json::Value>,
    deletes: &[String],
) -> Result<(), sqlx::Error> {
    if !upserts.is_empty() {
        sqlx::query(upsert)
            .bind(serde_json::Value::Array(upserts))
            .execute(&mut *conn)
            .await?;
    }
    if !deletes.is_empty() {
        sqlx::query(delete)
            .bind(deletes)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
