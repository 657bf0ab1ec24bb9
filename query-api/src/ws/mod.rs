//! WebSocket push, fed by the change hub (never by polling).
//!
//! - `GET /api/v1/jobs/ws/{job_id}` keeps the existing product's contract:
//!   `{"type":"connected",…}` first, `{"type":"progress",…}` and `{"type":"job_update",
//!   "job":…}` on every change (with `job_dispatched` / `job_cancelled` when that is what
//!   happened, the previous API's broadcasts), and `{"type":"completed",…}` before
//!   closing when the job ends. Unknown job: close 1008.
//! - `GET /api/v1/ws` multiplexes topics `jobs:<project_id>`, `job:<id>` and
//!   `technologies:<project_id>`: the client sends `{"subscribe": [...],
//!   "since_position": "…"}` and `{"unsubscribe": [...]}`; each push carries its topic,
//!   the row and its position. `since_position` replays, from the read tables, the rows
//!   that changed after it (rows deleted meanwhile cannot be replayed).
//!
//! Every socket is opened with an API key (the `Authorization` header, or `access_token`
//! in the query for browsers), and is closed with code 1008 the moment that key is revoked
//! or expires. Topics of another project than the key's are refused as unknown.
//!
//! Each client has a bounded queue in the hub; when it overflows the client gets
//! `{"type":"lagged","position":…}` (the last position it was sent) and can resubscribe
//! with that `since_position`. The server pings every 30 s and drops a client that did
//! not answer the previous ping.
//!
//! Every message the server sends is a [`ServerMessage`] (tagged by `type`).

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use commandcenter_api_error::ApiError;

use crate::QueryState;

mod job;
mod messages;
mod topics;

pub use job::{__path_job_socket, job_socket};
pub use messages::{Change, JobState, ServerMessage};
pub use topics::{__path_multiplexed_socket, multiplexed_socket};

/// How often idle sockets are pinged.
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// Most topics one socket may subscribe to.
pub const MAX_TOPICS: usize = 100;
/// Most rows replayed per topic for `since_position`.
pub const MAX_REPLAY: i64 = 1000;
/// WebSocket close code for a policy violation (unknown job, revoked key).
const POLICY_VIOLATION: u16 = 1008;
/// The close reason when the socket's key is revoked or expires.
const KEY_REVOKED: &str = "API key revoked or expired";

/// Sends `message`; false when the socket is gone.
async fn send(state: &QueryState, socket: &mut WebSocket, message: &ServerMessage<'_>) -> bool {
    let Ok(text) = serde_json::to_string(message) else {
        tracing::error!(?message, "socket message cannot be written as JSON");
        return false;
    };
    let sent = socket
        .send(Message::Text(Utf8Bytes::from(text)))
        .await
        .is_ok();
    if sent {
        state.metrics.websocket_messages.inc();
        if matches!(message, ServerMessage::Lagged { .. }) {
            state.metrics.websocket_lagged.inc();
        }
    }
    sent
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}

/// Removes a client's subscriptions when its socket task ends, however it ends.
struct Unsubscribe {
    state: QueryState,
    id: u64,
    topics: Vec<String>,
}

impl Unsubscribe {
    fn new(state: &QueryState, id: u64, topics: Vec<String>) -> Self {
        state.metrics.websocket_connections.inc();
        Self {
            state: state.clone(),
            id,
            topics,
        }
    }
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        for topic in &self.topics {
            self.state.hub.unsubscribe(self.id, topic);
        }
        self.state.metrics.websocket_connections.dec();
    }
}

/// The handshake, with buffers sized for what our sockets carry: clients send small
/// control messages, and every push is written out at once. The library defaults
/// (128 KiB read and write buffers, 64 MiB messages) would cost about 130 KiB per idle
/// client and accept huge frames. A request that is not a handshake is a 400 problem
/// document, like every other error (axum's own rejection is plain text).
fn lean(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    let ws = ws.map_err(|rejection| ApiError::BadParameter {
        name: "Upgrade".into(),
        message: format!("not a WebSocket handshake: {}", rejection.body_text()),
    })?;
    Ok(ws
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024))
}
