//! Group commit (issue 16): commands queued together share one transaction, and every
//! promise stays per command — a command that fails in a batch fails alone, claims and
//! Idempotency-Keys behave as they do one command at a time, and each answer carries its
//! own version and position.
//!
//! A batch is formed deterministically on a store with one committer task: it is held on a lock inside a first
//! batch (its one command reserves an Idempotency-Key this test holds in an open
//! transaction), the commands under test are queued one by one behind it, and the test
//! then lets go — the committer finishes the first batch and takes every queued command
//! into the next one. Each answer's position names its transaction, so the test sees
//! which commands shared a commit.

use std::sync::Arc;

use commandcenter_domain::technology::{
    Technology, TechnologyChanges, TechnologyCommand, TechnologyError, TechnologyFields,
};
use commandcenter_domain::values::ProjectId;
use commandcenter_event_store::{AppendSignal, EventStore, Position};
use commandcenter_executor::{
    apply, clock, execute, Answer, Applied, CommandError, Execution, IdempotentRequest,
    RequestMeta, SavedReply,
};
use commandcenter_metrics::Metrics;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{assert_store_consistent, assert_stored_at, spawn_app, TestApp};

fn meta() -> RequestMeta {
    RequestMeta {
        request_id: Uuid::now_v7().to_string(),
        correlation_id: "group-commit-test".into(),
        causation_id: None,
        actor: "test".into(),
    }
}

/// The fields of a valid technology titled `title` (taken from one the API created, so
/// the test builds no domain values by hand).
async fn fields(app: &TestApp, title: &str) -> TechnologyFields {
    let created = app
        .create_technology(&format!("template {}", Uuid::now_v7().simple()))
        .await;
    let payload: Value =
        sqlx::query_scalar("SELECT payload FROM events WHERE aggregate_id = $1 AND sequence = 1")
            .bind(created["id"].as_str().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let mut fields = payload["TechnologyCreated"]["technology"].clone();
    fields["title"] = json!(title);
    serde_json::from_value(fields).expect("stored fields read back")
}

fn create(id: &str, fields: TechnologyFields) -> TechnologyCommand {
    TechnologyCommand::CreateTechnology {
        id: id.to_string(),
        project_id: ProjectId::parse("project_id", 1).unwrap(),
        fields: Box::new(fields),
        at: clock::now(),
    }
}

fn update(notes: &str) -> TechnologyCommand {
    TechnologyCommand::UpdateTechnology {
        changes: Box::new(TechnologyChanges {
            notes: Some(Some(notes.to_string())),
            ..Default::default()
        }),
        status: None,
        at: clock::now(),
    }
}

/// An answer as an HTTP handler's: saved under the key, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    body: String,
    replayed: bool,
}

impl Answer for Reply {
    fn saved(&self) -> Option<SavedReply> {
        Some(SavedReply {
            status: 201,
            headers: Vec::new(),
            body: self.body.clone().into_bytes(),
        })
    }

    fn replayed(reply: SavedReply) -> Result<Self, CommandError> {
        Ok(Self {
            body: String::from_utf8(reply.body).unwrap(),
            replayed: true,
        })
    }
}

/// Runs a keyed command on `store` on a task of its own.
fn keyed(
    store: &EventStore,
    metrics: &Arc<Metrics>,
    id: &str,
    command: TechnologyCommand,
    scope: &str,
    key: &str,
    body: &str,
) -> JoinHandle<Result<Reply, CommandError>> {
    let execution = Execution::<Technology> {
        aggregate_id: id.to_string(),
        command,
        if_match: None,
        meta: meta(),
        idempotency: Some(IdempotentRequest::new(
            key.to_string(),
            scope,
            "POST",
            "/test",
            body.as_bytes(),
        )),
    };
    let (store, metrics, id) = (store.clone(), metrics.clone(), id.to_string());
    tokio::spawn(async move {
        execute(&store, &metrics, execution, move |outcome| {
            Ok(Reply {
                body: format!(
                    "{id} v{} at {}",
                    outcome.committed.version, outcome.committed.position
                ),
                replayed: false,
            })
        })
        .await
    })
}

/// Runs an unkeyed command (with `if_match`, if any) on `store` on a task of its own.
fn plain(
    store: &EventStore,
    metrics: &Arc<Metrics>,
    id: &str,
    command: TechnologyCommand,
    if_match: Option<i64>,
) -> JoinHandle<Result<Applied<Technology>, CommandError>> {
    let execution = Execution::<Technology> {
        aggregate_id: id.to_string(),
        command,
        if_match,
        meta: meta(),
        idempotency: None,
    };
    let (store, metrics) = (store.clone(), metrics.clone());
    tokio::spawn(async move {
        execute(&store, &metrics, execution, |outcome| {
            Ok(Applied {
                state: outcome.state.clone(),
                committed: outcome.committed,
                appended: outcome.appended,
            })
        })
        .await
    })
}

/// The committer of `store`, held inside a batch until [`Held::release`].
struct Held {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    first: JoinHandle<Result<Reply, CommandError>>,
}

