//! `GET /api/v1/jobs/ws/{job_id}`: one job, in the replaced product's contract.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use commandcenter_api_error::ApiError;
use commandcenter_event_store::Position;
use serde_json::Value;

use commandcenter_auth::Caller;

use super::{
    close, lean, send, ServerMessage, Unsubscribe, KEY_REVOKED, PING_EVERY, POLICY_VIOLATION,
};
use crate::QueryState;

async fn load_job(state: &QueryState, id: &str) -> Result<Option<(Value, Position)>, sqlx::Error> {
    let row: Option<(Value, String)> =
        sqlx::query_as("SELECT to_jsonb(j) - 'doc', j.position FROM job_view j WHERE j.id = $1")
            .bind(id)
            .fetch_optional(&state.primary)
            .await?;
    Ok(row.map(|(job, position)| (job, position.parse().unwrap_or_default())))
}

/// How long a job socket waits for the row of a job the event store already has (created
/// a moment ago, not projected yet).
const JOB_APPEAR_WAIT: Duration = Duration::from_secs(10);

/// What a job socket found for its job.
enum Appeared {
    /// The job's row and its position.
    Row(Value, Position),
    /// No such job in the event store, or a deleted one.
    Unknown,
    /// The event store has it, but its row did not appear within [`JOB_APPEAR_WAIT`].
    NotYet,
}

/// The job's row. Existence is decided by the event store, not the read model: for a job
/// whose events are committed but not projected yet, waits (bounded) for its row, woken by
/// its topic's changes (the subscriber is subscribed to `job:<id>` already).
async fn await_job(
    state: &QueryState,
    id: &str,
    subscriber: &mut crate::hub::Subscriber,
) -> Result<Appeared, sqlx::Error> {
    if let Some((job, position)) = load_job(state, id).await? {
        return Ok(Appeared::Row(job, position));
    }
    let deleted: Option<bool> = sqlx::query_scalar(
        "SELECT bool_or(event_type = 'JobDeleted') FROM events \
          WHERE aggregate_type = 'job' AND aggregate_id = $1",
    )
    .bind(id)
    .fetch_one(&state.primary)
    .await?;
    if deleted != Some(false) {
        return Ok(Appeared::Unknown);
    }
    let deadline = tokio::time::Instant::now() + JOB_APPEAR_WAIT;
    loop {
        // A change consumed here is older than the row read after it: nothing is lost.
        let woken = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
            subscriber.receiver.recv(),
        )
        .await;
        if let Some((job, position)) = load_job(state, id).await? {
            return Ok(Appeared::Row(job, position));
        }
        if matches!(woken, Ok(None)) || tokio::time::Instant::now() >= deadline {
            return Ok(Appeared::NotYet);
        }
    }
}

/// `GET /api/v1/jobs/ws/{job_id}`.
#[utoipa::path(get, path = "/api/v1/jobs/ws/{job_id}", tag = "push", params(("job_id" = String, Path, description = "Job id")), responses((status = 400, description = "Not a WebSocket handshake (problem+json)"), (status = 101, description = "WebSocket: connected, then on each change progress and job_update (plus job_dispatched or job_cancelled when that happened), completed when the job ends; closes 1008 for an unknown job; a job created a moment ago is awaited until its row is projected (up to 10 s, then close 1013)")))]
pub async fn job_socket(
    State(state): State<QueryState>,
    caller: Caller,
    Path(job_id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    Ok(lean(ws)?.on_upgrade(move |socket| follow_job(state, caller, job_id, socket)))
}

async fn follow_job(state: QueryState, caller: Caller, job_id: String, mut socket: WebSocket) {
    let revoked = caller.session().until_revoked();
    tokio::pin!(revoked);
    let mut subscriber = state.hub.connect();
    let topic = format!("job:{job_id}");
    // Subscribe before reading the row, so no change falls between the two.
    state.hub.subscribe(&subscriber, &topic);
    let _guard = Unsubscribe::new(&state, subscriber.id, vec![topic]);
    let (job, mut sent) = match await_job(&state, &job_id, &mut subscriber).await {
        Ok(Appeared::Row(job, position)) => (job, position),
        Ok(Appeared::Unknown) => {
            return close(&mut socket, POLICY_VIOLATION, "unknown job").await;
        }
        Ok(Appeared::NotYet) => {
            return close(&mut socket, 1013, "the job is not projected yet; try again").await;
        }
        Err(err) => {
            tracing::warn!(%err, "job socket cannot read the job");
            return close(&mut socket, 1011, "try again").await;
        }
    };
    if !send(&state, &mut socket, &ServerMessage::connected(&job)).await {
        return;
    }
    let mut before = job.clone();
    if job["is_terminal"] == true {
        send(&state, &mut socket, &ServerMessage::completed(&job)).await;
        return close(&mut socket, 1000, "job finished").await;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            () = &mut revoked => {
                return close(&mut socket, POLICY_VIOLATION, KEY_REVOKED).await;
            }
            change = subscriber.receiver.recv() => {
                let Some(change) = change else { return };
                if change.position <= sent {
                    continue;
                }
                sent = change.position;
                let Some(job) = change.row.as_ref() else {
                    return close(&mut socket, 1000, "job deleted").await;
                };
                if !send_change(&state, &mut socket, &before, job, change.correlation_id.as_deref()).await {
                    return;
                }
                if job["is_terminal"] == true {
                    send(&state, &mut socket, &ServerMessage::completed(job)).await;
                    return close(&mut socket, 1000, "job finished").await;
                }
                before = job.clone();
            }
            _ = ping.tick() => {
                if awaiting_pong || socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                awaiting_pong = true;
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
        if subscriber.lagged.swap(false, Ordering::Relaxed) {
            // Missed changes: say so, then send the job as it is now.
            let lagged = ServerMessage::Lagged {
                position: sent,
                detail: None,
            };
            send(&state, &mut socket, &lagged).await;
            match load_job(&state, &job_id).await {
                Ok(Some((job, position))) if position > sent => {
                    sent = position;
                    send_change(&state, &mut socket, &before, &job, None).await;
                    if job["is_terminal"] == true {
                        send(&state, &mut socket, &ServerMessage::completed(&job)).await;
                        return close(&mut socket, 1000, "job finished").await;
                    }
                    before = job;
                }
                Ok(Some(_)) => {}
                Ok(None) => return close(&mut socket, 1000, "job deleted").await,
                Err(_) => return close(&mut socket, 1011, "try again").await,
            }
        }
    }
}

/// Sends what a change of the job from `before` to `job` means: `progress`, `job_update`,
/// and `job_dispatched` or `job_cancelled` when that happened. False when the socket is
/// gone.
async fn send_change(
    state: &QueryState,
    socket: &mut WebSocket,
    before: &Value,
    job: &Value,
    correlation_id: Option<&str>,
) -> bool {
    if !send(state, socket, &ServerMessage::progress(job, correlation_id)).await {
        return false;
    }
    for message in ServerMessage::transitions(before, job) {
        if !send(state, socket, &message).await {
            return false;
        }
    }
    true
}
