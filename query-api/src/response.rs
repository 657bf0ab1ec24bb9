//! The shape every read answer shares: JSON with `X-CC-Position`, computed once per
//! request on one chosen pool (after waiting for `X-CC-Min-Position`), and served from
//! the cache when a valid entry exists.

use std::borrow::Cow;
use std::future::Future;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use commandcenter_api_error::ApiError;
use commandcenter_event_store::Position;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use crate::cache::CacheKey;
use crate::consistency::{pool_for, MinPosition};
use crate::pools::ChosenPool;
use crate::QueryState;

/// Appends the checkpoint of read model `view` as columns `cp_tx`, `cp_pos`, so a
/// page and the position it reflects come from one snapshot.
pub fn position_columns(qb: &mut QueryBuilder<'_, Postgres>, view: &'static str) {
    qb.push("(SELECT tx_id FROM projection_checkpoints WHERE projection = ")
        .push_bind(view)
        .push(") AS cp_tx, (SELECT global_position FROM projection_checkpoints WHERE projection = ")
        .push_bind(view)
        .push(") AS cp_pos");
}

/// Reads the columns written by [`position_columns`] (zero before the first event).
pub fn read_position(row: &PgRow) -> Result<Position, sqlx::Error> {
    let tx: Option<i64> = row.try_get("cp_tx")?;
    let pos: Option<i64> = row.try_get("cp_pos")?;
    Ok(Position::new(tx.unwrap_or(0) as u64, pos.unwrap_or(0)))
}

/// A JSON answer from bytes, with `X-CC-Position` and `X-CC-Source` (`cache`, or the
/// pool that computed it: `primary`, `replica-<n>`).
pub fn bytes_response(body: Bytes, position: Position, source: &str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&position.to_string()) {
        headers.insert("x-cc-position", value);
    }
    if let Ok(value) = HeaderValue::from_str(source) {
        headers.insert("x-cc-source", value);
    }
    response
}

/// A JSON answer with `X-CC-Position`, computed on `pool`.
pub fn json_response(body: &Value, position: Position, pool: &ChosenPool) -> Response {
    bytes_response(
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
        position,
        &pool.name,
    )
}

/// Serves `key` from the cache, or computes it with `fetch` on a chosen pool (after the
/// read-your-writes wait) and caches it. `views` are `(read model, aggregate type)`
/// pairs; `fetch` returns the body and each read model's position, in that order.
/// A JSON answer body: a value to serialize, or JSON text already assembled (from rows
/// PostgreSQL rendered as JSON, passed through without parsing).
pub trait IntoJsonBytes {
    /// The body's bytes.
    fn into_json_bytes(self) -> Result<Bytes, ApiError>;
}

impl IntoJsonBytes for Value {
    fn into_json_bytes(self) -> Result<Bytes, ApiError> {
        serde_json::to_vec(&self)
            .map(Bytes::from)
            .map_err(ApiError::internal)
    }
}

/// A row's document for a page: the stored one handed over as it is (never built into a
/// tree, nor parsed again: see [`with_documents`]); one the statement rendered itself
/// (`unstored`: a row the projector has not stored a document for yet, as jsonb text) is
/// written out compactly with keys in order first, so it reads exactly as a stored one
/// would.
fn document(text: &str, unstored: Option<bool>) -> Result<Cow<'_, str>, ApiError> {
    if unstored == Some(true) {
        let value: Value = serde_json::from_str(text).map_err(ApiError::internal)?;
        serde_json::to_string(&value)
            .map(Cow::Owned)
            .map_err(ApiError::internal)
    } else {
        Ok(Cow::Borrowed(text))
    }
}

/// The documents of a page's `rows`, fetched with one row more than the page shows
/// (`limit` + 1), borrowed from the rows ([`document`]; a row without one, the empty
/// page's single row, is skipped), and, when that extra row came, the last row shown:
/// the next page starts after it, and only its key need be read.
pub(crate) fn page_documents(
    rows: &[PgRow],
    limit: usize,
) -> Result<(Vec<Cow<'_, str>>, Option<&PgRow>), ApiError> {
    let mut documents = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for row in rows {
        let Some(text) = row_document(row)? else {
            continue;
        };
        if documents.len() == limit {
            return Ok((documents, last));
        }
        documents.push(text);
        last = Some(row);
    }
    Ok((documents, None))
}

/// The document of a read model's row fetched as `row` (its stored document, or the row
/// as jsonb text) and `unstored` (true for the latter), as [`document`] serves it; `None`
/// when `row` is NULL (no such row).
pub(crate) fn row_document(row: &PgRow) -> Result<Option<Cow<'_, str>>, ApiError> {
    match row.try_get::<Option<&str>, _>("row")? {
        Some(text) => Ok(Some(document(
            text,
            row.try_get::<Option<bool>, _>("unstored")?,
        )?)),
        None => Ok(None),
    }
}

