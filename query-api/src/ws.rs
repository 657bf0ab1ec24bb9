//! WebSocket push, fed by the change hub (never by polling).
//!
//! - `GET /api/v1/jobs/ws/{job_id}` keeps the existing product's contract:
//!   `{"type":"connected",…}` first, `{"type":"progress",…}` on every change, and
//!   `{"type":"completed",…}` before closing when the job ends. Unknown job: close 1008.
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

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use commandcenter_domain::values::AggregateId;
use commandcenter_event_store::Position;
use serde::Deserialize;
use serde_json::{json, Value};

use commandcenter_auth::guard::SubscriptionBudget;
use commandcenter_auth::policy::Kind;
use commandcenter_auth::Caller;

use crate::hub::ViewChange;
use crate::QueryState;

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

async fn send_json(state: &QueryState, socket: &mut WebSocket, value: &Value) -> bool {
    let sent = socket
        .send(Message::Text(Utf8Bytes::from(value.to_string())))
        .await
        .is_ok();
    if sent {
        state.metrics.websocket_messages.inc();
        if value["type"] == "lagged" {
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

/// A progress message; `correlation_id` (additive to the old contract) names the
/// command that caused it, when known.
fn progress_message(job: &Value, correlation_id: Option<&str>) -> Value {
    json!({
        "type": "progress",
        "job_id": job["id"],
        "status": job["status"],
        "progress": job["progress"],
        "current_step": job["current_step"],
        "is_terminal": job["is_terminal"],
        "correlation_id": correlation_id,
    })
}

fn completed_message(job: &Value) -> Value {
    json!({
        "type": "completed",
        "job_id": job["id"],
        "status": job["status"],
        "result": job["result"],
        "error": job["error"],
    })
}

async fn load_job(state: &QueryState, id: &str) -> Result<Option<(Value, Position)>, sqlx::Error> {
    let row: Option<(Value, String)> =
        sqlx::query_as("SELECT to_jsonb(j), j.position FROM job_view j WHERE j.id = $1")
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
#[utoipa::path(get, path = "/api/v1/jobs/ws/{job_id}", tag = "push", params(("job_id" = String, Path, description = "Job id")), responses((status = 101, description = "WebSocket: connected, progress..., completed; closes 1008 for an unknown job; a job created a moment ago is awaited until its row is projected (up to 10 s, then close 1013)")))]
pub async fn job_socket(
    State(state): State<QueryState>,
    caller: Caller,
    Path(job_id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    lean(ws).on_upgrade(move |socket| follow_job(state, caller, job_id, socket))
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
    let connected = json!({
        "type": "connected",
        "job_id": job["id"],
        "status": job["status"],
        "progress": job["progress"],
        "current_step": job["current_step"],
    });
    if !send_json(&state, &mut socket, &connected).await {
        return;
    }
    if job["is_terminal"] == true {
        send_json(&state, &mut socket, &completed_message(&job)).await;
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
                if job["is_terminal"] == true {
                    send_json(&state, &mut socket, &progress_message(job, change.correlation_id.as_deref())).await;
                    send_json(&state, &mut socket, &completed_message(job)).await;
                    return close(&mut socket, 1000, "job finished").await;
                }
                if !send_json(&state, &mut socket, &progress_message(job, change.correlation_id.as_deref())).await {
                    return;
                }
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
            send_json(
                &state,
                &mut socket,
                &json!({"type": "lagged", "position": sent}),
            )
            .await;
            match load_job(&state, &job_id).await {
                Ok(Some((job, position))) if position > sent => {
                    sent = position;
                    let done = job["is_terminal"] == true;
                    send_json(&state, &mut socket, &progress_message(&job, None)).await;
                    if done {
                        send_json(&state, &mut socket, &completed_message(&job)).await;
                        return close(&mut socket, 1000, "job finished").await;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return close(&mut socket, 1000, "job deleted").await,
                Err(_) => return close(&mut socket, 1011, "try again").await,
            }
        }
    }
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

/// A client's request on the multiplexed socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    unsubscribe: Vec<String>,
    #[serde(default)]
    since_position: Option<String>,
}

/// A topic a client may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Topic {
    Jobs(i64),
    Job(String),
    Technologies(i64),
}

impl Topic {
    fn parse(text: &str) -> Option<Self> {
        let (kind, arg) = text.split_once(':')?;
        match kind {
            "jobs" => arg.parse().ok().filter(|p| *p >= 1).map(Self::Jobs),
            "technologies" => arg.parse().ok().filter(|p| *p >= 1).map(Self::Technologies),
            "job" => AggregateId::parse(arg).map(|id| Self::Job(id.as_str().to_string())),
            _ => None,
        }
    }

    /// Rows of this topic changed after `since`, oldest first.
    async fn replay(
        &self,
        state: &QueryState,
        since: Position,
    ) -> Result<Vec<(Value, String)>, sqlx::Error> {
        let since = since.to_string();
        match self {
            Self::Jobs(project) => {
                sqlx::query_as(
                    "SELECT to_jsonb(j), j.position FROM job_view j \
                      WHERE j.project_id = $1 AND j.position > $2 ORDER BY j.position LIMIT $3",
                )
                .bind(project)
                .bind(since)
                .bind(MAX_REPLAY)
                .fetch_all(&state.primary)
                .await
            }
            Self::Technologies(project) => {
                sqlx::query_as(
                    "SELECT to_jsonb(t) - 'search', t.position FROM technology_view t \
                      WHERE t.project_id = $1 AND t.position > $2 ORDER BY t.position LIMIT $3",
                )
                .bind(project)
                .bind(since)
                .bind(MAX_REPLAY)
                .fetch_all(&state.primary)
                .await
            }
            Self::Job(id) => {
                sqlx::query_as("SELECT to_jsonb(j), j.position FROM job_view j WHERE j.id = $1 AND j.position > $2")
                    .bind(id)
                    .bind(since)
                    .fetch_all(&state.primary)
                    .await
            }
        }
    }
}

fn push_message(topic: &str, change: &ViewChange) -> Value {
    json!({
        "type": "change",
        "topic": topic,
        "view": change.view,
        "id": change.id,
        "position": change.position,
        "deleted": change.deleted,
        "correlation_id": change.correlation_id,
        "row": change.row,
    })
}

/// Buffers sized for what our sockets carry: clients send small control messages, and
/// every push is written out at once. The library defaults (128 KiB read and write
/// buffers, 64 MiB messages) would cost about 130 KiB per idle client and accept huge
/// frames.
fn lean(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
}

/// `GET /api/v1/ws`.
#[utoipa::path(get, path = "/api/v1/ws", tag = "push", responses((status = 101, description = "WebSocket: subscribe to jobs:<project_id>, job:<id>, technologies:<project_id>; change and lagged messages")))]
pub async fn multiplexed_socket(
    State(state): State<QueryState>,
    caller: Caller,
    ws: WebSocketUpgrade,
) -> Response {
    lean(ws).on_upgrade(move |socket| serve_socket(state, caller, socket))
}

async fn serve_socket(state: QueryState, caller: Caller, mut socket: WebSocket) {
    let revoked = caller.session().until_revoked();
    tokio::pin!(revoked);
    let mut budget = caller.session().subscription_budget();
    let mut subscriber = state.hub.connect();
    let mut guard = Unsubscribe::new(&state, subscriber.id, Vec::new());
    let mut topics: HashSet<String> = HashSet::new();
    let mut sent = Position::ZERO;
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
                sent = sent.max(change.position);
                for topic in change.topics().iter().filter(|t| topics.contains(*t)) {
                    if !send_json(&state, &mut socket, &push_message(topic, &change)).await {
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if awaiting_pong || socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
                awaiting_pong = true;
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = handle_request(&state, &caller, &text, &mut topics, &mut budget, &subscriber).await;
                    guard.topics = topics.iter().cloned().collect();
                    for message in reply {
                        if !send_json(&state, &mut socket, &message).await {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
        if subscriber.lagged.swap(false, Ordering::Relaxed) {
            let message = json!({
                "type": "lagged",
                "position": sent,
                "detail": "some changes were dropped; subscribe again with this since_position",
            });
            if !send_json(&state, &mut socket, &message).await {
                return;
            }
        }
    }
}

async fn handle_request(
    state: &QueryState,
    caller: &Caller,
    text: &str,
    topics: &mut HashSet<String>,
    budget: &mut SubscriptionBudget,
    subscriber: &crate::hub::Subscriber,
) -> Vec<Value> {
    let error = |message: String| vec![json!({"type": "error", "message": message})];
    let request: ClientMessage = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(err) => {
            return error(format!(
                "expected {{\"subscribe\": [...]}} or {{\"unsubscribe\": [...]}}: {err}"
            ))
        }
    };
    let since = match request
        .since_position
        .as_deref()
        .map(str::parse::<Position>)
        .transpose()
    {
        Ok(since) => since,
        Err(err) => return error(format!("since_position: {err}")),
    };
    // Every message costs one request of the key's rate, and is bounded before any
    // topic is looked up.
    if let Err(refusal) = caller.take_token() {
        return error(refusal.to_string());
    }
    if request.subscribe.len() > MAX_TOPICS {
        return error(format!("at most {MAX_TOPICS} topics per socket"));
    }
    let mut parsed = Vec::with_capacity(request.subscribe.len());
    for name in &request.subscribe {
        let unknown = || {
            error(format!(
                "unknown topic {name:?}: use jobs:<project_id>, job:<id> or technologies:<project_id>"
            ))
        };
        let Some(topic) = Topic::parse(name) else {
            return unknown();
        };
        // Another project's topic is as unknown as one that does not exist.
        let visible = match &topic {
            Topic::Jobs(project) | Topic::Technologies(project) => caller.sees_project(*project),
            Topic::Job(id) => match caller.sees(Kind::Job, id).await {
                Ok(visible) => visible,
                Err(err) => {
                    tracing::warn!(%err, "socket topic check failed");
                    return error(format!("cannot check {name} now; try again"));
                }
            },
        };
        if !visible {
            return unknown();
        }
        parsed.push((name.clone(), topic));
    }
    // Unsubscribe first; the key's budget is then charged the socket's topic count.
    for name in &request.unsubscribe {
        topics.remove(name);
        state.hub.unsubscribe(subscriber.id, name);
    }
    budget.settle(topics.len());
    let new = parsed
        .iter()
        .filter(|(name, _)| !topics.contains(name))
        .map(|(name, _)| name)
        .collect::<HashSet<_>>()
        .len();
    if topics.len() + new > MAX_TOPICS {
        return error(format!("at most {MAX_TOPICS} topics per socket"));
    }
    if !budget.settle(topics.len() + new) {
        return error(
            "this API key has no subscriptions left (its limit counts every socket it has open)"
                .to_string(),
        );
    }
    let mut replies = Vec::new();
    for (name, topic) in parsed {
        topics.insert(name.clone());
        state.hub.subscribe(subscriber, &name);
        if let Some(since) = since {
            match topic.replay(state, since).await {
                Ok(rows) => replies.extend(rows.into_iter().map(|(row, position)| {
                    json!({"type": "change", "topic": name, "id": row["id"], "position": position, "deleted": false, "row": row, "replayed": true})
                })),
                Err(err) => {
                    tracing::warn!(%err, "socket replay failed");
                    budget.settle(topics.len());
                    return error(format!("cannot replay {name} now; try again"));
                }
            }
        }
    }
    replies.push(json!({"type": "subscribed", "topics": topics.iter().collect::<Vec<_>>()}));
    replies
}
