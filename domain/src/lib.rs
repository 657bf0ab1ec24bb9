//! Pure business rules of CommandCenter: the `Technology` and `Job` aggregates, their
//! commands (intents, imperative), events (facts, past tense), value types and errors.
//!
//! Nothing here performs I/O. Time comes in with each command (`at`), so every rule is
//! deterministic and testable with `cqrs-es`'s `TestFramework`. Invariants:
//! `handle` decides and never changes state except through the event sink;
//! `apply` never fails and never decides.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;

pub mod job;
pub mod serde_helpers;
pub mod technology;
pub mod upcasting;
pub mod values;

pub use error::ValidationError;
pub use upcasting::{decode_payload, decode_payload_text, upcast_payload, upcasters, STATE_SCHEMA};
