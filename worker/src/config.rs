//! A worker's settings, with the defaults a deployment gets when it sets nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use commandcenter_domain::job::JobType;

use crate::WorkerError;

/// The time limits of one job type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// After this long the job is asked to stop and fails with a timeout error.
    pub soft: Duration,
    /// After this long the job is aborted, stopped or not, and fails.
    pub hard: Duration,
}

impl Limit {
    /// Soft and hard limits in seconds.
    pub const fn seconds(soft: u64, hard: u64) -> Self {
        Self {
            soft: Duration::from_secs(soft),
            hard: Duration::from_secs(hard),
        }
    }
}

/// Time limits per job type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeLimits {
    per_type: HashMap<JobType, Limit>,
}

impl Default for TimeLimits {
    /// Analyses 5/6 minutes, exports 10/11, batches 30/32, webhooks 1/1.5, noop 5/5.5.
    fn default() -> Self {
        let per_type = JobType::ALL
            .iter()
            .filter_map(|name| JobType::parse("job_type", name).ok())
            .map(|t| {
                let limit = match t {
                    JobType::Analysis | JobType::ScheduledAnalysis => Limit::seconds(300, 360),
                    JobType::Export => Limit::seconds(600, 660),
                    JobType::BatchAnalysis | JobType::BatchExport => Limit::seconds(1800, 1920),
                    JobType::WebhookDelivery => Limit::seconds(60, 90),
                    JobType::Noop => Limit::seconds(300, 330),
                };
                (t, limit)
            })
            .collect();
        Self { per_type }
    }
}

impl TimeLimits {
    /// The limits of `job_type`.
    pub fn of(&self, job_type: JobType) -> Limit {
        self.per_type
            .get(&job_type)
            .copied()
            .unwrap_or(Limit::seconds(300, 330))
    }

    /// Sets the limits of `job_type`.
    pub fn set(&mut self, job_type: JobType, limit: Limit) {
        self.per_type.insert(job_type, limit);
    }
}

/// One `--time-limit TYPE=SOFT:HARD` override (seconds, fractions allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOverride {
    /// The job type.
    pub job_type: JobType,
    /// Its limits.
    pub limit: Limit,
}

impl FromStr for LimitOverride {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage =
            || format!("expected TYPE=SOFT:HARD in seconds (e.g. export=600:660), got {text:?}");
        let (name, limits) = text.split_once('=').ok_or_else(usage)?;
        let job_type = JobType::parse("time limit", name.trim()).map_err(|e| e.message)?;
        let (soft, hard) = limits.split_once(':').ok_or_else(usage)?;
        let seconds = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(usage)
        };
        let limit = Limit {
            soft: seconds(soft)?,
            hard: seconds(hard)?,
        };
        if limit.hard < limit.soft {
            return Err(format!(
                "the hard limit must not be below the soft limit in {text:?}"
            ));
        }
        Ok(Self { job_type, limit })
    }
}

/// A secret value. Its `Debug` form is redacted, so printing a configuration can never
/// put it in a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// How one worker process runs jobs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id, recorded on the jobs it runs.
    pub worker_id: String,
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often a running job's lease is renewed.
    pub heartbeat: Duration,
    /// How often lapsed leases are looked for.
    pub sweep_interval: Duration,
    /// Backoff after a failed first attempt (doubled per further attempt, capped at 1 h).
    pub retry_base: Duration,
    /// The shortest time between two progress events of one job.
    pub progress_interval: Duration,
    /// How long a job asked to stop (cancelled) may take before it is aborted.
    pub cancel_grace: Duration,
    /// How long running jobs may take to finish on shutdown before they are released.
    pub shutdown_grace: Duration,
    /// Time limits per job type.
    pub limits: TimeLimits,
    /// Where exports are written (under `artifacts/`).
    pub data_dir: PathBuf,
    /// The key of the webhook signature; webhook jobs fail without one.
    pub webhook_secret: Option<Secret>,
    /// Let webhooks reach loopback, private and link-local addresses (off: a job could
    /// otherwise probe the deployment's own network).
    pub webhook_allow_private: bool,
}

impl WorkerConfig {
    /// The defaults, with `worker_id` and `data_dir`.
    pub fn new(worker_id: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            worker_id: worker_id.into(),
            concurrency: 8,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(5),
            retry_base: Duration::from_secs(5),
            progress_interval: Duration::from_millis(100),
            cancel_grace: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(10),
            limits: TimeLimits::default(),
            data_dir: data_dir.into(),
            webhook_secret: None,
            webhook_allow_private: false,
        }
    }

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), WorkerError> {
        let bad = |m: &str| Err(WorkerError::Config(m.to_string()));
        if self.worker_id.is_empty()
            || self.worker_id.len() > 100
            || !self.worker_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return bad("the worker id must be 1 to 100 printable characters without spaces");
        }
        if self.worker_id == commandcenter_domain::job::EXTERNAL_WORKER {
            return bad("the worker id `external` is reserved for jobs driven through PATCH");
        }
        if self.cancel_grace > Duration::from_secs(60)
            || self.shutdown_grace > Duration::from_secs(600)
        {
            return bad("the cancel grace is at most 60 s and the shutdown grace at most 10 min");
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            return bad("concurrency must be from 1 to 1024");
        }
        if self.lease < Duration::from_secs(1) || self.lease.as_secs() > 3600 {
            return bad("the lease must be from 1 s to 1 h");
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.lease {
            return bad("the heartbeat must be positive and at most half the lease");
        }
        if self.sweep_interval.is_zero() || self.progress_interval.is_zero() {
            return bad("the sweep and progress intervals must be positive");
        }
        if self.retry_base.is_zero() || self.retry_base.as_millis() > u128::from(u32::MAX) {
            return bad("the retry base must be positive");
        }
        Ok(())
    }

    /// Whole seconds of the lease, as the domain records it.
    pub(crate) fn lease_seconds(&self) -> u32 {
        u32::try_from(self.lease.as_secs().max(1)).unwrap_or(3600)
    }
}
