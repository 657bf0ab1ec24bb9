//! Configuration: one struct per command, parsed once by clap from flags or the
//! environment, and passed down. Nothing else reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// CommandCenter: an event-sourced CQRS backend that tracks technologies on a radar and
/// runs background jobs for them.
#[derive(Debug, Parser)]
#[command(name = "commandcenter", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "CC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The operator verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations (creating the database if it does not exist), then exit.
    Migrate(DatabaseArgs),
    /// Run the service, all in one process: the command API, the event-store read
    /// endpoints, health checks, the relay to NATS and the projectors. Applies pending
    /// migrations first.
    Serve(Box<ServeArgs>),
    /// Run only the relay: publish committed events to JetStream, in order (one is
    /// active per stream; more stand by).
    Relay(BackgroundArgs),
    /// Run only the projectors that keep the read models (one per read model is active;
    /// more stand by).
    Projector(BackgroundArgs),
    /// Run only a job worker: claim dispatched jobs from the event stream and run them
    /// (any number of workers share the work).
    Worker(WorkerProcessArgs),
    /// Demo and benchmark data.
    Demo {
        /// What to do.
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Audit the event store: verify the hash chains, record signed checkpoints, export
    /// and import the history, print an aggregate's timeline.
    Events {
        /// What to do.
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Inspect or rebuild the read models.
    Projections {
        /// What to do.
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// The project registry: every technology and job belongs to one project.
    Projects {
        /// What to do.
        #[command(subcommand)]
        command: ProjectsCommand,
    },
    /// API keys: each has a role (reader, writer, auditor, admin) and is scoped to one
    /// project, or is a deployment-wide admin key.
    Keys {
        /// What to do.
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// `commandcenter projects …`.
#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Register a project and print its id.
    Create(ProjectCreateArgs),
    /// List the projects.
    List(ListArgs),
}

/// Settings of `projects create`.
#[derive(Debug, Clone, Args)]
pub struct ProjectCreateArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The project's name (unique, ignoring case).
    pub name: String,
}

/// Settings of `projects list` and `keys list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this project's keys (`keys list`).
    #[arg(long)]
    pub project: Option<i64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `commandcenter keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, once: only a hash of it is stored.
    Create(KeyCreateArgs),
    /// List keys (never their secrets).
    List(ListArgs),
    /// Revoke a key: it stops working at once, and its open WebSockets are closed.
    Revoke(KeyRevokeArgs),
}

/// Settings of `keys create`.
#[derive(Debug, Clone, Args)]
pub struct KeyCreateArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The project the key is scoped to; leave out only for a deployment-wide admin key.
    #[arg(long)]
    pub project: Option<i64>,
    /// reader (queries, sockets), writer (+ commands), auditor (+ history, feed, verify,
    /// export) or admin (all, and key management).
    #[arg(long, value_parser = parse_role)]
    pub role: commandcenter_auth::Role,
    /// A label for listings.
    #[arg(long, default_value = "")]
    pub name: String,
    /// When the key stops working: an RFC 3339 time, or a span of at most 100 years such as
    /// 90d, 12h, 30m or "1h 30m".
    #[arg(long)]
    pub expires: Option<String>,
    /// Print the key's record as JSON (with its token) instead of the token alone.
    #[arg(long)]
    pub json: bool,
}

fn parse_role(value: &str) -> Result<commandcenter_auth::Role, String> {
    value.parse()
}

/// Settings of `keys revoke`.
#[derive(Debug, Clone, Args)]
pub struct KeyRevokeArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// NATS settings (to tell running servers at once; they also notice within
    /// `CC_KEY_REVOCATION_POLL_MS` without it).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The key's id (as listed by `keys list`).
    pub id: String,
}

/// Access control and abuse limits of the HTTP API. Every limit has a safe default.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Sustained requests per second per API key (token bucket); 0 turns it off.
    #[arg(long, env = "CC_RATE_LIMIT_PER_SECOND", default_value_t = defaults::RATE_LIMIT_PER_SECOND)]
    pub rate_limit_per_second: f64,
    /// Requests per API key allowed in a burst (the bucket's size).
    #[arg(long, env = "CC_RATE_LIMIT_BURST", default_value_t = defaults::RATE_LIMIT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
    /// The longest a request may take to produce its response (milliseconds; 503 after).
    /// Keep it above the event feed's 30 s long-poll.
    #[arg(long, env = "CC_REQUEST_TIMEOUT_MS", default_value_t = defaults::REQUEST_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(100..))]
    pub request_timeout_ms: u64,
    /// Most WebSockets open at once per API key.
    #[arg(long, env = "CC_MAX_SOCKETS_PER_KEY", default_value_t = defaults::MAX_SOCKETS_PER_KEY)]
    pub max_sockets_per_key: usize,
    /// Most WebSocket topics subscribed at once per API key, across its sockets.
    #[arg(long, env = "CC_MAX_SUBSCRIPTIONS_PER_KEY", default_value_t = defaults::MAX_SUBSCRIPTIONS_PER_KEY)]
    pub max_subscriptions_per_key: usize,
    /// Deepest nesting of arrays and objects in a JSON body.
    #[arg(long, env = "CC_MAX_JSON_DEPTH", default_value_t = defaults::MAX_JSON_DEPTH, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub max_json_depth: u32,
    /// Longest string (in characters) anywhere in a JSON body.
    #[arg(long, env = "CC_MAX_JSON_STRING_CHARS", default_value_t = defaults::MAX_JSON_STRING_CHARS)]
    pub max_json_string_chars: usize,
    /// How often revoked and expired keys are looked for (milliseconds), in case a
    /// revocation announcement on NATS was missed.
    #[arg(long, env = "CC_KEY_REVOCATION_POLL_MS", default_value_t = defaults::KEY_REVOCATION_POLL_MS, value_parser = clap::value_parser!(u64).range(100..))]
    pub key_revocation_poll_ms: u64,
}

impl AccessArgs {
    /// The guard's configuration.
    pub fn guard(&self) -> commandcenter_auth::GuardConfig {
        commandcenter_auth::GuardConfig {
            rate_per_second: self.rate_limit_per_second.max(0.0),
            burst: f64::from(self.rate_limit_burst),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_sockets_per_key: self.max_sockets_per_key,
            max_subscriptions_per_key: self.max_subscriptions_per_key,
            revocation_poll: Duration::from_millis(self.key_revocation_poll_ms),
            ..commandcenter_auth::GuardConfig::default()
        }
    }

    /// The JSON body limits.
    pub fn json(&self) -> commandcenter_commands::extract::JsonLimits {
        commandcenter_commands::extract::JsonLimits {
            max_depth: self.max_json_depth as usize,
            max_string_chars: self.max_json_string_chars,
        }
    }
}

impl AccessArgs {
    /// The documented defaults, whatever the environment says (for embedding and tests;
    /// the command line reads the environment).
    pub fn standard() -> Self {
        Self {
            rate_limit_per_second: defaults::RATE_LIMIT_PER_SECOND,
            rate_limit_burst: defaults::RATE_LIMIT_BURST,
            request_timeout_ms: defaults::REQUEST_TIMEOUT_MS,
            max_sockets_per_key: defaults::MAX_SOCKETS_PER_KEY,
            max_subscriptions_per_key: defaults::MAX_SUBSCRIPTIONS_PER_KEY,
            max_json_depth: defaults::MAX_JSON_DEPTH,
            max_json_string_chars: defaults::MAX_JSON_STRING_CHARS,
            key_revocation_poll_ms: defaults::KEY_REVOCATION_POLL_MS,
        }
    }
}

/// The defaults of the command line's flags, in one place for clap and for the
/// `standard()` constructors.
pub mod defaults {
    /// `CC_RATE_LIMIT_PER_SECOND`.
    pub const RATE_LIMIT_PER_SECOND: f64 = 100.0;
    /// `CC_RATE_LIMIT_BURST`.
    pub const RATE_LIMIT_BURST: u32 = 200;
    /// `CC_REQUEST_TIMEOUT_MS`.
    pub const REQUEST_TIMEOUT_MS: u64 = 40_000;
    /// `CC_MAX_SOCKETS_PER_KEY`.
    pub const MAX_SOCKETS_PER_KEY: usize = 64;
    /// `CC_MAX_SUBSCRIPTIONS_PER_KEY`.
    pub const MAX_SUBSCRIPTIONS_PER_KEY: usize = 1000;
    /// `CC_MAX_JSON_DEPTH`.
    pub const MAX_JSON_DEPTH: u32 = 32;
    /// `CC_MAX_JSON_STRING_CHARS`.
    pub const MAX_JSON_STRING_CHARS: usize = 65_536;
    /// `CC_KEY_REVOCATION_POLL_MS`.
    pub const KEY_REVOCATION_POLL_MS: u64 = 2_000;
    /// `CC_WORKER_CONCURRENCY`.
    pub const WORKER_CONCURRENCY: u16 = 8;
    /// `CC_JOB_LEASE_SECONDS`.
    pub const JOB_LEASE_SECONDS: u64 = 30;
    /// `CC_JOB_HEARTBEAT_MS`.
    pub const JOB_HEARTBEAT_MS: u64 = 10_000;
    /// `CC_LEASE_SWEEP_MS`.
    pub const LEASE_SWEEP_MS: u64 = 5_000;
    /// `CC_JOB_RETRY_BASE_MS`.
    pub const JOB_RETRY_BASE_MS: u64 = 5_000;
    /// `CC_JOB_CANCEL_GRACE_MS`.
    pub const JOB_CANCEL_GRACE_MS: u64 = 500;
    /// `CC_WORKER_SHUTDOWN_GRACE_MS`.
    pub const WORKER_SHUTDOWN_GRACE_MS: u64 = 8_000;
}

/// Settings of the query API.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Comma-separated connection strings of read replicas; queries go to them in turn
    /// (health-checked), or to the primary when none is given or none is healthy.
    #[arg(long, env = "READ_DATABASE_URLS", value_delimiter = ',')]
    pub read_database_urls: Vec<String>,
    /// The longest a read with `X-CC-Min-Position` waits for the read model to reach that
    /// position (milliseconds) before answering 503 with Retry-After.
    #[arg(long, env = "CC_MIN_POSITION_WAIT_MS", default_value_t = 2000)]
    pub min_position_wait_ms: u64,
    /// Answers kept in the in-process query cache (0 disables it).
    #[arg(long, env = "CC_CACHE_ENTRIES", default_value_t = 10_000)]
    pub cache_entries: usize,
    /// Pushes buffered per WebSocket client before it is told it lagged.
    #[arg(long, env = "CC_SOCKET_QUEUE", default_value_t = 256)]
    pub socket_queue: usize,
    /// Time limit of one expensive read (a `skip` past 1000 or a search), in
    /// milliseconds; past it the statement is cancelled and the client gets 503.
    #[arg(long, env = "CC_READ_STATEMENT_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub read_statement_timeout_ms: u64,
    /// Expensive reads (a `skip` past 1000 or a search) running at once per process;
    /// more wait up to a second, then get 503. 0: half the database pool.
    #[arg(long, env = "CC_EXPENSIVE_READS", default_value_t = 0)]
    pub expensive_reads: usize,
}

/// `commandcenter demo …`.
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Write a large, realistic dataset through the aggregates and the event store's bulk
    /// append (every event a normal event, with metadata and hash chain). A running
    /// service relays and projects it like any other events.
    Seed(SeedArgs),
}

/// Settings of `demo seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Projects to spread the data over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub projects: i64,
    /// Technologies to create.
    #[arg(long, default_value_t = 1000)]
    pub technologies: u64,
    /// Updates per technology after its creation (alternating edits and status changes).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub updates_per_technology: u32,
    /// Jobs to create; each is dispatched, started, reports progress and completes (5 events).
    #[arg(long, default_value_t = 1000)]
    pub jobs: u64,
}

/// `commandcenter events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Recompute every hash chain (and check the latest checkpoint when verifying the
    /// whole store); list each broken link. Exits with status 1 if anything is broken.
    Verify(VerifyArgs),
    /// Record a checkpoint: the current head and a hash over every aggregate's chain head,
    /// signed with the audit key, so a later verify proves no event was deleted up to it.
    Checkpoint(CheckpointArgs),
    /// Write events in the global order as NDJSON to standard output (or --output).
    Export(ExportArgs),
    /// Load an export into an empty event store, checking every hash.
    Import(ImportArgs),
    /// Print an aggregate's timeline: who changed what, when, and why.
    History(TimelineArgs),
}

