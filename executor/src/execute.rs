//! Runs one command against one aggregate: load (a create skips it, and so may a command
//! on a state this process remembers: [`Start::Recent`]), decide, and commit the events
//! together with uniqueness claims and the idempotency record.
//!
//! This is `cqrs-es`'s `CqrsFramework::execute` made transactional: the aggregate's
//! `handle` decides exactly as there, but the append, the claims and the saved response
//! commit or roll back together, and the caller learns the new version and position.
//! The writes go to the store's committer (group commit, `commandcenter_event_store::Member`):
//! they share a transaction with the commands queued at the same time, each under a
//! savepoint of its own (or appended together with other plain ones: `Member::plain`),
//! and the command learns its outcome after that commit.
//! A lost optimistic-concurrency race is retried a few times when the client gave no
//! `If-Match`; with `If-Match` it is [`CommandError::Concurrent`] at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use commandcenter_metrics::Metrics;

use commandcenter_domain::values::ProjectId;
use commandcenter_event_store::{
    self as group, claim, AggregateEvents, Claim, Committed, EventStore, Loaded, NewEvent,
    PlainAppend, Position, StoreError, SNAPSHOT_EVERY,
};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use sqlx::PgConnection;
use tokio::sync::oneshot;

use crate::idempotency::{self, IdempotentRequest, Lookup, SavedReply};
use crate::{CommandError, RequestMeta};

/// How many times a command without `If-Match` is tried against concurrent writers.
pub const MAX_ATTEMPTS: u32 = 5;

/// What the write side needs to know of an aggregate beyond `cqrs-es`'s trait.
pub trait WriteModel: Aggregate<Services = ()> + Clone
where
    Self::Command: Clone,
    CommandError: From<Self::Error>,
{
    /// The project the aggregate belongs to, once created.
    fn project_id(&self) -> Option<ProjectId>;

    /// The uniqueness claims this state holds (released when it no longer does).
    fn claims(&self) -> Vec<Claim>;

    /// The command's name, for `commands_total`.
    fn command_name(command: &Self::Command) -> &'static str;

    /// True when `command` creates its aggregate: it is decided against the empty state
    /// without reading the store (the events' primary key refuses it if the aggregate
    /// exists, and the retry reads it).
    fn creates(_command: &Self::Command) -> bool {
        false
    }

    /// Records what committed `events` mean beyond their count (job outcomes), given the
    /// state after them.
    fn observe(&self, _events: &[Self::Event], _metrics: &Metrics) {}
}

/// The state after a command and where its last event stands.
pub struct Outcome<A> {
    /// The aggregate after the command's events.
    pub state: A,
    /// Version and position of the aggregate's last event.
    pub committed: Committed,
    /// How many events the command appended (0 for a no-op).
    pub appended: usize,
}

/// What a command's caller gets back: an HTTP reply (saved for idempotent replays), or,
/// for in-process callers such as workers, the state itself.
pub trait Answer: Sized {
    /// The reply to save under the request's `Idempotency-Key`.
    fn saved(&self) -> Option<SavedReply>;
    /// The answer from a saved reply, for a replayed request.
    fn replayed(reply: SavedReply) -> Result<Self, CommandError>;
}

/// The answer of an in-process command: the aggregate after it and where it stands.
#[derive(Debug, Clone)]
pub struct Applied<A> {
    /// The aggregate after the command's events.
    pub state: A,
    /// Version and position of the aggregate's last event.
    pub committed: Committed,
    /// How many events the command appended (0 for a no-op).
    pub appended: usize,
}

impl<A: Clone> Applied<A> {
    fn of(outcome: &Outcome<A>) -> Self {
        Self {
            state: outcome.state.clone(),
            committed: outcome.committed,
            appended: outcome.appended,
        }
    }
}

impl<A> Answer for Applied<A> {
    fn saved(&self) -> Option<SavedReply> {
        None
    }

