//! One aggregate's events in sequence order, straight from the event store.

use sqlx::PgPool;

use crate::stored_event::STORED_EVENT_COLUMNS;
use crate::{StoreError, StoredEvent};

/// Every event of `aggregate_type/aggregate_id`, oldest first (empty when unknown).
pub async fn read_history(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events \
          WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await?;
    Ok(StoredEvent::from_rows(&rows)?)
}

/// Up to `limit` events of `aggregate_type/aggregate_id` after sequence `after` and up to
/// sequence `upto`, oldest first.
pub async fn read_history_after(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT {STORED_EVENT_COLUMNS} FROM events \
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence <= $5 \
          ORDER BY sequence LIMIT $4"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(after)
        .bind(limit)
        .bind(upto)
        .fetch_all(pool)
        .await?;
    Ok(StoredEvent::from_rows(&rows)?)
}
