//! The job types: each does real work on the project's own data.

pub(crate) mod analysis;
pub(crate) mod export;
pub(crate) mod noop;
pub(crate) mod webhook;

use commandcenter_domain::job::JobParameters;
use serde_json::{json, Value};

use crate::context::{JobContext, JobFailure};

/// Runs the job `context` describes and returns its result.
pub(crate) async fn run(context: JobContext) -> Result<Option<Value>, JobFailure> {
    match context.parameters.clone() {
        JobParameters::Noop { steps, step_ms } => noop::run(&context, steps, step_ms).await,
        JobParameters::Analysis(options) => {
            analysis::report(&context, context.project_id, options, true)
                .await
                .map(Some)
        }
        JobParameters::BatchAnalysis {
            project_ids,
            options,
        } => {
            let mut reports = Vec::with_capacity(project_ids.len());
            for (done, project) in project_ids.iter().enumerate() {
                context.check_stop()?;
                reports.push(analysis::report(&context, *project, options, false).await?);
                context.progress(
                    percent(done + 1, project_ids.len()),
                    format!(
                        "analysed project {project} ({} of {})",
                        done + 1,
                        project_ids.len()
                    ),
                );
            }
            Ok(Some(json!({ "projects": reports })))
        }
        JobParameters::Export(format) => export::export(&context, &[context.project_id], format)
            .await
            .map(Some),
        JobParameters::BatchExport {
            project_ids,
            format,
        } => export::export(&context, &project_ids, format)
            .await
            .map(Some),
        JobParameters::Webhook {
            url,
            payload,
            timeout_ms,
        } => webhook::deliver(&context, url.as_str(), &payload, timeout_ms)
            .await
            .map(Some),
    }
}

/// `done` of `total` in whole percent, below 100 until the job completes.
pub(crate) fn percent(done: usize, total: usize) -> u8 {
    if total == 0 {
        return 0;
    }
    u8::try_from((done * 100 / total).min(99)).unwrap_or(99)
}

/// A database error as a retryable job failure.
pub(crate) fn database(err: sqlx::Error) -> JobFailure {
    JobFailure::retryable(format!("database error: {err}"))
}