    fn replayed(_: SavedReply) -> Result<Self, CommandError> {
        Err(CommandError::Invariant(
            "in-process commands carry no Idempotency-Key",
        ))
    }
}

/// Runs `command` on aggregate `aggregate_id` for an in-process caller (a worker, the
/// lease sweeper): the same transactional path as an HTTP command, without
/// `If-Match` or `Idempotency-Key`.
pub async fn apply<A>(
    store: &EventStore,
    metrics: &Arc<Metrics>,
    aggregate_id: &str,
    command: A::Command,
    meta: RequestMeta,
) -> Result<Applied<A>, CommandError>
where
    A: WriteModel + Send + Sync + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send,
    CommandError: From<A::Error>,
{
    let execution = Execution::<A> {
        aggregate_id: aggregate_id.to_string(),
        command,
        if_match: None,
        meta,
        idempotency: None,
    };
    execute(store, metrics, execution, |outcome| {
        Ok(Applied::of(outcome))
    })
    .await
}

/// One command to run.
pub struct Execution<A: Aggregate> {
    /// Target aggregate.
    pub aggregate_id: String,
    /// The command (cloned for each attempt).
    pub command: A::Command,
    /// The version the client requires (`If-Match`).
    pub if_match: Option<i64>,
    /// Tracing ids and actor for the metadata.
    pub meta: RequestMeta,
    /// The Idempotency-Key, if any.
    pub idempotency: Option<IdempotentRequest>,
}

enum Failure {
    Conflict,
    IdempotencyRace,
    Refused(CommandError),
}

impl From<CommandError> for Failure {
    fn from(err: CommandError) -> Self {
        Self::Refused(err)
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self::Refused(err.into())
    }
}

/// Runs `execution`, building the answer with `respond` inside the transaction so an
/// idempotent replay returns exactly the same bytes.
///
/// The command runs on a task of its own: a client that disconnects drops the request's
/// future, and a transaction abandoned half-way would go back to the pool still open.
/// Detached, the command always ends in a commit or a rollback.
pub async fn execute<A, F, R>(
    store: &EventStore,
    metrics: &Arc<Metrics>,
    execution: Execution<A>,
    respond: F,
) -> Result<R, CommandError>
where
    A: WriteModel + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send,
    CommandError: From<A::Error>,
    F: Fn(&Outcome<A>) -> Result<R, CommandError> + Send + Sync + 'static,
    R: Answer + Send + 'static,
{
    let store = store.clone();
    let metrics = metrics.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        let command = A::command_name(&execution.command);
        let result = run_to_end(&store, &metrics, &execution, &respond).await;
        let outcome = match &result {
            Ok(_) => "accepted",
            // Refused before anything was written: load, not a fault.
            Err(CommandError::Store(StoreError::Busy { .. })) => "overloaded",
            Err(err) if err.is_conflict() => "conflict",
            Err(err) if err.is_fault() => "error",
            Err(_) => "rejected",
        };
        metrics
            .commands
            .with_label_values(&[A::TYPE, command, outcome])
            .inc();
        result
    })
    .await?
}