impl Held {
    /// Holds the Idempotency-Key the first command needs in an open transaction, and
    /// waits until the committer blocks on it.
    async fn start(
        app: &TestApp,
        store: &EventStore,
        metrics: &Arc<Metrics>,
        fields: TechnologyFields,
    ) -> Self {
        let mut tx = app.pool.begin().await.unwrap();
        let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let request = IdempotentRequest::new("hold".into(), "test", "POST", "/hold", b"hold");
        commandcenter_executor::idempotency::reserve(&mut tx, &request)
            .await
            .unwrap();
        let id = Uuid::now_v7().to_string();
        let first = keyed(
            store,
            metrics,
            &id,
            create(&id, fields),
            "test",
            "hold",
            "hold",
        );
        // Until the committer's session waits on this transaction (not any session's wait).
        for _ in 0..1000 {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(holder)
            .fetch_one(&app.pool)
            .await
            .unwrap();
            if blocked > 0 {
                return Self { tx, first };
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the committer never waited on the held key");
    }

    /// Lets the first batch go: the held key is released, so the first command applies.
    async fn release(self) {
        self.tx.rollback().await.unwrap();
        let first = self
            .first
            .await
            .unwrap()
            .expect("the holding command applies");
        assert!(!first.replayed);
    }
}

/// Queues `command` behind the held committer and waits until it is queued, so the
/// batch's order is the order of these calls.
async fn queue<T>(store: &EventStore, start: impl FnOnce() -> JoinHandle<T>) -> JoinHandle<T> {
    let before = store.commands_waiting();
    let handle = start();
    for _ in 0..500 {
        if store.commands_waiting() > before {
            return handle;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the command was never queued");
}

fn tx_of(committed_position: Position) -> u64 {
    committed_position.tx_id
}

#[tokio::test]
async fn a_batch_whose_middle_commands_fail_commits_the_others() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local()).with_committers(1);
    let metrics = Metrics::new();
    let existing = app.create_technology("Pure Data").await;
    let existing = existing["id"].as_str().unwrap().to_string();
    let (alpha_fields, alpha_twin_fields, beta_fields) = (
        fields(&app, "Alpha Synth").await,
        fields(&app, "alpha  SYNTH").await,
        fields(&app, "Beta Synth").await,
    );
    let held_fields = fields(&app, "Held").await;
    let events_before = app.stored_events().await.len();

    let held = Held::start(&app, &store, &metrics, held_fields).await;
    let (alpha, twin, beta) = (
        Uuid::now_v7().to_string(),
        Uuid::now_v7().to_string(),
        Uuid::now_v7().to_string(),
    );
    // In one batch, in this order: a create; a create claiming the same title (refused);
    // an update of `existing` at version 1 with If-Match (applies: version 2); the same
    // again (loses to its neighbour: 409, never a retry); the same without If-Match
    // (loses too, then is retried after the batch commits: version 3); another create.
    let a = queue(&store, || {
        plain(&store, &metrics, &alpha, create(&alpha, alpha_fields), None)
    })
    .await;
    let b = queue(&store, || {
        plain(
            &store,
            &metrics,
            &twin,
            create(&twin, alpha_twin_fields),
            None,
        )
    })
    .await;
    let c = queue(&store, || {
        plain(&store, &metrics, &existing, update("first"), Some(1))
    })
    .await;
    let d = queue(&store, || {
        plain(&store, &metrics, &existing, update("stale"), Some(1))
    })
    .await;
    let e = queue(&store, || {
        plain(&store, &metrics, &existing, update("retried"), None)
    })
    .await;
    let f = queue(&store, || {
        plain(&store, &metrics, &beta, create(&beta, beta_fields), None)
    })
    .await;
    assert_eq!(store.commands_waiting(), 6);
    held.release().await;

    let a = a.await.unwrap().expect("the first create applies");
    match b.await.unwrap() {
        Err(CommandError::Store(commandcenter_event_store::StoreError::ClaimTaken { .. })) => {}
        other => panic!("the second claimant of a title is refused, got {other:?}"),
    }
    let c = c.await.unwrap().expect("the first update applies");
    match d.await.unwrap() {
        Err(err) => assert!(err.is_conflict(), "a lost race with If-Match: {err:?}"),
        Ok(applied) => panic!("a stale If-Match applied at {:?}", applied.committed),
    }
    let e = e
        .await
        .unwrap()
        .expect("the update without If-Match is retried");
    let f = f.await.unwrap().expect("the last create applies");

    // The survivors of the batch share one transaction, each with its own position.
    let batch = tx_of(a.committed.position);
    assert_eq!(tx_of(c.committed.position), batch);
    assert_eq!(tx_of(f.committed.position), batch);
    let mut positions = [
        a.committed.position,
        c.committed.position,
        f.committed.position,
    ];
    positions.sort();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "own positions");
    assert_eq!((a.committed.version, c.committed.version), (1, 2));
    assert_eq!(f.committed.version, 1);
    // The retried command committed after its batch, on the state that batch left.
    assert_eq!(e.committed.version, 3);
    assert!(tx_of(e.committed.position) > batch);
    assert_eq!(
        e.state.record().unwrap().fields.notes.as_deref(),
        Some("retried")
    );

    // The store holds exactly that: the holder, a, c, e, f — nothing of b or d.
    assert_eq!(app.stored_events().await.len(), events_before + 5);
    let stored_twin: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
            .bind(&twin)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored_twin, 0);
    let owners: Vec<String> =
        sqlx::query_scalar("SELECT owner_id FROM unique_claims WHERE key = 'alpha synth'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(owners, vec![alpha.clone()]);
    let notes: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'TechnologyUpdated'->'changes'->>'notes' FROM events \
          WHERE aggregate_id = $1 AND sequence > 1 ORDER BY sequence",
    )
    .bind(&existing)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(notes, ["first", "retried"]);
    assert_store_consistent(&app.pool).await;
}

