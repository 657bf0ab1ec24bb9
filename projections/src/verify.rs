//! `projections verify [--view NAME]`: compares a read model, row for row, with a fold of
//! the event store, so a lost (or doubled) event is visible to the operator.
//!
//! 1. The event store's events of the read model's aggregate type up to the read model's
//!    checkpoint are folded into fresh tables in a schema of this run's own
//!    (`cc_verify_<name>_<pid>`), through the same `apply` a rebuild uses, in short
//!    transactions.
//! 2. One REPEATABLE READ transaction reads the checkpoint again, folds the events the
//!    live projector applied meanwhile, and compares every table of the read model with
//!    its fold (every column but generated ones, keyed by the primary key), all in one
//!    snapshot: the live projector keeps running and is never paused.
//! 3. The schema is dropped.

use std::collections::BTreeSet;

use commandcenter_event_store::{read_feed_of, Position};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::checkpoint::load_checkpoint;
use crate::rebuild::{apply_behind, create_shadow_tables, ident, use_schema};
use crate::{ProjectionError, ReadModel};

/// How many differences a report lists (it counts them all).
const SHOWN: i64 = 20;

/// One row that differs between the read model and the event store's fold.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The table.
    pub table: String,
    /// The row's primary key, as a JSON array.
    pub key: String,
    /// What differs, in words.
    pub detail: String,
}

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The read model.
    pub name: &'static str,
    /// The checkpoint both sides were compared at.
    pub position: Position,
    /// Events folded from the store.
    pub events: u64,
    /// Rows compared, over every table of the read model.
    pub rows: i64,
    /// Rows that differ, over every table.
    pub differences: i64,
    /// The first of them.
    pub first: Vec<Difference>,
}

impl VerifyReport {
    /// True when the read model equals the fold.
    pub fn is_clean(&self) -> bool {
        self.differences == 0
    }
}

/// Verifies read model `model` against the event store behind `pool`.
pub async fn verify<M: ReadModel>(
    pool: &PgPool,
    model: &M,
    batch_size: i64,
) -> Result<VerifyReport, ProjectionError> {
    let schema = format!("cc_verify_{}_{}", M::NAME, std::process::id());
    let result = verify_in(pool, model, batch_size, &schema).await;
    if let Err(err) = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&schema)))
        .execute(pool)
        .await
    {
        tracing::warn!(%err, %schema, "cannot drop the verification schema");
    }
    result
}

async fn verify_in<M: ReadModel>(
    pool: &PgPool,
    model: &M,
    batch_size: i64,
    schema: &str,
) -> Result<VerifyReport, ProjectionError> {
    let quoted = ident(schema);
    let mut ddl = pool.begin().await?;
    create_shadow_tables(&mut ddl, &quoted, M::TABLES, M::TRIGGERS).await?;
    ddl.commit().await?;

    // 1. Fold the store up to the checkpoint as it is now.
    let target = {
        let mut conn = pool.acquire().await?;
        load_checkpoint(&mut conn, M::NAME).await?
    };
    let mut position = Position::ZERO;
    let mut events = 0u64;
    while position < target {
        let batch: Vec<_> = read_feed_of(pool, M::AGGREGATE_TYPE, position, batch_size)
            .await?
            .into_iter()
            .filter(|e| e.position <= target)
            .collect();
        let Some(last) = batch.last().map(|e| e.position) else {
            break;
        };
        let mut tx = pool.begin().await?;
        use_schema(&mut tx, schema).await?;
        model.apply(&mut tx, &batch).await?;
        tx.commit().await?;
        events += batch.len() as u64;
        position = last;
    }

    // 2. One snapshot: catch up with the live checkpoint, then compare.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    let live = load_checkpoint(&mut tx, M::NAME).await?;
    events += apply_behind(&mut tx, model, schema, position, live).await?;
    sqlx::query("SELECT set_config('search_path', 'public', true)")
        .execute(&mut *tx)
        .await?;
    let mut report = VerifyReport {
        name: M::NAME,
        position: live.max(position),
        events,
        rows: 0,
        differences: 0,
        first: Vec::new(),
    };
    for table in M::TABLES {
        compare_table(&mut tx, schema, table, &mut report).await?;
    }
    tx.rollback().await?;
    Ok(report)
}