/// A page's list of documents as the page serializes: empty, for [`with_documents`] to
/// fill.
pub struct DocumentSlot;

impl serde::Serialize for DocumentSlot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        serializer.serialize_seq(Some(0))?.end()
    }
}

/// `body`, the JSON of a page whose first field `field` is an empty list, with
/// `documents` written into that list as they are. A stored document is JSON a projector
/// wrote with serde_json (`projections::documents`), and [`document`] writes the others,
/// so none is parsed again on its way out: checking each one took about a sixth of the
/// service's time on a page of 100 jobs (`perf`, benchmark scenario 1).
pub(crate) fn with_documents(
    body: &str,
    field: &str,
    documents: &[impl AsRef<str>],
) -> Result<String, ApiError> {
    let head = format!("{{\"{field}\":[");
    let Some(rest) = body
        .strip_prefix(&head)
        .filter(|rest| rest.starts_with(']'))
    else {
        return Err(ApiError::internal(format!(
            "a page's JSON does not start with an empty {field:?}"
        )));
    };
    if documents.iter().any(|d| d.as_ref().is_empty()) {
        return Err(ApiError::internal(format!(
            "a document of a page's {field:?} is empty"
        )));
    }
    let size = body.len()
        + documents
            .iter()
            .map(|d| d.as_ref().len() + 1)
            .sum::<usize>();
    let mut out = String::with_capacity(size);
    out.push_str(&head);
    for (n, document) in documents.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(document.as_ref());
    }
    out.push_str(rest);
    Ok(out)
}

/// JSON text that is valid by construction.
pub struct RawJson(pub String);

impl IntoJsonBytes for RawJson {
    fn into_json_bytes(self) -> Result<Bytes, ApiError> {
        Ok(Bytes::from(self.0))
    }
}

/// Serves a read from the answer cache when a current entry exists for `key`, or else
/// waits for `min` on the pool that will serve it (read-your-writes over `views`), runs `fetch` on
/// it, caches the answer when that pool had applied the newest announced change, and
/// answers with `X-CC-Position` and `X-CC-Source`.
pub async fn cached_or<F, Fut, B>(
    state: &QueryState,
    key: CacheKey,
    min: MinPosition,
    views: &[(&'static str, &'static str)],
    fetch: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(ChosenPool) -> Fut,
    Fut: Future<Output = Result<(B, Vec<Position>), ApiError>>,
    B: IntoJsonBytes,
{
    if let Some(hit) = state.cache.get(&key, min.0) {
        state.metrics.cache_hits.inc();
        return Ok(bytes_response(hit.body, hit.position, "cache"));
    }
    state.metrics.cache_misses.inc();
    let pool = pool_for(
        &state.pools,
        views,
        min.0,
        state.config.min_position_wait,
        &mut state.hub.changes(),
    )
    .await?;
    let generation = state.cache.generation(&key);
    let source = pool.name.clone();
    let (body, positions) = fetch(pool.clone())
        .await
        .inspect_err(|err| state.pools.note_failure(&pool, err))?;
    let position = positions.iter().copied().min().unwrap_or(Position::ZERO);
    let bytes = body.into_json_bytes()?;
    state.cache.put(key, generation, positions, bytes.clone());
    Ok(bytes_response(bytes, position, &source))
}

#[cfg(test)]
mod tests {
    use super::{with_documents, DocumentSlot};

    #[derive(serde::Serialize)]
    struct Page {
        items: DocumentSlot,
        total: i64,
    }

    #[test]
    fn documents_go_into_the_first_list_as_they_are() {
        let body = serde_json::to_string(&Page {
            items: DocumentSlot,
            total: 2,
        })
        .unwrap();
        let documents = [r#"{"a":1}"#.to_string(), r#"{"b":"\u00e9"}"#.to_string()];
        assert_eq!(
            with_documents(&body, "items", &documents).unwrap(),
            r#"{"items":[{"a":1},{"b":"\u00e9"}],"total":2}"#
        );
        assert_eq!(
            with_documents(&body, "items", &[] as &[&str]).unwrap(),
            r#"{"items":[],"total":2}"#
        );
        assert!(
            with_documents(&body, "total", &documents).is_err(),
            "a list that is not the first field is refused"
        );
        assert!(
            with_documents(&body, "items", &[String::new()]).is_err(),
            "an empty document is refused"
        );
    }
}