/// The key checkpoints are signed with.
#[derive(Debug, Clone, Args)]
pub struct AuditKeyArgs {
    /// Key of the HMAC-SHA256 signature of audit checkpoints (keep it outside the database).
    #[arg(long, env = "CC_AUDIT_KEY", hide_env_values = true)]
    pub audit_key: Option<String>,
}

impl AuditKeyArgs {
    /// The key's bytes, if one is set.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        self.audit_key
            .as_ref()
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().to_vec())
    }
}

/// Settings of `events verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this project's aggregates.
    #[arg(long)]
    pub project: Option<i64>,
    /// Only links from this position on.
    #[arg(long)]
    pub from_position: Option<String>,
    /// Checkpoint signature key.
    #[command(flatten)]
    pub key: AuditKeyArgs,
    /// Also compare the store with the checkpoints witnessed on NATS (`<PREFIX>_AUDIT`),
    /// so that rewriting PostgreSQL alone is caught.
    #[arg(long)]
    pub witness: bool,
    /// Where the witness is (with --witness).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// How far `recorded_at` may go backwards before it is reported (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub clock_tolerance: std::time::Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `events checkpoint`.
#[derive(Debug, Clone, Args)]
pub struct CheckpointArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Checkpoint signature key (required).
    #[command(flatten)]
    pub key: AuditKeyArgs,
    /// Where the witness is: the checkpoint is published there too.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Settings of `events export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this project's events.
    #[arg(long)]
    pub project: Option<i64>,
    /// Only events after this position.
    #[arg(long)]
    pub since_position: Option<String>,
    /// Only events up to and including this position.
    #[arg(long)]
    pub until: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Signs the file's trailer when given.
    #[command(flatten)]
    pub key: AuditKeyArgs,
}

