//! Optimistic concurrency: racing writers on one aggregate, and title uniqueness under
//! concurrent creates.

use std::collections::BTreeSet;

use commandcenter_event_store::{AppendSignal, EventStore, NewEvent};
use serde_json::{json, Value};

use crate::helpers::{assert_problem, assert_store_consistent, assert_stored_at, spawn_app};

#[tokio::test]
async fn conflicting_writes_yield_one_winner_per_version() {
    let app = spawn_app().await;
    let created = app.create_technology("Tone.js").await;
    let path = format!("/api/v1/technologies/{}", created["id"].as_str().unwrap());

    let writers = (0..24).map(|i| {
        app.client
            .patch(app.url(&path))
            .json(&json!({ "notes": format!("writer {i}") }))
            .send()
    });
    let responses = futures::future::join_all(writers).await;
    let mut versions = BTreeSet::new();
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => {
                let body: Value = response.json().await.unwrap();
                assert!(
                    versions.insert(body["version"].as_i64().unwrap()),
                    "one success per version"
                );
            }
            409 => {
                assert_problem(response, 409, "").await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let events = app.stored_events().await;
    // No lost and no duplicated events: exactly one per successful write, numbered 1..=n.
    assert_eq!(events.len(), versions.len() + 1);
    let sequences: Vec<i64> = events.iter().map(|(_, s)| *s).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(sequences, expected);
    assert_eq!(versions, (2..=events.len() as i64).collect());
}

#[tokio::test]
async fn racing_writers_with_if_match_get_409_or_412_never_both_succeed() {
    let app = spawn_app().await;
    let created = app.create_technology("Csound").await;
    let path = format!("/api/v1/technologies/{}", created["id"].as_str().unwrap());
    let writers = (0..12).map(|i| {
        app.client
            .patch(app.url(&path))
            .header("if-match", "\"1\"")
            .json(&json!({ "notes": format!("writer {i}") }))
            .send()
    });
    let statuses: Vec<u16> = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 409, 412].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(app.stored_events().await.len(), 2);
}

#[tokio::test]
async fn a_write_that_loses_the_race_after_loading_gets_409() {
    let app = spawn_app().await;
    let created = app.create_technology("Faust").await;
    let id = created["id"].as_str().unwrap().to_string();
    let store = EventStore::new(app.pool.clone(), AppendSignal::local());

    // Another writer holds version 2 in an open transaction...
    let mut tx = store.begin().await.unwrap();
    let competing = NewEvent {
        event_type: "TechnologyUpdated".into(),
        event_version: "1.0".into(),
        payload: json!({"TechnologyUpdated": {"changes": {"notes": "other"}, "at": "2026-11-29T00:00:00Z"}}),
    };
    store
        .append(
            &mut tx,
            "technology",
            &id,
            1,
            &[competing],
            &json!({"actor": "test"}),
        )
        .await
        .unwrap();
    // ...while a client that saw version 1 writes: it loads version 1 and blocks on the key.
    let client = app.client.clone();
    let url = app.url(&format!("/api/v1/technologies/{id}"));
    let request = tokio::spawn(async move {
        client
            .patch(url)
            .header("if-match", "1")
            .json(&json!({"notes": "mine"}))
            .send()
            .await
            .unwrap()
    });
    crate::feed_ordering::wait_for_lock_waiters(&app.pool, 1).await;
    store.commit(tx).await.unwrap();
    assert_problem(request.await.unwrap(), 409, "").await;
    assert_eq!(app.stored_events().await.len(), 2);
}

#[tokio::test]
async fn concurrent_creates_with_one_title_yield_one_technology() {
    let app = spawn_app().await;
    let titles = [
        "Ableton Link",
        "ableton link",
        "ABLETON  LINK",
        "Ableton link",
    ];
    let creates = (0..16).map(|i| {
        app.client
            .post(app.url("/api/v1/technologies"))
            .json(&json!({"project_id": 3, "title": titles[i % titles.len()]}))
            .send()
    });
    let mut created = 0;
    for response in futures::future::join_all(creates).await {
        let response = response.unwrap();
        match response.status().as_u16() {
            201 => created += 1,
            _ => {
                assert_problem(response, 409, "title").await;
            }
        }
    }
    assert_eq!(created, 1);
    assert_eq!(app.stored_events().await.len(), 1);
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM unique_claims")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(claims, 1);
}