fn rename(title: &TechnologyFields) -> TechnologyCommand {
    TechnologyCommand::UpdateTechnology {
        changes: Box::new(TechnologyChanges {
            title: Some(title.title.clone()),
            ..Default::default()
        }),
        status: None,
        at: clock::now(),
    }
}

/// Each applied command's answer against the store read directly: its last event is at
/// the answered version and position, in the batch's transaction.
async fn assert_answers_stored(pool: &PgPool, answers: &[(&str, &Applied<Technology>)]) {
    for (id, applied) in answers {
        assert_stored_at(
            pool,
            id,
            applied.committed.version,
            applied.committed.position,
        )
        .await;
        let later: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = 'technology' \
               AND aggregate_id = $1 AND sequence > $2",
        )
        .bind(id)
        .bind(applied.committed.version)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(later, 0, "{id}'s answered version is its last");
    }
}

/// Of the title claims on `keys`, exactly those in `owned`, each with its owner.
async fn assert_claims(pool: &PgPool, keys: &[&str], owned: &[(&str, &str)]) {
    let claims: Vec<(String, String)> =
        sqlx::query_as("SELECT key, owner_id FROM unique_claims WHERE key = ANY($1) ORDER BY key")
            .bind(keys)
            .fetch_all(pool)
            .await
            .unwrap();
    let mut owned: Vec<(String, String)> = owned
        .iter()
        .map(|(key, owner)| (key.to_string(), owner.to_string()))
        .collect();
    owned.sort();
    assert_eq!(claims, owned, "title claims and their owners");
}

/// Commands without an Idempotency-Key or a snapshot due are appended together, in one
/// statement for the batch: creates taking their title claims, an update, a rename that
/// gives up one title and takes another. Each still gets its own version and position,
/// in queue order, and the store holds exactly what they would have written one by one.
#[tokio::test]
async fn a_batchs_plain_commands_are_appended_in_one_statement_each_with_its_answer() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local()).with_committers(1);
    let metrics = Metrics::new();
    let existing = app.create_technology("Old Name").await;
    let existing = existing["id"].as_str().unwrap().to_string();
    let (one, two, new_name) = (
        fields(&app, "First Plain").await,
        fields(&app, "Second Plain").await,
        fields(&app, "New Name").await,
    );
    let held_fields = fields(&app, "Held").await;
    let events_before = app.stored_events().await.len();

    let held = Held::start(&app, &store, &metrics, held_fields).await;
    let (first, second) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let a = queue(&store, || {
        plain(&store, &metrics, &first, create(&first, one), None)
    })
    .await;
    let b = queue(&store, || {
        plain(&store, &metrics, &existing, rename(&new_name), Some(1))
    })
    .await;
    let c = queue(&store, || {
        plain(&store, &metrics, &second, create(&second, two), None)
    })
    .await;
    assert_eq!(store.commands_waiting(), 3);
    held.release().await;
    let (a, b, c) = (
        a.await.unwrap().expect("the first create applies"),
        b.await.unwrap().expect("the rename applies"),
        c.await.unwrap().expect("the second create applies"),
    );

    assert_eq!(
        store.commands_appended_together(),
        3,
        "one statement for the three"
    );
    assert_eq!(store.shared_statements_undone(), 0);
    assert_eq!(
        (
            a.committed.version,
            b.committed.version,
            c.committed.version
        ),
        (1, 2, 1)
    );
    let batch = tx_of(a.committed.position);
    assert_eq!(tx_of(b.committed.position), batch);
    assert_eq!(tx_of(c.committed.position), batch);
    assert!(
        a.committed.position < b.committed.position && b.committed.position < c.committed.position,
        "positions in queue order"
    );
    assert_answers_stored(&app.pool, &[(&first, &a), (&existing, &b), (&second, &c)]).await;
    assert_eq!(
        b.state.record().unwrap().fields.title.as_str(),
        "New Name",
        "the answered state is the renamed one"
    );
    // The held command's event, and one for each command of the batch.
    assert_eq!(app.stored_events().await.len(), events_before + 4);
    // The old name given up, the new ones taken.
    assert_claims(
        &app.pool,
        &["old name", "new name", "first plain", "second plain"],
        &[
            ("first plain", &first),
            ("new name", &existing),
            ("second plain", &second),
        ],
    )
    .await;
    assert_store_consistent(&app.pool).await;
}

