//! What the sockets send, as types: every message is a JSON object whose `type` names
//! it. Fields borrow from the row or change they describe, so a push is written out
//! without building a JSON tree first. (Clients send `{"subscribe": …}` and
//! `{"unsubscribe": …}` objects without a `type`: those are `topics::ClientMessage`.)

use std::borrow::Cow;

use commandcenter_event_store::Position;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::ViewChange;

/// A message from the server, on either socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// Job socket, first message: the job as it is when the socket opens.
    Connected(JobState<'a>),
    /// Job socket: the job changed.
    Progress {
        /// Where the job stands.
        #[serde(flatten)]
        job: JobState<'a>,
        /// Whether it has ended.
        is_terminal: Cow<'a, Value>,
        /// The command that caused the change, when known (additive to the old contract).
        correlation_id: Option<Cow<'a, str>>,
    },
    /// Job socket: the job changed; the whole row, as `GET /api/v1/jobs/{id}` answers it
    /// (the previous API's broadcast after a `PATCH`). Sent after each `progress`.
    JobUpdate {
        /// The job's id.
        job_id: Cow<'a, Value>,
        /// The job.
        job: Cow<'a, Value>,
    },
    /// Job socket: the job was dispatched (or dispatched again after a release).
    JobDispatched {
        /// The job's id.
        job_id: Cow<'a, Value>,
        /// Its status.
        status: Cow<'a, Value>,
        /// When it was dispatched.
        dispatched_at: Cow<'a, Value>,
        /// When it may run, if delayed.
        scheduled_for: Cow<'a, Value>,
    },
    /// Job socket: the job was cancelled (sent before `completed`).
    JobCancelled {
        /// The job's id.
        job_id: Cow<'a, Value>,
        /// Its status (`cancelled`).
        status: Cow<'a, Value>,
    },
    /// Job socket, last message: the job ended.
    Completed {
        /// The job's id.
        job_id: Cow<'a, Value>,
        /// Its final status.
        status: Cow<'a, Value>,
        /// What it produced.
        result: Cow<'a, Value>,
        /// Why it failed.
        error: Cow<'a, Value>,
    },
    /// Multiplexed socket: a row of a subscribed topic changed (or is replayed).
    Change(Change<'a>),
    /// Multiplexed socket: the topics now followed, after a request.
    Subscribed {
        /// Every topic the socket follows.
        topics: Vec<Cow<'a, str>>,
    },
    /// Changes were dropped because the client read too slowly.
    Lagged {
        /// The last position the client was sent.
        position: Position,
        /// What to do about it (multiplexed socket only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Cow<'a, str>>,
    },
    /// Multiplexed socket: a request was refused.
    Error {
        /// Why.
        message: String,
    },
}

/// Where a job stands, as its socket reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobState<'a> {
    /// The job's id.
    pub job_id: Cow<'a, Value>,
    /// Its status.
    pub status: Cow<'a, Value>,
    /// Its progress, 0 to 100.
    pub progress: Cow<'a, Value>,
    /// What it is doing.
    pub current_step: Cow<'a, Value>,
}

impl<'a> JobState<'a> {
    /// The fields of `job` (a `job_view` row; missing ones are `null`).
    fn of(job: &'a Value) -> Self {
        Self {
            job_id: Cow::Borrowed(&job["id"]),
            status: Cow::Borrowed(&job["status"]),
            progress: Cow::Borrowed(&job["progress"]),
            current_step: Cow::Borrowed(&job["current_step"]),
        }
    }
}

