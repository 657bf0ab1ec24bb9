//! The command executor: the application service every writer uses (HTTP handlers,
//! workers, the lease sweeper, the demo seeder). It runs one command against one
//! aggregate — load, decide with the aggregate's `handle`, and commit the events together
//! with the uniqueness claims and the idempotency record, under a savepoint of a
//! transaction shared with the commands queued at the same time (group commit) — and
//! answers with the new version and position, or a [`CommandError`] that knows nothing of
//! HTTP (the HTTP layer maps it to a problem document).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
mod error;
mod execute;
pub mod idempotency;
mod meta;
mod models;

pub use error::CommandError;
pub use execute::{
    apply, execute, rebuild_claims, Answer, Applied, Execution, Outcome, WriteModel, MAX_ATTEMPTS,
};
pub use idempotency::{IdempotentRequest, SavedReply};
pub use meta::RequestMeta;