/// A title held outside the batch makes its shared statement fail: the statement is
/// undone whole — the title another command of it gave up is its holder's again — and the
/// batch's commands are written one by one, the refused one alone failing.
#[tokio::test]
async fn a_shared_statement_that_meets_a_held_title_is_undone_whole() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local()).with_committers(1);
    let metrics = Metrics::new();
    let renamed = app.create_technology("Keep Me").await;
    let renamed = renamed["id"].as_str().unwrap().to_string();
    let outside = app.create_technology("Held Elsewhere").await;
    let outside = outside["id"].as_str().unwrap().to_string();
    let (held_elsewhere, fresh) = (
        fields(&app, "Held Elsewhere").await,
        fields(&app, "Fresh Title").await,
    );
    let held_fields = fields(&app, "Held").await;
    let events_before = app.stored_events().await.len();

    let held = Held::start(&app, &store, &metrics, held_fields).await;
    let created = Uuid::now_v7().to_string();
    let a = queue(&store, || {
        plain(&store, &metrics, &renamed, rename(&held_elsewhere), Some(1))
    })
    .await;
    let b = queue(&store, || {
        plain(&store, &metrics, &created, create(&created, fresh), None)
    })
    .await;
    held.release().await;
    match a.await.unwrap() {
        Err(CommandError::Store(commandcenter_event_store::StoreError::ClaimTaken { .. })) => {}
        other => panic!("a rename to a title held elsewhere is refused, got {other:?}"),
    }
    let b = b.await.unwrap().expect("the create applies");
    assert_eq!(b.committed.version, 1);
    assert_answers_stored(&app.pool, &[(&created, &b)]).await;
    // The statement was tried, and undone.
    assert_eq!(store.shared_statements_undone(), 1);
    assert_eq!(store.commands_appended_together(), 0);
    // The held command's event and the create's.
    assert_eq!(app.stored_events().await.len(), events_before + 2);
    assert_claims(
        &app.pool,
        &["fresh title", "held elsewhere", "keep me"],
        &[
            ("fresh title", &created),
            ("held elsewhere", &outside),
            ("keep me", &renamed),
        ],
    )
    .await;
    assert_store_consistent(&app.pool).await;
}

/// Plain commands go together only when no other command of the batch touches their
/// aggregate or title: one that does keeps its place in the batch's order behind a keyed
/// command queued before it (which wins the title, or the version), while the plain
/// commands that share nothing are still appended together.
#[tokio::test]
async fn a_plain_command_sharing_a_title_or_an_aggregate_keeps_its_place_in_the_batch() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local()).with_committers(1);
    let metrics = Metrics::new();
    let updated = app.create_technology("Updated Twice").await;
    let updated = updated["id"].as_str().unwrap().to_string();
    let (first_foo, second_foo, bar, baz) = (
        fields(&app, "Foo").await,
        fields(&app, "foo").await,
        fields(&app, "Bar").await,
        fields(&app, "Baz").await,
    );
    let held_fields = fields(&app, "Held").await;
    let events_before = app.stored_events().await.len();

    let held = Held::start(&app, &store, &metrics, held_fields).await;
    let ids: Vec<String> = (0..4).map(|_| Uuid::now_v7().to_string()).collect();
    // In order: a keyed create titled "Foo"; a plain one titled "foo" (refused); a keyed
    // update of `updated` (version 2); a plain update of it at version 1 with If-Match
    // (loses: 409); two plain creates that share nothing (together).
    let a = queue(&store, || {
        keyed(
            &store,
            &metrics,
            &ids[0],
            create(&ids[0], first_foo),
            "test",
            "foo",
            "foo",
        )
    })
    .await;
    let b = queue(&store, || {
        plain(&store, &metrics, &ids[1], create(&ids[1], second_foo), None)
    })
    .await;
    let c = queue(&store, || {
        keyed(
            &store,
            &metrics,
            &updated,
            update("keyed"),
            "test",
            "upd",
            "upd",
        )
    })
    .await;
    let d = queue(&store, || {
        plain(&store, &metrics, &updated, update("plain"), Some(1))
    })
    .await;
    let e = queue(&store, || {
        plain(&store, &metrics, &ids[2], create(&ids[2], bar), None)
    })
    .await;
    let f = queue(&store, || {
        plain(&store, &metrics, &ids[3], create(&ids[3], baz), None)
    })
    .await;
    held.release().await;

    let a = a
        .await
        .unwrap()
        .expect("the keyed create queued first applies");
    assert!(!a.replayed);
    match b.await.unwrap() {
        Err(CommandError::Store(commandcenter_event_store::StoreError::ClaimTaken { .. })) => {}
        other => panic!("the plain create queued after it is refused, got {other:?}"),
    }
    c.await
        .unwrap()
        .expect("the keyed update queued first applies");
    match d.await.unwrap() {
        Err(err) => assert!(
            err.is_conflict(),
            "the plain update loses the race: {err:?}"
        ),
        Ok(applied) => panic!("the plain update applied at {:?}", applied.committed),
    }
    let e = e.await.unwrap().expect("an independent create applies");
    let f = f.await.unwrap().expect("an independent create applies");
    assert_eq!(
        store.commands_appended_together(),
        2,
        "the two independent creates"
    );
    assert_answers_stored(&app.pool, &[(&ids[2], &e), (&ids[3], &f)]).await;
    assert_claims(
        &app.pool,
        &["foo", "bar", "baz"],
        &[("foo", &ids[0]), ("bar", &ids[2]), ("baz", &ids[3])],
    )
    .await;
    let notes: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'TechnologyUpdated'->'changes'->>'notes' FROM events \
          WHERE aggregate_id = $1 AND sequence > 1 ORDER BY sequence",
    )
    .bind(&updated)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(notes, ["keyed"]);
    // The held command's event, the keyed create and update, the two creates.
    assert_eq!(app.stored_events().await.len(), events_before + 5);
    assert_store_consistent(&app.pool).await;
}

