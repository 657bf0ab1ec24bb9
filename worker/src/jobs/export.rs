//! `export` and `batch_export`: a project's technologies (or several projects', in one
//! file) from `technology_view`, as JSON or CSV, written to
//! `<data_dir>/artifacts/<job_id>-<attempt>.<format>` (through a temporary file renamed
//! into place once synced). The result names the file with its rows, bytes and sha256;
//! `GET /api/v1/jobs/{id}/artifact` serves it.
//!
//! JSON: one array of objects. CSV (RFC 4180, CRLF line ends): a header row, then one
//! row per technology; list fields (`tags`) are joined with `;`, empty fields are null.

use std::path::Path;

use commandcenter_domain::job::ExportFormat;
use commandcenter_domain::values::ProjectId;
use futures::TryStreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::context::{JobContext, JobFailure};
use crate::jobs::{database, percent};

/// The exported columns, in order.
pub(crate) const COLUMNS: &[&str] = &[
    "id",
    "project_id",
    "title",
    "vendor",
    "domain",
    "status",
    "relevance_score",
    "priority",
    "description",
    "tags",
    "maturity_level",
    "stability_score",
    "integration_difficulty",
    "cost_tier",
    "documentation_url",
    "repository_url",
    "website_url",
    "created_at",
    "updated_at",
    "version",
];

/// Rows between two progress reports and stop checks.
const ROWS_PER_REPORT: u64 = 1000;

struct Output {
    file: BufWriter<tokio::fs::File>,
    hasher: Sha256,
    bytes: u64,
}

impl Output {
    async fn write(&mut self, data: &[u8]) -> Result<(), JobFailure> {
        self.file.write_all(data).await.map_err(io)?;
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        Ok(())
    }
}

fn io(err: std::io::Error) -> JobFailure {
    JobFailure::retryable(format!("cannot write the export: {err}"))
}

pub(crate) async fn export(
    context: &JobContext,
    projects: &[ProjectId],
    format: ExportFormat,
) -> Result<Value, JobFailure> {
    let relative = format.artifact_path(&context.id, context.attempt);
    let path = context.data_dir.join(&relative);
    let partial = path.with_extension(format!("{}.part", format.as_str()));
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    // Earlier attempts that were aborted mid-write left their partial files behind.
    for earlier in 1..context.attempt {
        let stale = context
            .data_dir
            .join(format.artifact_path(&context.id, earlier))
            .with_extension(format!("{}.part", format.as_str()));
        let _ = tokio::fs::remove_file(stale).await;
    }
    let ids: Vec<i64> = projects.iter().map(|p| p.get()).collect();
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM technology_view WHERE project_id = ANY($1)")
            .bind(&ids)
            .fetch_one(&context.pool)
            .await
            .map_err(database)?;
    let total = u64::try_from(total).unwrap_or(0);

    let mut out = Output {
        file: BufWriter::new(tokio::fs::File::create(&partial).await.map_err(io)?),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let written = write_rows(context, &ids, format, total, &mut out).await;
    let rows = match written {
        Ok(rows) => rows,
        Err(failure) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(failure);
        }
    };
    out.file.flush().await.map_err(io)?;
    out.file.get_ref().sync_all().await.map_err(io)?;
    drop(out.file);
    tokio::fs::rename(&partial, &path).await.map_err(io)?;
    sync_dir(path.parent()).await;
    Ok(json!({
        "path": relative,
        "format": format.as_str(),
        "content_type": format.content_type(),
        "project_ids": ids,
        "rows": rows,
        "bytes": out.bytes,
        "sha256": hex::encode(out.hasher.finalize()),
    }))
}

async fn sync_dir(dir: Option<&Path>) {
    if let Some(dir) = dir {
        if let Ok(handle) = tokio::fs::File::open(dir).await {
            let _ = handle.sync_all().await;
        }
    }
}

async fn write_rows(
    context: &JobContext,
    ids: &[i64],
    format: ExportFormat,
    total: u64,
    out: &mut Output,
) -> Result<u64, JobFailure> {
    let select = format!(
        "SELECT to_jsonb(t) FROM (SELECT {} FROM technology_view WHERE project_id = $1 \
         ORDER BY created_at, id) t",
        COLUMNS.join(", ")
    );
    match format {
        ExportFormat::Json => out.write(b"[").await?,
        ExportFormat::Csv => {
            out.write(csv_line(COLUMNS.iter().map(|c| Value::from(*c))).as_bytes())
                .await?
        }
    }
    let mut rows = 0_u64;
    for project in ids {
        let mut stream = sqlx::query_scalar::<_, Value>(&select)
            .bind(project)
            .fetch(&context.pool);
        while let Some(row) = stream.try_next().await.map_err(database)? {
            let line = match format {
                ExportFormat::Json => {
                    let mut text = if rows == 0 { "\n" } else { ",\n" }.to_string();
                    text.push_str(&row.to_string());
                    text
                }
                ExportFormat::Csv => csv_line(COLUMNS.iter().map(|c| row[*c].clone())),
            };
            out.write(line.as_bytes()).await?;
            rows += 1;
            if rows % ROWS_PER_REPORT == 0 {
                context.check_stop()?;
                context.progress(
                    percent(
                        usize::try_from(rows).unwrap_or(usize::MAX),
                        usize::try_from(total.max(rows)).unwrap_or(usize::MAX),
                    ),
                    format!("exported {rows} of {total} technologies"),
                );
            }
        }
    }
    if format == ExportFormat::Json {
        out.write(if rows == 0 {
            b"]\n".as_slice()
        } else {
            b"\n]\n".as_slice()
        })
        .await?;
    }
    Ok(rows)
}

/// One CSV record (RFC 4180, quoted only where needed) ending in CRLF.
fn csv_line(fields: impl Iterator<Item = Value>) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let record: Vec<String> = fields.map(|f| csv_field(&f)).collect();
    // Writing to memory cannot fail.
    let _ = writer.write_record(&record);
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// A JSON value as CSV text: nothing for null, lists joined with `;`.
fn csv_field(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(";"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let one = |v: Value| csv_line(std::iter::once(v));
        assert_eq!(one(json!("plain")), "plain\r\n");
        assert_eq!(one(json!("a,b")), "\"a,b\"\r\n");
        assert_eq!(one(json!("say \"hi\"")), "\"say \"\"hi\"\"\"\r\n");
        assert_eq!(one(json!("two\nlines")), "\"two\nlines\"\r\n");
        assert_eq!(csv_field(&Value::Null), "");
        assert_eq!(csv_field(&json!(42)), "42");
        assert_eq!(csv_field(&json!(["dsp", "audio"])), "dsp;audio");
        assert_eq!(csv_line([json!("a"), json!(1)].into_iter()), "a,1\r\n");
    }
}