async fn run_to_end<A, R>(
    store: &EventStore,
    metrics: &Metrics,
    execution: &Execution<A>,
    respond: &Arc<impl Fn(&Outcome<A>) -> Result<R, CommandError> + Send + Sync + 'static>,
) -> Result<R, CommandError>
where
    A: WriteModel + 'static,
    A::Command: Clone + Sync,
    CommandError: From<A::Error>,
    R: Answer + Send + 'static,
{
    if let Some(request) = &execution.idempotency {
        match idempotency::lookup(store.pool(), request).await? {
            Lookup::Fresh => {}
            Lookup::Replay(reply) => return R::replayed(reply),
            Lookup::Mismatch => return Err(CommandError::IdempotencyKeyReused),
        }
    }
    let mut attempt = 1;
    loop {
        // A first attempt without `If-Match` decides a create without reading the store,
        // and any other command on the state this process remembers, if it does.
        let start = match (attempt, execution.if_match) {
            (1, None) if A::creates(&execution.command) => Start::New,
            (1, None) => Start::Recent,
            _ => Start::Store,
        };
        let result = try_once(store, metrics, execution, respond, start).await;
        if result.as_ref().is_err_and(may_be_stale) {
            // What it remembers may be what lost the race.
            store.forget::<A>(&execution.aggregate_id);
        }
        match result {
            Ok(reply) => return Ok(reply),
            Err(Failure::Refused(err)) => return Err(err),
            Err(Failure::Conflict) if execution.if_match.is_none() && attempt < MAX_ATTEMPTS => {
                tracing::debug!(
                    attempt,
                    aggregate_id = execution.aggregate_id,
                    "retrying after a concurrent write"
                );
                // After a create's lost race (an id taken) or a first attempt on a
                // remembered state (most often one the store had passed), the retry reads
                // the store at once: that is not contention.
                if start == Start::Store {
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 3)).await;
                }
                attempt += 1;
            }
            Err(Failure::Conflict) => return Err(CommandError::Concurrent),
            Err(Failure::IdempotencyRace) => {
                let request = execution
                    .idempotency
                    .as_ref()
                    .ok_or(CommandError::Invariant("idempotency race without a key"))?;
                return match idempotency::lookup(store.pool(), request).await? {
                    Lookup::Replay(reply) => R::replayed(reply),
                    Lookup::Mismatch => Err(CommandError::IdempotencyKeyReused),
                    Lookup::Fresh => Err(CommandError::IdempotencyInProgress),
                };
            }
        }
    }
}

/// Whether a command that failed so may have been decided on a remembered state the
/// store has passed, or left one uncertain (a batch that did not commit, or whose commit
/// went unanswered). A refusal by the aggregate was decided on the store's state, which
/// is remembered; a command refused for load (503) was not written at all.
fn may_be_stale(failure: &Failure) -> bool {
    match failure {
        Failure::Conflict | Failure::IdempotencyRace => true,
        Failure::Refused(CommandError::Store(StoreError::Busy { .. })) => false,
        Failure::Refused(CommandError::Store(_)) => true,
        Failure::Refused(_) => false,
    }
}

/// What deciding a command left to write, or the answer when nothing is.
enum Decided<A: Aggregate, R> {
    Answered(R),
    Write(Box<Member<A, R>>, Queued<A, R>),
}

/// Where a queued command's outcome arrives once its batch ended.
type Queued<A, R> = oneshot::Receiver<Result<Written<A, R>, Failure>>;

/// The state a command is decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The empty state, for a create on its first attempt: an aggregate that cannot
    /// exist yet need not be read; if it does exist, the events' primary key refuses the
    /// append and the retry loads it.
    New,
    /// The latest state this process committed or loaded, if it remembers one, else the
    /// store's. It may be behind the store (another process wrote since): a decision
    /// that appends events is safe on it (the append's version check refuses a stale
    /// one, and the retry reads the store), any other one (a refusal, a no-op) is taken
    /// again on the store's state, and so is an append refused before its version was
    /// compared (`stale_sign`). Never used with `If-Match`, which is compared with the
    /// store's version.
    Recent,
    /// The store's current state.
    Store,
}

/// Where the state a command was decided on came from (`command_states_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    New,
    Recent,
    Store,
    /// A remembered state's decision, taken again on the store's.
    RecentRechecked,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Recent => "recent",
            Self::Store => "store",
            Self::RecentRechecked => "recent_rechecked",
        }
    }
}