/// Commands of a batch that share a title are written one at a time, never together,
/// with the outcome of the batch's order: a title given up by one command and taken by
/// the next one passes to it; a title taken before its holder gives it up is refused.
#[tokio::test]
async fn a_title_passed_on_within_a_batch_follows_the_batchs_order() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local()).with_committers(1);
    let metrics = Metrics::new();
    let holder = app.create_technology("Passed On").await;
    let holder = holder["id"].as_str().unwrap().to_string();
    let other = app.create_technology("Kept Back").await;
    let other = other["id"].as_str().unwrap().to_string();
    let (passed, early, renamed, renamed_too) = (
        fields(&app, "passed  ON").await,
        fields(&app, "Kept Back").await,
        fields(&app, "Moved Away").await,
        fields(&app, "Moved Away Too").await,
    );
    let held_fields = fields(&app, "Held").await;
    let events_before = app.stored_events().await.len();

    let held = Held::start(&app, &store, &metrics, held_fields).await;
    let (taker, too_early) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    // In order: a create claiming "kept back" while `other` still holds it (refused);
    // `holder` renamed away from "passed on"; a create claiming "passed on" (applies);
    // `other` renamed away from "kept back".
    let a = queue(&store, || {
        plain(
            &store,
            &metrics,
            &too_early,
            create(&too_early, early),
            None,
        )
    })
    .await;
    let b = queue(&store, || {
        plain(&store, &metrics, &holder, rename(&renamed), Some(1))
    })
    .await;
    let c = queue(&store, || {
        plain(&store, &metrics, &taker, create(&taker, passed), None)
    })
    .await;
    let d = queue(&store, || {
        plain(&store, &metrics, &other, rename(&renamed_too), Some(1))
    })
    .await;
    held.release().await;
    match a.await.unwrap() {
        Err(CommandError::Store(commandcenter_event_store::StoreError::ClaimTaken { .. })) => {}
        other => panic!("a title still held when claimed is refused, got {other:?}"),
    }
    let b = b.await.unwrap().expect("the first rename applies");
    let c = c
        .await
        .unwrap()
        .expect("the title given up before is taken");
    let d = d.await.unwrap().expect("the second rename applies");
    assert_eq!(store.commands_appended_together(), 0);
    assert_eq!(tx_of(b.committed.position), tx_of(c.committed.position));
    assert_eq!(tx_of(c.committed.position), tx_of(d.committed.position));
    assert_answers_stored(&app.pool, &[(&holder, &b), (&taker, &c), (&other, &d)]).await;
    // The held command's event, and one for each command that applied.
    assert_eq!(app.stored_events().await.len(), events_before + 4);
    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&too_early)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(refused, 0);
    assert_claims(
        &app.pool,
        &["passed on", "kept back", "moved away", "moved away too"],
        &[
            ("moved away", &holder),
            ("moved away too", &other),
            ("passed on", &taker),
        ],
    )
    .await;
    assert_store_consistent(&app.pool).await;
}

#[tokio::test]
async fn one_idempotency_key_twice_in_a_batch_applies_once_and_replays() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local()).with_committers(1);
    let metrics = Metrics::new();
    let gamma = fields(&app, "Gamma Synth").await;
    let delta = fields(&app, "Delta Synth").await;
    let held_fields = fields(&app, "Held").await;
    let events_before = app.stored_events().await.len();

    let held = Held::start(&app, &store, &metrics, held_fields).await;
    // The same request twice (each handler draws its own id, as the API does), the same
    // key with another request, and an unrelated command, all in one batch.
    let (first_id, second_id, other_id, delta_id) = (
        Uuid::now_v7().to_string(),
        Uuid::now_v7().to_string(),
        Uuid::now_v7().to_string(),
        Uuid::now_v7().to_string(),
    );
    let first = queue(&store, || {
        keyed(
            &store,
            &metrics,
            &first_id,
            create(&first_id, gamma.clone()),
            "k",
            "key-1",
            "gamma",
        )
    })
    .await;
    let second = queue(&store, || {
        keyed(
            &store,
            &metrics,
            &second_id,
            create(&second_id, gamma.clone()),
            "k",
            "key-1",
            "gamma",
        )
    })
    .await;
    let reused = queue(&store, || {
        keyed(
            &store,
            &metrics,
            &other_id,
            create(&other_id, gamma.clone()),
            "k",
            "key-1",
            "other",
        )
    })
    .await;
    let unrelated = queue(&store, || {
        keyed(
            &store,
            &metrics,
            &delta_id,
            create(&delta_id, delta),
            "k",
            "key-2",
            "delta",
        )
    })
    .await;
    held.release().await;

    let first = first.await.unwrap().expect("the first request applies");
    assert!(!first.replayed);
    assert!(first.body.starts_with(&first_id), "{first:?}");
    let second = second.await.unwrap().expect("the duplicate replays");
    assert!(second.replayed, "{second:?}");
    assert_eq!(second.body, first.body, "the first answer, byte for byte");
    match reused.await.unwrap() {
        Err(CommandError::IdempotencyKeyReused) => {}
        other => panic!("a key reused with another request is refused, got {other:?}"),
    }
    let unrelated = unrelated.await.unwrap().expect("a neighbour applies");
    assert!(!unrelated.replayed);
    // The applied request and its neighbour committed together.
    let tx = |body: &str| {
        body.rsplit(' ')
            .next()
            .unwrap()
            .parse::<Position>()
            .unwrap()
            .tx_id
    };
    assert_eq!(tx(&first.body), tx(&unrelated.body));

    assert_eq!(app.stored_events().await.len(), events_before + 3);
    for (id, stored) in [
        (&first_id, 1),
        (&second_id, 0),
        (&other_id, 0),
        (&delta_id, 1),
    ] {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(count, stored, "events of {id}");
    }
    assert_store_consistent(&app.pool).await;
}

