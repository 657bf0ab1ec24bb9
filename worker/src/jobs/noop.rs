//! `noop`: takes `steps` steps of `step_ms` each and reports progress after each but the
//! last. For tests and benchmarks. It checks for a stop request between steps only, like
//! a job whose steps cannot be interrupted.

use std::time::Duration;

use serde_json::{json, Value};

use crate::context::{JobContext, JobFailure};
use crate::jobs::percent;

pub(crate) async fn run(
    context: &JobContext,
    steps: i64,
    step_ms: i64,
) -> Result<Option<Value>, JobFailure> {
    let total = usize::try_from(steps).unwrap_or(1);
    for step in 1..=total {
        context.check_stop()?;
        if step_ms > 0 {
            tokio::time::sleep(Duration::from_millis(step_ms.unsigned_abs())).await;
        }
        // The last step too, so a finished job says "step N of N".
        context.progress(percent(step, total), format!("step {step} of {total}"));
    }
    Ok(Some(json!({ "steps": steps })))
}