/// A changed row of a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change<'a> {
    /// The topic it is pushed on.
    pub topic: Cow<'a, str>,
    /// The read model (live changes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<Cow<'a, str>>,
    /// The row's id.
    pub id: Option<Cow<'a, str>>,
    /// Position of the last event applied to the row.
    pub position: Cow<'a, str>,
    /// True when the row was removed.
    pub deleted: bool,
    /// Correlation id of that event (live changes only; `null` when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Option<Cow<'a, str>>>,
    /// The row as it is now.
    pub row: Option<Cow<'a, Value>>,
    /// True when read back for `since_position` rather than pushed live.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl<'a> ServerMessage<'a> {
    /// A job socket's first message about `job` (a `job_view` row).
    pub fn connected(job: &'a Value) -> Self {
        Self::Connected(JobState::of(job))
    }

    /// `job` changed, because of the command `correlation_id` when known.
    pub fn progress(job: &'a Value, correlation_id: Option<&'a str>) -> Self {
        Self::Progress {
            job: JobState::of(job),
            is_terminal: Cow::Borrowed(&job["is_terminal"]),
            correlation_id: correlation_id.map(Cow::Borrowed),
        }
    }

    /// The messages a change of the job from `before` to `job` adds to `progress`, in
    /// order: `job_update`, then `job_dispatched` or `job_cancelled` when that happened.
    pub fn transitions(before: &Value, job: &'a Value) -> Vec<Self> {
        let mut messages = vec![Self::JobUpdate {
            job_id: Cow::Borrowed(&job["id"]),
            job: Cow::Borrowed(job),
        }];
        if !job["dispatched_at"].is_null() && job["dispatched_at"] != before["dispatched_at"] {
            messages.push(Self::JobDispatched {
                job_id: Cow::Borrowed(&job["id"]),
                status: Cow::Borrowed(&job["status"]),
                dispatched_at: Cow::Borrowed(&job["dispatched_at"]),
                scheduled_for: Cow::Borrowed(&job["scheduled_for"]),
            });
        }
        if job["status"] == "cancelled" && before["status"] != "cancelled" {
            messages.push(Self::JobCancelled {
                job_id: Cow::Borrowed(&job["id"]),
                status: Cow::Borrowed(&job["status"]),
            });
        }
        messages
    }

    /// `job` ended.
    pub fn completed(job: &'a Value) -> Self {
        Self::Completed {
            job_id: Cow::Borrowed(&job["id"]),
            status: Cow::Borrowed(&job["status"]),
            result: Cow::Borrowed(&job["result"]),
            error: Cow::Borrowed(&job["error"]),
        }
    }

    /// `change`, pushed live on `topic`.
    pub fn change(topic: &'a str, change: &'a ViewChange) -> Self {
        Self::Change(Change {
            topic: Cow::Borrowed(topic),
            view: Some(Cow::Borrowed(&change.view)),
            id: Some(Cow::Borrowed(&change.id)),
            position: Cow::Owned(change.position.to_string()),
            deleted: change.deleted,
            correlation_id: Some(change.correlation_id.as_deref().map(Cow::Borrowed)),
            row: change.row.as_ref().map(Cow::Borrowed),
            replayed: false,
        })
    }

    /// `row` of `topic`, read back at `position` for `since_position`.
    pub fn replayed(topic: String, row: Value, position: String) -> ServerMessage<'static> {
        ServerMessage::Change(Change {
            topic: Cow::Owned(topic),
            view: None,
            id: row["id"].as_str().map(|id| Cow::Owned(id.to_string())),
            position: Cow::Owned(position),
            deleted: false,
            correlation_id: None,
            row: Some(Cow::Owned(row)),
            replayed: true,
        })
    }

    /// A refusal saying `message`.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(message: &ServerMessage<'_>) -> Value {
        serde_json::to_value(message).unwrap()
    }

    #[test]
    fn job_messages_keep_the_replaced_products_shape() {
        let job = json!({"id": "j1", "status": "running", "progress": 40, "current_step": "s",
                         "is_terminal": false, "result": null, "error": null});
        assert_eq!(
            text(&ServerMessage::connected(&job)),
            json!({"type": "connected", "job_id": "j1", "status": "running", "progress": 40, "current_step": "s"})
        );
        assert_eq!(
            text(&ServerMessage::progress(&job, None)),
            json!({"type": "progress", "job_id": "j1", "status": "running", "progress": 40,
                   "current_step": "s", "is_terminal": false, "correlation_id": null})
        );
        assert_eq!(
            text(&ServerMessage::completed(
                &json!({"id": "j1", "status": "completed"})
            )),
            json!({"type": "completed", "job_id": "j1", "status": "completed", "result": null, "error": null})
        );
        assert_eq!(
            text(&ServerMessage::Lagged {
                position: Position::ZERO,
                detail: None
            }),
            json!({"type": "lagged", "position": Position::ZERO})
        );
    }

    #[test]
    fn messages_read_back_as_they_were_written() {
        let job = json!({"id": "j1", "status": "running", "progress": 40, "current_step": "s", "is_terminal": false});
        let sent = text(&ServerMessage::progress(&job, Some("c1")));
        let read: ServerMessage<'_> = serde_json::from_value(sent.clone()).unwrap();
        assert!(matches!(read, ServerMessage::Progress { .. }));
        assert_eq!(text(&read), sent);
    }

    #[test]
    fn live_and_replayed_changes_differ_only_where_they_always_did() {
        let change = ViewChange {
            view: "job_view".into(),
            project_id: 1,
            id: "j1".into(),
            position: Position::new(1, 2),
            correlation_id: None,
            deleted: false,
            row: Some(json!({"id": "j1"})),
        };
        assert_eq!(
            text(&ServerMessage::change("job:j1", &change)),
            json!({"type": "change", "topic": "job:j1", "view": "job_view", "id": "j1",
                   "position": Position::new(1, 2), "deleted": false, "correlation_id": null,
                   "row": {"id": "j1"}})
        );
        let replayed = ServerMessage::replayed("job:j1".into(), json!({"id": "j1"}), "p".into());
        assert_eq!(
            text(&replayed),
            json!({"type": "change", "topic": "job:j1", "id": "j1", "position": "p",
                   "deleted": false, "row": {"id": "j1"}, "replayed": true})
        );
        assert_eq!(
            text(&ServerMessage::Subscribed {
                topics: vec![Cow::Borrowed("jobs:1")]
            }),
            json!({"type": "subscribed", "topics": ["jobs:1"]})
        );
        assert_eq!(
            text(&ServerMessage::error("no")),
            json!({"type": "error", "message": "no"})
        );
    }
}
