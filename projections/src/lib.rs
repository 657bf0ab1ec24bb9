//! Read models and the projector runtime that keeps them.
//!
//! Each read model ([`ReadModel`]) is a set of plain PostgreSQL tables a list query can
//! serve with one indexed read: denormalized rows, precomputed counts and indexed
//! cursor keys. The [`Projector`] feeds one read model from a durable JetStream pull
//! consumer; [`rebuild`] replays it from the event store into shadow tables and swaps
//! them in.
//!
//! Invariants:
//! - a batch of events and the read model's checkpoint commit in one transaction, and
//!   are acknowledged to JetStream only after that commit;
//! - events at or below the checkpoint are skipped, so redelivery never applies an event
//!   twice: every event is applied exactly once in effect;
//! - the checkpoint never moves across an event the read model has not applied: a batch
//!   from the stream is completed from the event store (the source of truth) when the
//!   stream delivered fewer events than the store holds in its range, an aggregate whose
//!   versions do not continue its row gets the missing events from the store, and every
//!   such gap is recorded in `projection_gaps` ([`verify`] compares a read model with a
//!   fold of the store);
//! - one projector per read model is active (advisory lock); every apply transaction
//!   also takes the read model's apply lock, which is how a rebuild pauses it for the
//!   swap.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod checkpoint;
pub mod documents;
mod error;
mod job_view;
mod notify;
mod projector;
mod read_model;
mod rebuild;
pub mod statistics;
mod status;
mod technology_view;
mod verify;

pub use checkpoint::{load_checkpoint, save_checkpoint};
pub use error::ProjectionError;
pub use job_view::JobView;
pub use notify::{view_subject, Change};
pub use projector::{Projector, ProjectorConfig};
pub use read_model::{apply_lock_name, FoldEvent, ReadModel};
pub use rebuild::{rebuild, RebuildReport};
pub use status::{replication, status, LagStatus, ReplicaStatus, StatusReport};
pub use technology_view::TechnologyView;
pub use verify::{verify, Difference, VerifyReport};

/// The names of every read model, for the CLI.
pub const READ_MODELS: &[&str] = &[TechnologyView::NAME, JobView::NAME];