#[tokio::test]
async fn abandoned_requests_never_leave_half_written_changes() {
    let app = spawn_app().await;
    // Clients that give up mid-request, at every point of the command's transaction:
    // the server must still end each transaction with a commit or a rollback.
    let abandoned = (0..400u64).map(|i| {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_micros(300 + (i * 37) % 9000))
            .build()
            .unwrap();
        let url = app.url("/api/v1/technologies");
        let key = app.admin_key.clone();
        async move {
            let _ = client
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", format!("abandoned-{i}"))
                .json(&json!({"project_id": 1, "title": format!("abandoned {i}")}))
                .send()
                .await;
        }
    });
    futures::future::join_all(abandoned).await;
    // Then patient clients, on the same pooled connections.
    for i in 0..40 {
        app.create_technology(&format!("after {i}")).await;
    }
    // The abandoned commands finish on their own tasks: wait until no session of this
    // database is inside a transaction any more.
    crate::helpers::wait_until_no_transaction_is_open(&app.pool).await;
    // One statement, one snapshot: every command commits its events, claim, key and
    // response together, so these agree at any moment, whatever is still in flight.
    let (technologies, claims, unanswered, keyed, saved): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE event_type = 'TechnologyCreated'), \
                    (SELECT count(*) FROM unique_claims), \
                    (SELECT count(*) FROM idempotency_keys WHERE response_status IS NULL), \
                    (SELECT count(*) FROM events WHERE metadata ? 'idempotency_key'), \
                    (SELECT count(*) FROM idempotency_keys)",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        technologies, claims,
        "every created technology holds its title claim"
    );
    assert_eq!(
        unanswered, 0,
        "no idempotency key is committed without its response"
    );
    assert_eq!(
        keyed, saved,
        "each keyed command committed with its saved response"
    );
}