/// Decides `execution` against the aggregate's state as `start` says.
async fn decide<A, R: Answer>(
    store: &EventStore,
    metrics: &Metrics,
    execution: &Execution<A>,
    respond: &Arc<impl Fn(&Outcome<A>) -> Result<R, CommandError> + Send + Sync + 'static>,
    mut start: Start,
) -> Result<Decided<A, R>, Failure>
where
    A: WriteModel + 'static,
    A::Command: Clone,
    CommandError: From<A::Error>,
{
    let id = execution.aggregate_id.as_str();
    let (unchanged, claims_before, state, events, remembered) = loop {
        let recent = match start {
            Start::Recent => store.recent::<A>(id),
            Start::New | Start::Store => None,
        };
        let (loaded, source) = match (start, recent) {
            (_, Some(recent)) => (recent, Source::Recent),
            (Start::New, None) => (
                Loaded {
                    aggregate: A::default(),
                    version: 0,
                    position: None,
                },
                Source::New,
            ),
            (Start::Recent | Start::Store, None) => {
                let loaded = store.load::<A>(id).await?;
                // An aggregate that does not exist is not remembered (unknown ids would
                // fill the memory).
                if loaded.version > 0 {
                    store.remember(id, loaded.clone());
                }
                (loaded, Source::Store)
            }
        };
        let Loaded {
            aggregate: mut state,
            version,
            position,
        } = loaded;
        if let Some(expected) = execution.if_match {
            if expected != version {
                return Err(CommandError::PreconditionFailed {
                    expected,
                    actual: version,
                }
                .into());
            }
        }
        let claims_before = state.claims();
        let sink = EventSink::default();
        let handled = state.handle(execution.command.clone(), &(), &sink).await;
        let events = sink.collect().await;
        // Only an append checks the version a decision was taken on.
        let trusted = source != Source::Recent || (handled.is_ok() && !events.is_empty());
        let counted = if trusted {
            source
        } else {
            Source::RecentRechecked
        };
        metrics
            .command_states
            .with_label_values(&[A::TYPE, counted.as_str()])
            .inc();
        if !trusted {
            start = Start::Store;
            continue;
        }
        handled.map_err(CommandError::from)?;
        let unchanged = Committed {
            version,
            position: position.unwrap_or(Position::ZERO),
        };
        break (
            unchanged,
            claims_before,
            state,
            events,
            source == Source::Recent,
        );
    };
    if events.is_empty() && execution.idempotency.is_none() {
        return Ok(Decided::Answered(respond(&Outcome {
            state,
            committed: unchanged,
            appended: 0,
        })?));
    }
    let new_events = events
        .iter()
        .map(NewEvent::from_domain)
        .collect::<Result<Vec<_>, _>>()?;
    let claims_after = state.claims();
    let released = claims_before
        .iter()
        .filter(|c| !claims_after.contains(c))
        .cloned()
        .collect();
    let taken = claims_after
        .iter()
        .filter(|c| !claims_before.contains(c))
        .cloned()
        .collect();
    let (done, answer) = oneshot::channel();
    let member = Member {
        store: store.clone(),
        append: AggregateEvents {
            aggregate_type: A::TYPE.to_string(),
            aggregate_id: id.to_string(),
            expected_version: unchanged.version,
            events: new_events,
            metadata: metadata(execution, state.project_id()),
        },
        unchanged,
        remembered,
        events,
        released,
        taken,
        idempotency: execution.idempotency.clone(),
        state: Some(state),
        respond: respond.clone(),
        written: None,
        written_at: None,
        done,
    };
    Ok(Decided::Write(Box::new(member), answer))
}

type Respond<A, R> = dyn Fn(&Outcome<A>) -> Result<R, CommandError> + Send + Sync;

/// A command written in its batch's transaction: the reply and the state after it.
struct Written<A: Aggregate, R> {
    reply: R,
    state: A,
    events: Vec<A::Event>,
    /// Version and position after the command.
    committed: Committed,
}

