//! The document each read-model row serves, stored with the row (`doc`): rendered once
//! by the projector when the row changes, so a page or a detail hands stored text over
//! as it is instead of rendering rows per request.
//!
//! A document is what the query API answered before it was stored: the row as
//! PostgreSQL writes it (`to_jsonb(row)` without `search` and `search_text`), read into JSON and written
//! out compactly with keys in sorted order (serde_json's map). [`Served::render`] produces the
//! same text from the row JSON the projector writes: the view's columns only (absent ones
//! as `null`), and numbers as they come back from PostgreSQL (see `Float8ReadBack` and
//! `JsonbReadBack`).
//! Rows written before documents were stored are rendered by [`render_missing`] the old
//! way, and so are rows an older release's projector rewrote without one (a trigger of
//! migration 0015 forgets a document its row outgrew); until then the queries render
//! them per request (`coalesce`).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use sqlx::PgPool;

use crate::ProjectionError;

/// A view's served columns, in the order its documents list them, and those of them that
/// are `double precision` (the others hold text, integers, booleans, arrays of text, or
/// `jsonb`): put in order once, used for every row.
pub struct Served<'a> {
    /// Byte order, as serde_json's map kept the keys when a row was read back.
    columns: Vec<&'a str>,
    floats: &'a [&'a str],
}

impl<'a> Served<'a> {
    /// The view's served `columns`, of which `floats` are `double precision`.
    pub fn new(columns: &[&'a str], floats: &'a [&'a str]) -> Self {
        let mut columns = columns.to_vec();
        columns.sort_unstable();
        columns.dedup();
        Self { columns, floats }
    }

    /// The document of a row whose JSON (as bound to the upsert) is `row`: the served
    /// columns only (absent ones as `null`), numbers as they read back; the row is read
    /// in place, never copied.
    pub fn render(&self, row: &Value) -> String {
        // JSON values under string keys always serialize.
        serde_json::to_string(&Document { row, served: self }).unwrap_or_default()
    }
}

/// A row's document as it serializes (see [`Served::render`]).
struct Document<'a> {
    row: &'a Value,
    served: &'a Served<'a>,
}

impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let columns = &self.served.columns;
        let mut map = serializer.serialize_map(Some(columns.len()))?;
        for column in columns {
            let value = self.row.get(*column).unwrap_or(&Value::Null);
            if self.served.floats.contains(column) {
                map.serialize_entry(column, &Float8ReadBack(value))?;
            } else {
                map.serialize_entry(column, &JsonbReadBack(value))?;
            }
        }
        map.end()
    }
}

/// An integral float as an integer when it fits one.
fn integral(f: f64) -> Option<Value> {
    if f.fract() != 0.0 {
        return None;
    }
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        Some(Value::from(f as u64))
    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
        Some(Value::from(f as i64))
    } else {
        None
    }
}

/// A `double precision` column as it reads back: PostgreSQL writes the float's shortest
/// form and jsonb reads it as a decimal, so a float without a fraction comes back as an
/// integer (`3.0` as `3`, `1e15` as `1000000000000000`).
struct Float8ReadBack<'a>(&'a Value);

impl Serialize for Float8ReadBack<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Number(n) if n.is_f64() => match n.as_f64().and_then(integral) {
                Some(integer) => integer.serialize(serializer),
                None => n.serialize(serializer),
            },
            other => other.serialize(serializer),
        }
    }
}

/// A value inside a `jsonb` column as it reads back: jsonb keeps a number's decimal text,
/// so a float comes back as written (`2.0` stays `2.0`) except where it was written with
/// an exponent and is an integer that fits one (`1e19` comes back as
/// `10000000000000000000`), and a negative zero loses its sign.
struct JsonbReadBack<'a>(&'a Value);

impl Serialize for JsonbReadBack<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Number(n) if n.is_f64() => match n.as_f64() {
                Some(0.0) => 0.0_f64.serialize(serializer),
                Some(f) if n.to_string().contains('e') => match integral(f) {
                    Some(integer) => integer.serialize(serializer),
                    None => n.serialize(serializer),
                },
                _ => n.serialize(serializer),
            },
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsonbReadBack(item))?;
                }
                seq.end()
            }
            Value::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, &JsonbReadBack(value))?;
                }
                map.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// Renders, the way the queries rendered them per request, the documents of read model
/// `view`'s rows stored before documents were (`doc IS NULL`), a thousand at a time. A
/// row changed meanwhile keeps the document its new write rendered (the version must
/// still match).
pub async fn render_missing(pool: &PgPool, view: &str) -> Result<u64, ProjectionError> {
    let mut rendered = 0;
    let served = match view {
        "technology_view" => "to_jsonb(t) - 'search' - 'search_text' - 'doc'",
        "job_view" => "to_jsonb(t) - 'doc'",
        other => return Err(ProjectionError::UnknownReadModel(other.to_string())),
    };
    let table = view;
    // Keyset by id over the partial index of rows without a document (migration 0015).
    let mut after = String::new();
    loop {
        let rows: Vec<(String, i64, Value)> = sqlx::query_as(&format!(
            "SELECT id, version, {served} FROM {table} t \
              WHERE doc IS NULL AND id > $1 ORDER BY id LIMIT 1000"
        ))
        .bind(&after)
        .fetch_all(pool)
        .await?;
        let Some((last, _, _)) = rows.last() else {
            break;
        };
        after = last.clone();
        let mut ids = Vec::with_capacity(rows.len());
        let mut versions = Vec::with_capacity(rows.len());
        let mut documents = Vec::with_capacity(rows.len());
        for (id, version, row) in rows {
            ids.push(id);
            versions.push(version);
            documents.push(serde_json::to_string(&row).unwrap_or_default());
        }
        let done = sqlx::query(&format!(
            "UPDATE {table} t SET doc = r.doc \
               FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS r(id, version, doc) \
              WHERE t.id = r.id AND t.version = r.version AND t.doc IS NULL"
        ))
        .bind(&ids)
        .bind(&versions)
        .bind(&documents)
        .execute(pool)
        .await?;
        rendered += done.rows_affected();
    }
    if rendered > 0 {
        tracing::info!(
            read_model = view,
            rows = rendered,
            "rendered the stored documents of older rows"
        );
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Served;

    #[test]
    fn a_document_has_the_view_columns_in_order_and_numbers_as_read_back() {
        let row = json!({
            "f": 100.0, "g": 2.5,
            "j": [1.5, 2.0, -0.0, {"z": 1e19, "y": 1e300, "x": 1.5e-7}],
            "c": "\"é\"",
            "not_a_column": 1,
        });
        assert_eq!(
            Served::new(&["c", "j", "f", "g", "missing"], &["f", "g"]).render(&row),
            r#"{"c":"\"é\"","f":100,"g":2.5,"j":[1.5,2.0,0.0,{"x":1.5e-7,"y":1e+300,"z":10000000000000000000}],"missing":null}"#
        );
    }
}
