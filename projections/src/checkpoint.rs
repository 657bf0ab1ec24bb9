//! `projection_checkpoints`: the position of the last event each read model applied,
//! written in the same transaction as the rows it produced.

use commandcenter_event_store::Position;
use sqlx::PgConnection;

/// The read model's checkpoint, `Position::ZERO` if it never applied anything.
pub async fn load_checkpoint(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<Position, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT tx_id, global_position FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or(Position::ZERO, |(tx, pos)| Position::new(tx as u64, pos)))
}

/// Moves the read model's checkpoint to `position`.
pub async fn save_checkpoint(
    conn: &mut PgConnection,
    projection: &str,
    position: Position,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, tx_id, global_position, updated_at) \
         VALUES ($1, $2, $3, now()) \
         ON CONFLICT (projection) DO UPDATE \
            SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position, updated_at = now()",
    )
    .bind(projection)
    .bind(position.tx_id as i64)
    .bind(position.global_position)
    .execute(conn)
    .await?;
    Ok(())
}