#[tokio::test]
async fn a_create_of_an_existing_id_reads_it_on_retry_and_is_refused() {
    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local()).with_committers(1);
    let metrics = Metrics::new();
    let id = Uuid::now_v7().to_string();
    let first = apply::<Technology>(
        &store,
        &metrics,
        &id,
        create(&id, fields(&app, "Once").await),
        meta(),
    )
    .await
    .expect("the first create applies");
    assert_eq!(first.committed.version, 1);
    // The second create is decided without a read (the id cannot exist yet, as far as it
    // knows); the primary key refuses it, and the retry reads the aggregate.
    let again = apply::<Technology>(
        &store,
        &metrics,
        &id,
        create(&id, fields(&app, "Twice").await),
        meta(),
    )
    .await;
    match again {
        Err(CommandError::Technology(TechnologyError::AlreadyExists)) => {}
        other => panic!("a create of an existing id is refused, got {other:?}"),
    }
    let stored: Vec<(String, i64)> = app.stored_events().await;
    assert_eq!(stored.iter().filter(|(a, _)| *a == id).count(), 1);
    let loaded = store.load::<Technology>(&id).await.unwrap();
    assert_eq!(loaded.version, 1);
    assert_eq!(
        loaded.aggregate.record().unwrap().fields.title.as_str(),
        "Once"
    );
}

/// The commit queue is bounded: while it is full a command is refused at once — nothing
/// written, a 503 with `Retry-After` — instead of waiting behind a backlog that only
/// grows; the queued commands still commit once the committer is free.
#[tokio::test]
async fn a_full_commit_queue_refuses_a_command_at_once_and_keeps_the_queued_ones() {
    use axum::response::IntoResponse;
    use commandcenter_event_store::StoreError;

    let app = spawn_app().await;
    let store = EventStore::new(app.pool.clone(), AppendSignal::local())
        .with_queue_limit(2)
        .with_committers(1);
    let metrics = Metrics::new();
    let (held_fields, a_fields, b_fields, c_fields) = (
        fields(&app, "Held").await,
        fields(&app, "Queued A").await,
        fields(&app, "Queued B").await,
        fields(&app, "Refused C").await,
    );
    let events_before = app.stored_events().await.len();
    let held = Held::start(&app, &store, &metrics, held_fields).await;
    let ids: Vec<String> = (0..3).map(|_| Uuid::now_v7().to_string()).collect();
    let a = queue(&store, || {
        plain(&store, &metrics, &ids[0], create(&ids[0], a_fields), None)
    })
    .await;
    let b = queue(&store, || {
        plain(&store, &metrics, &ids[1], create(&ids[1], b_fields), None)
    })
    .await;
    assert_eq!(store.commands_waiting(), 2);

    // Answered while the committer is still held: refused, not queued.
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain(&store, &metrics, &ids[2], create(&ids[2], c_fields), None),
    )
    .await
    .expect("a command is refused at once when the queue is full")
    .unwrap()
    .expect_err("the queue is full");
    assert!(
        matches!(
            refused,
            CommandError::Store(StoreError::Busy { waiting: 2 })
        ),
        "{refused:?}"
    );
    assert!(refused.is_unavailable());
    let response = commandcenter_api_error::ApiError::from(refused).into_response();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(store.commands_waiting(), 2, "the refused one never queued");
    let counted = |outcome: &str| {
        metrics
            .commands
            .with_label_values(&["technology", "CreateTechnology", outcome])
            .get()
    };
    assert_eq!((counted("overloaded"), counted("error")), (1, 0));

    held.release().await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.expect("queued A commits").committed.version, 1);
    assert_eq!(b.expect("queued B commits").committed.version, 1);
    // The store holds the holder, A and B; nothing of C.
    assert_eq!(app.stored_events().await.len(), events_before + 3);
    let stored_c: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&ids[2])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored_c, 0);
    assert_store_consistent(&app.pool).await;
}