/// Settings of `events import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Database settings (the database must hold no events).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The export to load (`-` or nothing: standard input).
    pub file: Option<PathBuf>,
    /// The key the export's trailer was signed with (required for a signed export).
    #[command(flatten)]
    pub key: AuditKeyArgs,
}

/// Settings of `events history`.
#[derive(Debug, Clone, Args)]
pub struct TimelineArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// `technology` or `job`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub id: String,
}

/// `commandcenter projections …`.
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Show each read model's checkpoint, the head of the event store and the lag (events
    /// and seconds) of the relay and of each read model.
    Status(StatusArgs),
    /// Rebuild a read model from the event store into shadow tables, then swap them in
    /// (the API keeps serving the old tables until the swap).
    Rebuild(RebuildArgs),
    /// Compare each read model, row for row (versions, positions, every field, and the
    /// counts tables), with a fold of the event store at the read model's checkpoint. Exits
    /// 1 naming the first differences when any read model differs. Runs beside a live
    /// projector without pausing it.
    Verify(VerifyViewArgs),
}

/// Settings of `projections status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Subject prefix, to name the relay's stream.
    #[arg(long, env = "CC_NATS_PREFIX", default_value = "cc")]
    pub nats_prefix: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `projections verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyViewArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this read model (technology_view or job_view); every one by default.
    #[arg(long)]
    pub view: Option<String>,
    /// Events read and folded per transaction.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `projections rebuild`.
#[derive(Debug, Clone, Args)]
pub struct RebuildArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The read model to rebuild: technology_view or job_view.
    pub name: String,
    /// Events read at a time; each batch is applied by two transactions at once, its
    /// events split between them by aggregate.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,
}

/// Where NATS is, and the subject prefix of this deployment.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL, or a comma-separated list of a cluster's nodes (the client
    /// connects to one and moves to another when it fails): JetStream carries the
    /// events, core NATS the wake-ups and view change announcements.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Prefix of every NATS subject this deployment uses, and of its stream's name
    /// (`cc` → stream `CC_EVENTS` over `cc.events.>`): lets several deployments or test
    /// runs share one NATS server.
    #[arg(long, env = "CC_NATS_PREFIX", default_value = "cc", value_parser = parse_prefix)]
    pub nats_prefix: String,
    /// Copies of the event stream (and the audit witness) the NATS cluster keeps: 1 on
    /// a single server, 3 on a cluster of three nodes or more (survives one node's loss).
    /// Applied when the streams are created; an existing event stream with fewer copies
    /// gets more, never fewer (give every process the same value). The witness keeps the
    /// copies it was created with.
    #[arg(long, env = "CC_NATS_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
}

impl NatsArgs {
    /// The server URLs `nats_url` lists.
    pub fn servers(&self) -> Vec<String> {
        self.nats_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    }
    /// The event stream these settings name.
    pub fn stream(&self) -> commandcenter_relay::EventStream {
        commandcenter_relay::EventStream::new(&self.nats_prefix)
            .with_replicas(usize::from(self.nats_stream_replicas))
    }
}

fn parse_prefix(value: &str) -> Result<String, String> {
    if !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(value.to_string())
    } else {
        Err("use 1 to 64 letters, digits, '_' or '-'".into())
    }
}

/// Settings of `relay` and `projector`.
#[derive(Debug, Clone, Args)]
pub struct BackgroundArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// NATS settings.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Most connections in the database pool.
    #[arg(long, env = "CC_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,
}

/// How a worker process runs jobs (also inside `serve`).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// This worker's id, recorded on the jobs it runs [default: <hostname>-<pid>-<random>].
    #[arg(long, env = "CC_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Jobs this process runs at the same time.
    #[arg(long = "worker-concurrency", env = "CC_WORKER_CONCURRENCY", default_value_t = defaults::WORKER_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// How long a worker's claim on a job holds without a heartbeat (seconds); a job whose
    /// lease lapses is failed and re-queued for another worker.
    #[arg(long = "job-lease-seconds", env = "CC_JOB_LEASE_SECONDS", default_value_t = defaults::JOB_LEASE_SECONDS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_seconds: u64,
    /// How often a running job's lease is renewed (milliseconds; at most half the lease).
    #[arg(
        long = "job-heartbeat-ms",
        env = "CC_JOB_HEARTBEAT_MS",
        default_value_t = defaults::JOB_HEARTBEAT_MS
    )]
    pub heartbeat_ms: u64,
    /// How often lapsed leases are looked for (milliseconds).
    #[arg(
        long = "lease-sweep-ms",
        env = "CC_LEASE_SWEEP_MS",
        default_value_t = defaults::LEASE_SWEEP_MS
    )]
    pub sweep_ms: u64,
    /// Backoff after a failed first attempt (milliseconds), doubled per further attempt
    /// up to one hour.
    #[arg(
        long = "job-retry-base-ms",
        env = "CC_JOB_RETRY_BASE_MS",
        default_value_t = defaults::JOB_RETRY_BASE_MS
    )]
    pub retry_base_ms: u64,
    /// How long a job asked to stop (cancelled) may take before it is aborted (milliseconds).
    #[arg(
        long = "job-cancel-grace-ms",
        env = "CC_JOB_CANCEL_GRACE_MS",
        default_value_t = defaults::JOB_CANCEL_GRACE_MS
    )]
    pub cancel_grace_ms: u64,
    /// On shutdown, how long running jobs may take to finish before they are released to
    /// other workers (milliseconds).
    #[arg(
        long = "worker-shutdown-grace-ms",
        env = "CC_WORKER_SHUTDOWN_GRACE_MS",
        default_value_t = defaults::WORKER_SHUTDOWN_GRACE_MS
    )]
    pub shutdown_grace_ms: u64,
    /// Time limits of a job type, `TYPE=SOFT:HARD` in seconds (repeat or separate with
    /// commas), e.g. `export=600:660`. At the soft limit the job is asked to stop and fails
    /// with a timeout; at the hard limit it is aborted.
    /// [defaults: analysis 300:360, export 600:660, batch_* 1800:1920, webhook_delivery 60:90, noop 300:330]
    #[arg(long = "time-limit", env = "CC_JOB_TIME_LIMITS", value_delimiter = ',')]
    pub time_limits: Vec<commandcenter_worker::LimitOverride>,
    /// Key of the HMAC-SHA256 signature of webhook deliveries; without it webhook jobs fail.
    #[arg(long, env = "CC_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Let webhook jobs reach loopback, private and link-local addresses (refused by
    /// default, so a job cannot probe the deployment's own network).
    #[arg(long, env = "CC_WEBHOOK_ALLOW_PRIVATE_NETWORKS")]
    pub webhook_allow_private_networks: bool,
}

impl WorkerArgs {
    /// The worker's configuration, writing exports under `data_dir`.
    pub fn config(&self, data_dir: &std::path::Path) -> commandcenter_worker::WorkerConfig {
        let id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        let mut config = commandcenter_worker::WorkerConfig::new(id, data_dir);
        config.concurrency = usize::from(self.concurrency);
        config.lease = Duration::from_secs(self.lease_seconds);
        config.heartbeat = Duration::from_millis(self.heartbeat_ms);
        config.sweep_interval = Duration::from_millis(self.sweep_ms);
        config.retry_base = Duration::from_millis(self.retry_base_ms);
        config.cancel_grace = Duration::from_millis(self.cancel_grace_ms);
        config.shutdown_grace = Duration::from_millis(self.shutdown_grace_ms);
        for over in &self.time_limits {
            config.limits.set(over.job_type, over.limit);
        }
        config.webhook_secret = self
            .webhook_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(commandcenter_worker::Secret::new);
        config.webhook_allow_private = self.webhook_allow_private_networks;
        config
    }
}

impl WorkerArgs {
    /// The documented defaults, whatever the environment says (for embedding and tests;
    /// the command line reads the environment).
    pub fn standard() -> Self {
        Self {
            worker_id: None,
            concurrency: defaults::WORKER_CONCURRENCY,
            lease_seconds: defaults::JOB_LEASE_SECONDS,
            heartbeat_ms: defaults::JOB_HEARTBEAT_MS,
            sweep_ms: defaults::LEASE_SWEEP_MS,
            retry_base_ms: defaults::JOB_RETRY_BASE_MS,
            cancel_grace_ms: defaults::JOB_CANCEL_GRACE_MS,
            shutdown_grace_ms: defaults::WORKER_SHUTDOWN_GRACE_MS,
            time_limits: Vec::new(),
            webhook_secret: None,
            webhook_allow_private_networks: false,
        }
    }
}

/// `<hostname>-<pid>-<4 random hex digits>`.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "worker".into());
    // The last digits of a UUIDv7 are random.
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[28..])
}

/// Settings of `commandcenter worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerProcessArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// NATS settings.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Most connections in the database pool.
    #[arg(long, env = "CC_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Directory exports are written to (shared with the API that serves them).
    #[arg(long, env = "CC_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,
    /// How jobs are run.
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// Where the event store lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string of the primary (event store and read models). The
    /// database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/commandcenter"
    )]
    pub database_url: String,
}