/// Creates and renames racing for titles through the service's committers, whose batches
/// here hold tens of commands, some appended together by one statement and some undone
/// to be written one by one: every answered change is in the store at its answered
/// version and position, and the title claims are exactly those a fold of the store gives
/// — one owner per title, each technology holding its latest title. (Seen failing with
/// positions handed to the wrong commands of a shared statement, and without its undo.)
#[tokio::test]
async fn racing_creates_and_renames_keep_one_owner_per_title() {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use commandcenter_event_store::Position;

    let app = spawn_app().await;
    // 80 titles for 96 changes, written differently from one change to another: most
    // changes find their title free (and go together), some meet another's.
    let title = |i: usize| match i % 3 {
        0 => format!("Pool {}", (i * 7) % 80),
        1 => format!("pool  {}", (i * 7) % 80),
        _ => format!("POOL {}", (i * 7) % 80),
    };
    let mut renamed = Vec::new();
    for i in 0..3 {
        let created = app.create_technology(&format!("Renamed {i}")).await;
        renamed.push(created["id"].as_str().unwrap().to_string());
    }
    let requests = (0..96).map(|i| {
        let title = title(i);
        let request = if i % 8 == 0 {
            app.client
                .patch(app.url(&format!(
                    "/api/v1/technologies/{}",
                    renamed[i % renamed.len()]
                )))
                .json(&json!({ "title": title }))
        } else {
            app.client
                .post(app.url("/api/v1/technologies"))
                .json(&json!({ "project_id": 1, "title": title }))
        };
        request.send()
    });
    let mut answered = Vec::new();
    for (i, response) in futures::future::join_all(requests)
        .await
        .into_iter()
        .enumerate()
    {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 | 201 => {
                let position = response.headers()["x-cc-position"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let body: Value = response.json().await.unwrap();
                answered.push((
                    body["id"].as_str().unwrap().to_string(),
                    body["version"].as_i64().unwrap(),
                    Position::from_str(&position).unwrap(),
                ));
            }
            // Refused for its title, or after losing its retries (to the other renames of
            // its technology, or waiting on a title another batch was taking).
            409 => {
                let body: Value = response.json().await.unwrap();
                assert!(
                    body.get("field").is_none() || body["field"] == "title",
                    "change {i} refused for another reason: {body}"
                );
            }
            status => panic!("change {i} answered {status}"),
        }
    }
    assert!(answered.len() > 3, "some changes applied: {answered:?}");

    // Every answer is in the store, at its version and position.
    for (id, version, position) in &answered {
        assert_stored_at(&app.pool, id, *version, *position).await;
    }
    // The oracle: each technology's latest title, folded from its events in order.
    let events: Vec<(String, Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload FROM events WHERE aggregate_type = 'technology' \
          ORDER BY aggregate_id, sequence",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for (id, payload) in events {
        let title = payload["TechnologyCreated"]["technology"]["title"]
            .as_str()
            .or(payload["TechnologyUpdated"]["changes"]["title"].as_str());
        if let Some(title) = title {
            latest.insert(id, title.to_string());
        }
    }
    let key = |title: &str| {
        title
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for (id, title) in &latest {
        if let Some(other) = owners.insert(key(title), id.clone()) {
            panic!("{title:?} is held by {id} and {other}");
        }
    }
    let claims: BTreeMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT key, owner_id FROM unique_claims WHERE scope = 'title:technology:1'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(
        claims, owners,
        "the claims are the fold's titles and owners"
    );
    assert_store_consistent(&app.pool).await;
}

/// The service decides a command on the state it last committed or loaded, when it
/// remembers one, instead of reading the store. Another process (a second store on the
/// same database, as a worker or a second instance is) writes behind its back: each
/// answer must still be what the store's state gives, checked against a fold of the
/// store.
#[tokio::test]
async fn a_state_the_service_remembers_never_hides_what_another_process_wrote() {
    use commandcenter_domain::job::{Job, JobCommand};
    use commandcenter_domain::technology::{Technology, TechnologyChanges, TechnologyCommand};
    use commandcenter_executor::{apply, clock, RequestMeta};

    let app = spawn_app().await;
    let other = EventStore::new(app.pool.clone(), AppendSignal::local());
    let metrics = commandcenter_metrics::Metrics::new();
    let meta = || RequestMeta {
        request_id: uuid::Uuid::now_v7().to_string(),
        correlation_id: "another process".into(),
        causation_id: None,
        actor: "test".into(),
    };
    let created = app.create_technology("Remembered").await;
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/technologies/{id}");
    let other_writes = |notes: &'static str| {
        let command = TechnologyCommand::UpdateTechnology {
            changes: Box::new(TechnologyChanges {
                notes: Some(Some(notes.to_string())),
                ..Default::default()
            }),
            status: None,
            at: clock::now(),
        };
        apply::<Technology>(&other, &metrics, &id, command, meta())
    };
    let patch = |if_match: Option<i64>, notes: &'static str| {
        let mut request = app
            .client
            .patch(app.url(&path))
            .json(&json!({ "notes": notes }));
        if let Some(version) = if_match {
            request = request.header("if-match", format!("\"{version}\""));
        }
        request.send()
    };
    // The store's own fold of the technology: version and notes.
    let folded = || async {
        let state = other.replay::<Technology>(&id, None).await.unwrap();
        let json = serde_json::to_value(&state.aggregate).unwrap();
        (state.version, json.to_string())
    };

    // Remembered at version 1; the other process writes version 2. A change decided on
    // version 1 loses at the append and is taken again on the store's state.
    other_writes("other").await.unwrap();
    let response = patch(None, "mine").await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["version"].as_i64(), body["notes"].as_str()),
        (Some(3), Some("mine"))
    );

    // Remembered at version 3 with these notes, the same request changes nothing; on the
    // store's version 4 it changes the notes back, and is written.
    other_writes("other again").await.unwrap();
    let response = patch(None, "mine").await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["version"].as_i64(), body["notes"].as_str()),
        (Some(5), Some("mine"))
    );
    let (version, state) = folded().await;
    assert_eq!(version, 5);
    assert!(state.contains("\"mine\""), "{state}");

    // If-Match is compared with the store's version, not a remembered one.
    other_writes("third").await.unwrap();
    let response = patch(Some(6), "matched").await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"].as_i64(), Some(7));
    other_writes("fourth").await.unwrap();
    let response = patch(Some(7), "stale").await.unwrap();
    let problem = assert_problem(response, 412, "If-Match").await;
    assert_eq!(problem["current_version"], 8);
    assert_eq!(folded().await.0, 8);

    // A title held by another technology refuses the append without its version being
    // compared: decided on a remembered state, that refusal is taken again on the store's,
    // where the technology is gone (404, not 409).
    let doomed = app.create_technology("Remembered A").await;
    let doomed_id = doomed["id"].as_str().unwrap();
    let delete = TechnologyCommand::DeleteTechnology { at: clock::now() };
    apply::<Technology>(&other, &metrics, doomed_id, delete, meta())
        .await
        .unwrap();
    app.create_technology("Remembered B").await;
    let response = app
        .patch(
            &format!("/api/v1/technologies/{doomed_id}"),
            &json!({ "title": "Remembered B" }),
        )
        .await;
    assert_problem(response, 404, "").await;

    // A refusal decided on a remembered state is taken again on the store's: the service
    // remembers its job pending and not dispatched, which refuses to start; the other
    // process dispatched it.
    let job = app.create_job().await;
    let job_id = job["id"].as_str().unwrap();
    let dispatch = JobCommand::DispatchJob {
        delay_seconds: 0,
        at: clock::now(),
    };
    apply::<Job>(&other, &metrics, job_id, dispatch, meta())
        .await
        .unwrap();
    let response = app
        .patch(
            &format!("/api/v1/jobs/{job_id}"),
            &json!({ "status": "running" }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"].as_str(), Some("running"));
    assert_eq!(
        other.replay::<Job>(job_id, None).await.unwrap().version,
        3,
        "created, dispatched (elsewhere), started"
    );

    // The remembered states were used (else this test shows nothing): the two decisions
    // they could not make alone were taken again on the store's.
    let recent = crate::observability::sample(
        &app,
        "command_states_total{aggregate=\"technology\",source=\"recent\"}",
    )
    .await;
    let rechecked = crate::observability::sample(
        &app,
        "command_states_total{aggregate=\"technology\",source=\"recent_rechecked\"}",
    )
    .await
        + crate::observability::sample(
            &app,
            "command_states_total{aggregate=\"job\",source=\"recent_rechecked\"}",
        )
        .await;
    assert!(recent >= 1.0, "decided on a remembered state: {recent}");
    assert_eq!(rechecked, 2.0, "taken again on the store's state");
    assert_store_consistent(&app.pool).await;
}