/// One decided command, handed to the committer: what it writes, and where its outcome
/// goes once its batch ended.
struct Member<A: Aggregate, R> {
    /// The events to append, after the version the command was decided on.
    append: AggregateEvents,
    /// Version and position before the command (its answer when it appends nothing).
    unchanged: Committed,
    /// Decided on the state this process remembers, which the store may have passed.
    remembered: bool,
    events: Vec<A::Event>,
    released: Vec<Claim>,
    taken: Vec<Claim>,
    idempotency: Option<IdempotentRequest>,
    state: Option<A>,
    respond: Arc<Respond<A, R>>,
    store: EventStore,
    written: Option<Result<Written<A, R>, Failure>>,
    /// Version and position of its last event, once its events are written.
    written_at: Option<Committed>,
    done: oneshot::Sender<Result<Written<A, R>, Failure>>,
}

impl<A, R> Member<A, R>
where
    A: WriteModel,
    A::Command: Clone,
    CommandError: From<A::Error>,
    R: Answer,
{
    /// The command's rows, in the batch's transaction: the Idempotency-Key first (a
    /// duplicate in this batch or in flight elsewhere refuses or waits), then events and
    /// claims in one statement, the snapshot when due, and the saved reply.
    async fn write_rows(&mut self, conn: &mut PgConnection) -> Result<Written<A, R>, Failure> {
        if let Some(request) = &self.idempotency {
            if !idempotency::reserve(&mut *conn, request).await? {
                return Err(Failure::IdempotencyRace);
            }
        }
        let state = self
            .state
            .take()
            .ok_or(CommandError::Invariant("a command was written twice"))?;
        let committed = if self.append.events.is_empty() {
            self.unchanged
        } else {
            match self
                .store
                .append_claiming(&mut *conn, &self.append, &self.released, &self.taken)
                .await
            {
                Ok(committed) => {
                    self.written_at = Some(committed);
                    committed
                }
                Err(StoreError::Conflict { .. }) => return Err(Failure::Conflict),
                // Decided on a remembered state: a title held by another aggregate, or
                // events not where that state has them (the store lost what it had
                // acknowledged), may mean the store's state is another one; it must
                // answer, so this is a lost race, retried on it.
                Err(err) if self.remembered && stale_sign(&err) => return Err(Failure::Conflict),
                Err(err) => return Err(err.into()),
            }
        };
        // Snapshot policy: one each time an aggregate passes a multiple of SNAPSHOT_EVERY
        // events, in the same transaction (so a snapshot never describes uncommitted
        // events).
        if committed.version / SNAPSHOT_EVERY > self.unchanged.version / SNAPSHOT_EVERY {
            self.store
                .save_snapshot(
                    &mut *conn,
                    &self.append.aggregate_id,
                    committed.version,
                    committed.position,
                    &state,
                )
                .await?;
        }
        let outcome = Outcome {
            state,
            committed,
            appended: self.append.events.len(),
        };
        let reply = (self.respond)(&outcome)?;
        if let Some(request) = &self.idempotency {
            let saved = reply.saved().ok_or(CommandError::Invariant(
                "an idempotent command must answer with a reply",
            ))?;
            idempotency::save(&mut *conn, request, &saved).await?;
        }
        Ok(Written {
            reply,
            state: outcome.state,
            events: std::mem::take(&mut self.events),
            committed,
        })
    }
}