/// Limits of the HTTP listener (see `src/listener.rs`).
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Most HTTP connections (WebSockets included) open at once; more are closed at
    /// once. Kept below the process's open-file limit whatever is asked.
    #[arg(long, env = "CC_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Longest time a client may take to send a request's head (milliseconds), after
    /// connecting or after its previous response: also how long a kept-alive
    /// connection may sit idle. A request in flight is never cut by it.
    #[arg(long, env = "CC_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,
}

impl ListenArgs {
    /// The listener's configuration under a descriptor limit of `descriptors`.
    pub fn config(&self, descriptors: u64) -> crate::listener::ListenerConfig {
        crate::listener::ListenerConfig {
            max_connections: crate::listener::connection_cap(
                usize::try_from(self.max_connections).unwrap_or(usize::MAX),
                descriptors,
            ),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
        }
    }
}

/// Settings of `commandcenter serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Database settings.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// NATS settings.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "CC_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// Limits of the HTTP listener.
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Take a signed audit checkpoint this often (e.g. 10m) and publish it to the
    /// witness stream on NATS; needs CC_AUDIT_KEY. Several servers share the schedule.
    #[arg(long, env = "CC_CHECKPOINT_EVERY", value_parser = humantime::parse_duration)]
    pub checkpoint_every: Option<Duration>,
    /// Directory for files the service writes (job artifacts); created if missing.
    #[arg(long, env = "CC_DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes (larger ones get 413).
    #[arg(long, env = "CC_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most connections in the database pool (on the primary, and on each replica). More
    /// sessions than the database has cores to run them queue inside PostgreSQL instead:
    /// on the 2-core benchmark machine, 16 served 11 % more job pages and 7 to 13 % more
    /// commands a second than 32, with a lower p99.
    #[arg(long, env = "CC_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// A database session idle inside a transaction longer than this (milliseconds) is
    /// ended: an open transaction holds back every reader of the global feed.
    #[arg(long, env = "CC_IDLE_TX_TIMEOUT_MS", default_value_t = 10_000)]
    pub idle_tx_timeout_ms: u64,
    /// Read-side settings.
    #[command(flatten)]
    pub query: QueryArgs,
    /// `/health/ready` answers 503 while the relay or a read model is more than this
    /// many committed events behind.
    #[arg(long, env = "CC_READY_MAX_LAG_EVENTS", default_value_t = 10_000)]
    pub ready_max_lag_events: i64,
    /// Do not run the relay in this process (run `commandcenter relay` elsewhere).
    #[arg(long, env = "CC_NO_RELAY")]
    pub no_relay: bool,
    /// Do not run the projectors in this process (run `commandcenter projector` elsewhere).
    #[arg(long, env = "CC_NO_PROJECTORS")]
    pub no_projectors: bool,
    /// Do not run a job worker in this process (run `commandcenter worker` elsewhere).
    #[arg(long, env = "CC_NO_WORKERS")]
    pub no_workers: bool,
    /// Job worker settings.
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Checkpoint signature key, for `GET /api/v1/audit/verify`.
    #[command(flatten)]
    pub audit: AuditKeyArgs,
    /// Access control and limits.
    #[command(flatten)]
    pub access: AccessArgs,
    /// Seed a small demo dataset (two projects, a dozen technologies, a few jobs) when
    /// the event store is empty.
    #[arg(long, env = "CC_DEMO")]
    pub demo: bool,
}

impl ServeArgs {
    /// The idle-in-transaction timeout as a duration.
    pub fn idle_tx_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_tx_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `T` as the command line gives it with no flags, the environment ignored.
    fn parsed<T: Args + clap::FromArgMatches>() -> T {
        let matches = T::augment_args(clap::Command::new("commandcenter"))
            .mut_args(|arg| arg.env(None::<&str>))
            .try_get_matches_from(["commandcenter"])
            .expect("no flags parse");
        T::from_arg_matches(&matches).expect("defaults are valid")
    }

    #[test]
    fn the_standard_settings_are_the_command_lines_defaults() {
        assert_eq!(
            format!("{:?}", parsed::<AccessArgs>()),
            format!("{:?}", AccessArgs::standard())
        );
        assert_eq!(
            format!("{:?}", parsed::<WorkerArgs>()),
            format!("{:?}", WorkerArgs::standard())
        );
    }
}