/// Compares `public.<table>` with `<schema>.<table>` row by row.
async fn compare_table(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
    report: &mut VerifyReport,
) -> Result<(), ProjectionError> {
    let key_columns: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
          WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY a.attnum",
    )
    .bind(format!("public.{}", ident(table)))
    .fetch_all(&mut *conn)
    .await?;
    let generated: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute \
          WHERE attrelid = $1::regclass AND attgenerated <> '' AND attnum > 0",
    )
    .bind(format!("public.{}", ident(table)))
    .fetch_all(&mut *conn)
    .await?;
    // A JSON array of the key columns: unambiguous whatever the values hold.
    let key = key_columns
        .iter()
        .map(|c| format!("t.{}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let strip: String = generated
        .iter()
        .map(|c| format!(" - '{}'", c.replace('\'', "''")))
        .collect();
    let sides = format!(
        "WITH l AS (SELECT jsonb_build_array({key})::text AS k, to_jsonb(t){strip} AS row FROM public.{t} t), \
              s AS (SELECT jsonb_build_array({key})::text AS k, to_jsonb(t){strip} AS row FROM {schema}.{t} t), \
              d AS (SELECT coalesce(l.k, s.k) AS k, l.row AS live, s.row AS store \
                      FROM l FULL JOIN s ON l.k = s.k WHERE l.row IS DISTINCT FROM s.row)",
        t = ident(table),
        schema = ident(schema),
    );
    let (rows, differences): (i64, i64) = sqlx::query_as(&format!(
        "{sides} SELECT (SELECT count(*) FROM l FULL JOIN s USING (k)), (SELECT count(*) FROM d)"
    ))
    .fetch_one(&mut *conn)
    .await?;
    report.rows += rows;
    report.differences += differences;
    let room = SHOWN - report.first.len() as i64;
    if differences == 0 || room <= 0 {
        return Ok(());
    }
    let shown: Vec<(String, Option<Value>, Option<Value>)> = sqlx::query_as(&format!(
        "{sides} SELECT k, live, store FROM d ORDER BY k LIMIT $1"
    ))
    .bind(room)
    .fetch_all(&mut *conn)
    .await?;
    for (key, live, store) in shown {
        report.first.push(Difference {
            table: table.to_string(),
            key,
            detail: describe(live.as_ref(), store.as_ref()),
        });
    }
    Ok(())
}

/// A short summary of a row: its version and position where it has them.
fn summary(row: &Value) -> String {
    match (row.get("version"), row.get("position")) {
        (Some(version), Some(position)) => format!("version {version} at position {position}"),
        _ => row.to_string(),
    }
}

fn describe(live: Option<&Value>, store: Option<&Value>) -> String {
    match (live, store) {
        (None, Some(store)) => format!(
            "missing from the read model; the event store's fold has {}",
            summary(store)
        ),
        (Some(live), None) => format!(
            "in the read model ({}) but not in the event store's fold",
            summary(live)
        ),
        (Some(live), Some(store)) => {
            let fields: BTreeSet<&String> = live
                .as_object()
                .into_iter()
                .chain(store.as_object())
                .flat_map(|o| o.keys())
                .collect();
            let differing: Vec<String> = fields
                .into_iter()
                .filter(|f| live.get(f.as_str()) != store.get(f.as_str()))
                .map(|f| {
                    format!(
                        "{f}: read model {}, event store {}",
                        live.get(f.as_str()).unwrap_or(&Value::Null),
                        store.get(f.as_str()).unwrap_or(&Value::Null)
                    )
                })
                .collect();
            differing.join("; ")
        }
        (None, None) => "no difference".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_the_fields_and_the_missing_rows() {
        let live = json!({"id": "a", "version": 2, "relevance_score": 52});
        let store = json!({"id": "a", "version": 3, "relevance_score": 82});
        assert_eq!(
            describe(Some(&live), Some(&store)),
            "relevance_score: read model 52, event store 82; version: read model 2, event store 3"
        );
        assert!(describe(None, Some(&store)).starts_with("missing from the read model"));
        assert!(describe(Some(&live), None).contains("not in the event store"));
    }
}