impl<A, R> group::Member for Member<A, R>
where
    A: WriteModel + 'static,
    A::Command: Clone,
    CommandError: From<A::Error>,
    R: Answer + Send + 'static,
{
    fn write<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<(), group::Rejected>> {
        Box::pin(async move {
            let written = self.write_rows(conn).await.map_err(deadlock_is_conflict);
            let rejected = written.is_err();
            self.written = Some(written);
            if rejected {
                Err(group::Rejected)
            } else {
                Ok(())
            }
        })
    }

    fn settle(mut self: Box<Self>, batch: Result<(), StoreError>) {
        let result = match (self.written.take(), batch) {
            // Its key was held by a neighbour whose batch did not commit either: nothing
            // holds it now, and the batch's failure is the answer (not "in progress").
            (Some(Err(Failure::IdempotencyRace)), Err(err)) => Err(Failure::Refused(err.into())),
            (Some(Err(failure)), _) => Err(failure),
            (Some(Ok(written)), Ok(())) => Ok(written),
            (_, Err(err)) => Err(Failure::Refused(err.into())),
            (None, Ok(())) => Err(Failure::Refused(CommandError::Invariant(
                "a command's batch ended before it was written",
            ))),
        };
        // The waiting request may be gone (its client left); the outcome stands.
        let _ = self.done.send(result);
    }

    fn footprint(&self) -> Option<PlainAppend<'_>> {
        (!self.append.events.is_empty()).then_some(PlainAppend {
            append: &self.append,
            released: &self.released,
            taken: &self.taken,
        })
    }

    fn plain(&self) -> Option<PlainAppend<'_>> {
        let events = self.append.events.len() as i64;
        let snapshot_due = (self.unchanged.version + events) / SNAPSHOT_EVERY
            > self.unchanged.version / SNAPSHOT_EVERY;
        if self.idempotency.is_some() || snapshot_due || self.state.is_none() {
            return None;
        }
        self.footprint()
    }

    fn wrote_plain(&mut self, committed: Committed) -> Result<(), group::Rejected> {
        let state = self.state.take().ok_or(group::Rejected)?;
        let outcome = Outcome {
            state,
            committed,
            appended: self.append.events.len(),
        };
        match (self.respond)(&outcome) {
            Ok(reply) => {
                self.written_at = Some(committed);
                self.written = Some(Ok(Written {
                    reply,
                    state: outcome.state,
                    events: std::mem::take(&mut self.events),
                    committed,
                }));
                Ok(())
            }
            // Written alone after all, it fails there with its reason.
            Err(_) => {
                self.state = Some(outcome.state);
                Err(group::Rejected)
            }
        }
    }

    fn unwrite_plain(&mut self) {
        if let Some(Ok(written)) = self.written.take() {
            self.state = Some(written.state);
            self.events = written.events;
        }
        self.written_at = None;
    }

    fn appended(&self) -> Option<group::Appended> {
        // Built only when asked (a COMMIT that failed to answer), not per command.
        self.written_at.map(|committed| group::Appended {
            aggregate_type: self.append.aggregate_type.clone(),
            aggregate_id: self.append.aggregate_id.clone(),
            sequence: committed.version,
            position: committed.position,
        })
    }
}

/// Whether an append refused with `err` may have been decided on a state the store has
/// passed: a claim held by another aggregate (the aggregate may have released its own, or
/// been deleted), or an event without its predecessor (`23000`, the hash trigger).
fn stale_sign(err: &StoreError) -> bool {
    match err {
        StoreError::ClaimTaken { .. } => true,
        StoreError::Database(sqlx::Error::Database(db)) => db.code().as_deref() == Some("23000"),
        _ => false,
    }
}

/// Batches written at the same time (several committers, other processes) can wait on
/// each other's rows (an aggregate's next sequence, a claim, a key) in a cycle; the
/// database breaks it by failing one statement (`40P01`), or a member gives up waiting
/// on a lock (`55P03`, the batch's lock timeout). For that command it is a lost race: it
/// is retried (or 409 with `If-Match`) after its batch, like any other.
fn deadlock_is_conflict(failure: Failure) -> Failure {
    match failure {
        Failure::Refused(CommandError::Store(StoreError::Database(sqlx::Error::Database(db))))
            if matches!(db.code().as_deref(), Some("40P01" | "55P03")) =>
        {
            Failure::Conflict
        }
        failure => failure,
    }
}

