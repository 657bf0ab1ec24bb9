//! The PostgreSQL event store: appends with optimistic concurrency and a database-computed
//! hash chain, aggregate loading, cross-aggregate uniqueness claims, the gap-safe global
//! feed, post-commit wake-ups for tailing readers, and tamper evidence (chain checks,
//! signed checkpoints, export and import). Publishing to NATS is `commandcenter-relay`'s.
//!
//! Invariants:
//! - an aggregate's events have sequences 1, 2, 3, … with no gap; a lost race is a
//!   [`StoreError::Conflict`], never an overwrite;
//! - the global feed is ordered by the [`Position`] pair `(tx_id, global_position)` and
//!   returns only rows whose transaction id is below the oldest running one, so no event
//!   can later appear *before* a position a reader has passed;
//! - readers are woken only after a commit ([`AppendSignal`]); nothing calls `NOTIFY`
//!   inside an append, which would serialise every append on a global lock.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
mod claims;
mod deployment;
mod error;
mod feed;
mod group;
mod history;
mod leadership;
pub mod pause;
mod position;
mod recent;
mod signal;
mod store;
mod stored_event;

pub use claims::{claim, claim_batch, release, Claim};
pub use deployment::{Deployment, HEADER_DEPLOYMENT};
pub use error::{is_unavailable, StoreError};
pub use feed::{
    count_range, head, last_committed_of, read_aggregate_between, read_feed, read_feed_filtered,
    read_feed_of, read_feed_of_upto, read_range, wait_for_feed, FeedFilter, FALLBACK_POLL,
};
pub use group::{
    Appended, Member, Rejected, COMMITTERS, MAX_BATCH, MAX_WAITING, OUTCOME_SOUGHT_FOR,
};
pub use history::{read_history, read_history_after};
pub use leadership::{lock_key, pause as pause_or_shutdown, run_while_leader, Leadership};
pub use position::{Position, PositionParseError, POSITION_PATTERN};
pub use recent::{RECENT_BYTES, RECENT_IDLE};
pub use signal::AppendSignal;
pub use store::{
    connect, connect_replica, AggregateEvents, Committed, EventStore, Loaded, NewEvent,
    PlainAppend, CHECK_IDLE_SESSION_AFTER, REPLICA_ACQUIRE_TIMEOUT, SNAPSHOT_EVERY,
};
pub use stored_event::{CompactEvent, StoredEvent};

/// The migrations of the event store and the read models, embedded in the binary.
/// Migrations applied by a later release and unknown to this one are let be
/// (`ignore_missing`), so that this release runs on the schema of the release after it,
/// which a rolling upgrade's restarts and a rollback need: DEPLOY.md's rule is that a
/// release's migrations keep the previous release working (what they drop or change goes
/// a release later, or is listed in their notes). By default sqlx refused to start:
/// "migration … was previously applied but is missing in the resolved migrations".
/// Checksums of the migrations this release knows are still checked.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations")
};
