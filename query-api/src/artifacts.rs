//! `GET /api/v1/jobs/{id}/artifact`: the file an `export` or `batch_export` job wrote,
//! streamed from the data directory with its sha256.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use commandcenter_api_error::ApiError;
use commandcenter_domain::job::ExportFormat;
use serde_json::Value;
use tokio_util::io::ReaderStream;

use crate::QueryState;

/// `GET /api/v1/jobs/{id}/artifact` → 200 with the export file.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/artifact", tag = "jobs", params(("id" = String, Path, description = "Job id")), responses((status = 200, description = "The export file (JSON or CSV), with ETag and Repr-Digest carrying its sha256", content((Vec<Object> = "application/json"), (String = "text/csv"))), (status = 404, description = "Unknown job, a job type without artifact, or a file no longer there (problem+json)"), (status = 409, description = "The export has not completed (problem+json)")))]
pub async fn job_artifact(
    State(state): State<QueryState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // The primary: a completed job's file is served as soon as the job is.
    let row: Option<(String, String, Option<Value>, i32)> =
        sqlx::query_as("SELECT job_type, status, result, attempts FROM job_view WHERE id = $1")
            .bind(&id)
            .fetch_optional(&state.primary)
            .await?;
    let (job_type, status, result, attempts) = row.ok_or(ApiError::NotFound("job"))?;
    if job_type != "export" && job_type != "batch_export" {
        return Err(ApiError::NotFound("artifact"));
    }
    if status != "completed" {
        return Err(ApiError::conflict(format!(
            "the export is {status}; its artifact exists once it has completed"
        )));
    }
    let result = result.unwrap_or(Value::Null);
    let format = result["format"]
        .as_str()
        .and_then(ExportFormat::from_name)
        .ok_or_else(|| {
            ApiError::internal(format!("export job {id} has no format in its result"))
        })?;
    let sha256 = result["sha256"].as_str().unwrap_or_default().to_string();
    // The path is derived from the job's id (a row of job_view) and the attempt that
    // completed, never read from input.
    let attempt = u32::try_from(attempts).unwrap_or_default();
    let path = state
        .config
        .data_dir
        .join(format.artifact_path(&id, attempt));
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound("artifact file"))
        }
        Err(err) => {
            return Err(ApiError::internal(format!(
                "cannot open {}: {err}",
                path.display()
            )))
        }
    };
    let length = file
        .metadata()
        .await
        .map_err(|err| ApiError::internal(format!("cannot stat {}: {err}", path.display())))?
        .len();
    let mut response = Body::from_stream(ReaderStream::new(file)).into_response();
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let disposition = format!("attachment; filename=\"{id}.{}\"", format.as_str());
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(digest) = hex_to_bytes(&sha256) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
        if let Ok(value) = HeaderValue::from_str(&format!("sha-256=:{encoded}:")) {
            headers.insert("repr-digest", value);
        }
        if let Ok(value) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
            headers.insert(header::ETAG, value);
        }
    }
    Ok(response)
}

fn hex_to_bytes(text: &str) -> Result<Vec<u8>, ()> {
    if text.len() != 64 || !text.is_ascii() {
        return Err(());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| ()))
        .collect()
}