async fn try_once<A, R>(
    store: &EventStore,
    metrics: &Metrics,
    execution: &Execution<A>,
    respond: &Arc<impl Fn(&Outcome<A>) -> Result<R, CommandError> + Send + Sync + 'static>,
    start: Start,
) -> Result<R, Failure>
where
    A: WriteModel + 'static,
    A::Command: Clone,
    CommandError: From<A::Error>,
    R: Answer + Send + 'static,
{
    let (member, answer) = match decide(store, metrics, execution, respond, start).await? {
        Decided::Answered(reply) => return Ok(reply),
        Decided::Write(member, answer) => (member, answer),
    };
    let started = Instant::now();
    store.commit_in_group(member);
    let written = answer
        .await
        .map_err(|_| CommandError::Invariant("the committer dropped a command"))??;
    metrics
        .append_duration
        .observe(started.elapsed().as_secs_f64());
    for event in &written.events {
        metrics
            .events_appended
            .with_label_values(&[A::TYPE, &event.event_type()])
            .inc();
    }
    written.state.observe(&written.events, metrics);
    if !written.events.is_empty() {
        // Committed: the next command on it may be decided without reading the store.
        store.remember(
            &execution.aggregate_id,
            Loaded {
                aggregate: written.state,
                version: written.committed.version,
                position: Some(written.committed.position),
            },
        );
    }
    Ok(written.reply)
}

fn metadata<A: Aggregate>(execution: &Execution<A>, project_id: Option<ProjectId>) -> Value {
    let meta = &execution.meta;
    let mut value = json!({
        "request_id": meta.request_id,
        "correlation_id": meta.correlation_id,
        "actor": meta.actor,
    });
    if let Some(causation) = &meta.causation_id {
        value["causation_id"] = json!(causation);
    }
    if let Some(project) = project_id {
        value["project_id"] = json!(project.to_string());
    }
    if let Some(request) = &execution.idempotency {
        value["idempotency_key"] = json!(request.key());
    }
    value
}

/// Rebuilds the uniqueness claims of every technology and job from the events, on
/// `conn` (inside an import's transaction): what the executor would have claimed while
/// the events were written. Returns how many claims it wrote.
pub async fn rebuild_claims(conn: &mut sqlx::PgConnection) -> Result<u64, StoreError> {
    use commandcenter_domain::job::Job;
    use commandcenter_domain::technology::Technology;
    let mut written = rebuild_claims_of::<Technology>(conn).await?;
    written += rebuild_claims_of::<Job>(conn).await?;
    Ok(written)
}

async fn rebuild_claims_of<A>(conn: &mut sqlx::PgConnection) -> Result<u64, StoreError>
where
    A: WriteModel,
    A::Command: Clone,
    CommandError: From<A::Error>,
{
    use futures::TryStreamExt;
    let mut held: Vec<(Claim, String)> = Vec::new();
    {
        let mut rows = sqlx::query_as::<_, (String, i64, String, String, Value)>(
            "SELECT aggregate_id, sequence, event_type, event_version, payload FROM events \
              WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence",
        )
        .bind(A::TYPE)
        .fetch(&mut *conn);
        let mut current: Option<(String, A)> = None;
        while let Some((id, sequence, event_type, version, payload)) = rows.try_next().await? {
            if current.as_ref().is_none_or(|(c, _)| *c != id) {
                if let Some((done, state)) = current.take() {
                    held.extend(state.claims().into_iter().map(|c| (c, done.clone())));
                }
                current = Some((id.clone(), A::default()));
            }
            let event: A::Event = serde_json::from_value(commandcenter_domain::upcast_payload(
                &event_type,
                &version,
                payload,
            ))
            .map_err(|source| StoreError::Corrupt {
                aggregate_type: A::TYPE.to_string(),
                aggregate_id: id.clone(),
                sequence,
                source,
            })?;
            if let Some((_, state)) = current.as_mut() {
                state.apply(event);
            }
        }
        if let Some((done, state)) = current.take() {
            held.extend(state.claims().into_iter().map(|c| (c, done.clone())));
        }
    }
    for (held_claim, owner) in &held {
        claim(&mut *conn, held_claim, owner).await?;
    }
    Ok(held.len() as u64)
}