/// What [`CommitCutter`] does to the next COMMIT that passes through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Nothing: bytes pass both ways.
    Nothing,
    /// The COMMIT never reaches the server: the connection is closed instead, so the
    /// server rolls the transaction back.
    Request,
    /// The COMMIT reaches the server, which commits; its answer is dropped and the
    /// connection closed, so the client cannot tell.
    Answer,
    /// As `Answer`, and every later connection is closed at once: the outcome cannot be
    /// read back either.
    AnswerAndAll,
    /// The COMMIT never reaches the server and the client's connection is closed, but
    /// the server's is held open: its transaction stays in progress, neither committed
    /// nor rolled back, until the server goes down.
    Hold,
}

/// A TCP proxy in front of the test PostgreSQL that loses one COMMIT (or its answer) on
/// demand: the connection failures around a commit, made to happen exactly there.
struct CommitCutter {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::Mutex<Cut>>,
    accept: JoinHandle<()>,
}

impl CommitCutter {
    /// In front of the test PostgreSQL.
    async fn start() -> Self {
        Self::start_to(&crate::helpers::server_url()).await
    }

    /// In front of the server at `server_url` (`postgres://user@host:port`).
    async fn start_to(server_url: &str) -> Self {
        let upstream = crate::helpers::server_address(server_url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::Mutex::new(Cut::Nothing));
        let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shared = cut.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (cut, refuse, upstream) = (shared.clone(), refuse.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    relay(client, server, cut, refuse).await;
                });
            }
        });
        Self { addr, cut, accept }
    }

    /// `database_url` with its host and port replaced by the proxy's.
    fn url(&self, database_url: &str) -> String {
        crate::helpers::url_through(database_url, self.addr)
    }

    fn arm(&self, cut: Cut) {
        *self.cut.lock().unwrap() = cut;
    }

    fn armed(&self) -> Cut {
        *self.cut.lock().unwrap()
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Server connections held open by [`Cut::Hold`].
static HELD: std::sync::Mutex<Vec<tokio::net::tcp::OwnedWriteHalf>> =
    std::sync::Mutex::new(Vec::new());

/// Pumps bytes between `client` and `server` until either side closes, applying the
/// armed [`Cut`] to the first message that carries a COMMIT.
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    cut: Arc<std::sync::Mutex<Cut>>,
    refuse: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let swallow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swallowing = swallow.clone();
    let upward = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if chunk.windows(6).any(|w| w == b"COMMIT") {
                let armed = std::mem::replace(&mut *cut.lock().unwrap(), Cut::Nothing);
                match armed {
                    Cut::Nothing => {}
                    // Dropping the server's half ends the session: it rolls back.
                    Cut::Request => return,
                    // Kept for as long as this process runs: the session stays open,
                    // idle in its transaction.
                    Cut::Hold => {
                        HELD.lock().unwrap().push(server_write);
                        return;
                    }
                    Cut::Answer | Cut::AnswerAndAll => {
                        if armed == Cut::AnswerAndAll {
                            refuse.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        swallowing.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downward = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // The COMMIT's answer: dropped, and the client's connection closed.
            if swallow.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending closes both (the halves drop with their futures).
    tokio::select! {
        () = upward => {}
        () = downward => {}
    }
}

/// A COMMIT that fails to answer is not taken for a failure: the committer reads the
/// transaction's fate back and answers as it finds — applied when it committed, not
/// applied when it did not, and "outcome unknown" (never "not applied") when it cannot
/// tell. Each case is caused for real on the wire by a proxy, and each answer is checked
/// against the store read directly.
#[tokio::test]
async fn a_commit_that_fails_to_answer_is_answered_as_it_ended() {
    use axum::response::IntoResponse;
    use commandcenter_event_store::StoreError;

    let app = spawn_app().await;
    let metrics = Metrics::new();
    let stored = |id: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE aggregate_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // The HTTP answer `err` gets: status, whether it has Retry-After, problem type.
    let problem = |err: CommandError| async move {
        let response = commandcenter_api_error::ApiError::from(err).into_response();
        let retry = response.headers().contains_key("retry-after");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        (
            status,
            retry,
            body["type"].as_str().unwrap_or_default().to_string(),
        )
    };

    for (title, cut) in [
        ("Cut answer", Cut::Answer),
        ("Cut request", Cut::Request),
        ("Cut answer and all", Cut::AnswerAndAll),
    ] {
        let proxy = CommitCutter::start().await;
        // One connection: the outcome is read back on a new one (through the proxy).
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(1))
            .connect(&proxy.url(&app.database_url()))
            .await
            .unwrap();
        let store = EventStore::new(pool.clone(), AppendSignal::local()).with_committers(1);
        let fields = fields(&app, title).await;
        let id = Uuid::now_v7().to_string();
        proxy.arm(cut);
        let answer = plain(&store, &metrics, &id, create(&id, fields), None)
            .await
            .unwrap();
        assert_eq!(proxy.armed(), Cut::Nothing, "{title}: the COMMIT was cut");
        match cut {
            Cut::Answer => {
                let applied = answer.expect("the COMMIT took place: the command applied");
                assert_eq!(applied.committed.version, 1);
                let tx: String =
                    sqlx::query_scalar("SELECT tx_id::text FROM events WHERE aggregate_id = $1")
                        .bind(&id)
                        .fetch_one(&app.pool)
                        .await
                        .unwrap();
                assert_eq!(tx, applied.committed.position.tx_id.to_string());
            }
            Cut::Request => {
                let err = answer.expect_err("the COMMIT never reached the server");
                assert!(
                    matches!(err, CommandError::Store(StoreError::Batch(_))),
                    "{err:?}"
                );
                assert_eq!(stored(id.clone()).await, 0, "{title}: nothing stored");
                assert_eq!(
                    problem(err).await,
                    (503, true, "urn:commandcenter:problem:unavailable".into())
                );
            }
            Cut::AnswerAndAll | Cut::Nothing | Cut::Hold => {
                let err = answer.expect_err("the outcome could not be read back");
                assert!(
                    matches!(err, CommandError::Store(StoreError::CommitUnknown(_))),
                    "{err:?}"
                );
                // It did commit: an answer of "not applied" would have been a lie.
                assert_eq!(
                    stored(id.clone()).await,
                    1,
                    "{title}: the COMMIT took place"
                );
                assert_eq!(
                    problem(err).await,
                    (
                        503,
                        true,
                        "urn:commandcenter:problem:outcome-unknown".into()
                    )
                );
            }
        }
        pool.close().await;
    }
    assert_store_consistent(&app.pool).await;
}

/// A COMMIT lost with its server is not taken for another transaction's. A transaction id
/// is durable only once its transaction's WAL is written; when the server crashes first,
/// the restarted server hands the same id out again. The batch's COMMIT is held back (its
/// transaction in progress, its rows in unwritten WAL), the server is killed
/// (`immediate`), and the test then draws transaction ids on the restarted server until
/// it commits one with the batch's id: that id's status is now "committed", yet the
/// command must be answered as not applied, for its event is not in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_in_a_crash_is_not_taken_for_the_transaction_reusing_its_id() {
    use crate::chaos::PrivatePostgres;
    use commandcenter_event_store::StoreError;
    use sqlx::Connection;

    // Nothing but this test writes WAL out: no background WAL writer round before the
    // crash (10 s), no dirty page written (which would write the WAL before it), no
    // autovacuum commit and no checkpoint meanwhile.
    let postgres = PrivatePostgres::start_with(
        "-c wal_writer_delay=10000 -c bgwriter_lru_maxpages=0 -c autovacuum=off \
         -c checkpoint_timeout=3600",
    )
    .await;
    let app = crate::helpers::spawn_app_on(&postgres.url(), &crate::helpers::nats_url(), |args| {
        args.no_relay = true;
        args.no_projectors = true;
        args.no_workers = true;
    })
    .await;
    let fields = fields(&app, "Lost in a crash").await;
    let proxy = CommitCutter::start_to(&postgres.url()).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect(&proxy.url(&app.database_url()))
        .await
        .unwrap();
    // Read back for longer than a loaded machine may take to kill and restart the server.
    let store = EventStore::new(pool.clone(), AppendSignal::local())
        .with_committers(1)
        .with_commit_outcome_wait(std::time::Duration::from_secs(30));
    let metrics = Metrics::new();
    let id = Uuid::now_v7().to_string();
    proxy.arm(Cut::Hold);
    let answer = plain(&store, &metrics, &id, create(&id, fields), None);
    for _ in 0..200 {
        if proxy.armed() == Cut::Nothing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(proxy.armed(), Cut::Nothing, "the COMMIT was held back");
    // The batch's transaction id, from its session (still idle in it).
    let mut oracle = sqlx::PgConnection::connect(&app.database_url())
        .await
        .unwrap();
    let held: String = sqlx::query_scalar(
        "SELECT backend_xid::text FROM pg_stat_activity \
          WHERE datname = current_database() AND state = 'idle in transaction' \
            AND backend_xid IS NOT NULL",
    )
    .fetch_one(&mut oracle)
    .await
    .unwrap();
    let held: u64 = held.parse().unwrap();
    drop(oracle);

    postgres.restart("immediate");
    // Draw ids until the batch's comes round again (or is passed: its WAL was written).
    let mut conn = sqlx::PgConnection::connect(&app.database_url())
        .await
        .unwrap();
    let mut reused = false;
    for _ in 0..1000 {
        let drawn: String =
            sqlx::query_scalar("SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let drawn: u64 = drawn.parse().unwrap();
        if drawn >= held & 0xFFFF_FFFF {
            reused = drawn == held & 0xFFFF_FFFF;
            break;
        }
    }
    // Nothing wrote the batch's WAL out before the crash (see the settings above), so
    // its id came round again: the case under test happened.
    assert!(
        reused,
        "transaction id {held} was not handed out again after the crash: its WAL was written"
    );

    let err = answer
        .await
        .unwrap()
        .expect_err("the held COMMIT never took place");
    assert!(
        matches!(err, CommandError::Store(StoreError::Batch(_))),
        "answered as not applied: {err:?}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 0, "the command's event is not in the store");
    pool.close().await;
    app.stop().await;
}
