//! `GET /api/v1/ws`: topics multiplexed on one socket, with replay.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use commandcenter_api_error::ApiError;
use commandcenter_domain::values::AggregateId;
use commandcenter_event_store::Position;
use serde::Deserialize;
use serde_json::Value;

use commandcenter_auth::guard::SubscriptionBudget;
use commandcenter_auth::policy::Kind;
use commandcenter_auth::Caller;

use super::{
    close, lean, send, ServerMessage, Unsubscribe, KEY_REVOKED, MAX_REPLAY, MAX_TOPICS, PING_EVERY,
    POLICY_VIOLATION,
};
use crate::QueryState;

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
                    "SELECT to_jsonb(j) - 'doc', j.position FROM job_view j \
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
                    "SELECT to_jsonb(t) - 'search' - 'search_text' - 'doc', t.position FROM technology_view t \
                      WHERE t.project_id = $1 AND t.position > $2 ORDER BY t.position LIMIT $3",
                )
                .bind(project)
                .bind(since)
                .bind(MAX_REPLAY)
                .fetch_all(&state.primary)
                .await
            }
            Self::Job(id) => {
                sqlx::query_as("SELECT to_jsonb(j) - 'doc', j.position FROM job_view j WHERE j.id = $1 AND j.position > $2")
                    .bind(id)
                    .bind(since)
                    .fetch_all(&state.primary)
                    .await
            }
        }
    }
}

/// `GET /api/v1/ws`.
#[utoipa::path(get, path = "/api/v1/ws", tag = "push", responses((status = 400, description = "Not a WebSocket handshake (problem+json)"), (status = 101, description = "WebSocket: subscribe to jobs:<project_id>, job:<id>, technologies:<project_id>; change and lagged messages")))]
pub async fn multiplexed_socket(
    State(state): State<QueryState>,
    caller: Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    Ok(lean(ws)?.on_upgrade(move |socket| serve_socket(state, caller, socket)))
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
                    if !send(&state, &mut socket, &ServerMessage::change(topic, &change)).await {
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
                        if !send(&state, &mut socket, &message).await {
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
            let message = ServerMessage::Lagged {
                position: sent,
                detail: Some(
                    "some changes were dropped; subscribe again with this since_position".into(),
                ),
            };
            if !send(&state, &mut socket, &message).await {
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
) -> Vec<ServerMessage<'static>> {
    let error = |message: String| vec![ServerMessage::error(message)];
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
                Ok(rows) => {
                    replies.extend(rows.into_iter().map(|(row, position)| {
                        ServerMessage::replayed(name.clone(), row, position)
                    }))
                }
                Err(err) => {
                    tracing::warn!(%err, "socket replay failed");
                    budget.settle(topics.len());
                    return error(format!("cannot replay {name} now; try again"));
                }
            }
        }
    }
    replies.push(ServerMessage::Subscribed {
        topics: topics.iter().map(|t| t.clone().into()).collect(),
    });
    replies
}
