//! What the event store sends to NATS JetStream, as a process role of its own: the event
//! stream (bound to the store's deployment), the relay that publishes every committed
//! event to it in the gap-safe feed's order, and the audit witness stream that keeps
//! copies of the signed checkpoints outside PostgreSQL.
//!
//! The event store (`commandcenter-event-store`) is the truth; this crate is the
//! transport. Projectors and workers read the stream defined here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod relay;
mod stream;
pub mod witness;

pub use relay::{load_checkpoint as load_relay_checkpoint, Relay, RelayConfig, RelayError};
pub use stream::{
    is_missing, EventStream, StreamError, DUPLICATE_WINDOW, HEADER_CORRELATION_ID, HEADER_POSITION,
};
