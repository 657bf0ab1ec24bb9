//! Tamper evidence: each event's hash chains to its predecessor's, computed in the
//! database on insert, and history is append-only.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::spawn_app;

#[tokio::test]
async fn each_event_hash_chains_to_its_predecessor() {
    let app = spawn_app().await;
    let created = app.create_technology("Chained").await;
    let id = created["id"].as_str().unwrap();
    for i in 0..4 {
        let r = app
            .patch(
                &format!("/api/v1/technologies/{id}"),
                &json!({"notes": format!("n{i}")}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT sequence, hash, cc_event_canonical(aggregate_type, aggregate_id, sequence, \
                event_type, event_version, payload, metadata, recorded_at) \
           FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    let mut previous = vec![0u8; 32];
    for (sequence, hash, canonical) in &rows {
        let mut hasher = Sha256::new();
        hasher.update(&previous);
        hasher.update(canonical);
        assert_eq!(
            hasher.finalize().to_vec(),
            *hash,
            "event {sequence} chains to its predecessor"
        );
        // The canonical form names the event, so two events never share a preimage.
        let text = String::from_utf8(canonical.clone()).unwrap();
        assert!(
            text.contains(id) && text.contains(&format!(", {sequence}, ")),
            "{text}"
        );
        previous = hash.clone();
    }
    // The API shows the same hashes.
    let history: serde_json::Value = app
        .get(&format!("/api/v1/technologies/{id}/history"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["events"][4]["hash"], hex::encode(&previous));
}

#[tokio::test]
async fn altering_a_payload_breaks_the_chain() {
    let app = spawn_app().await;
    let created = app.create_technology("Tampered").await;
    let id = created["id"].as_str().unwrap();
    app.patch(
        &format!("/api/v1/technologies/{id}"),
        &json!({"priority": 4}),
    )
    .await;

    let mut conn = app.pool.acquire().await.unwrap();
    // Bypassing the append-only trigger takes superuser rights, as an attacker would need.
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET payload = jsonb_set(payload, '{TechnologyUpdated,changes,priority}', '5') WHERE aggregate_id = $1 AND sequence = 2")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut *conn)
        .await
        .unwrap();
    let intact: bool = sqlx::query_scalar(
        "SELECT hash = sha256((SELECT hash FROM events p WHERE p.aggregate_id = e.aggregate_id AND p.sequence = 1) \
                || cc_event_canonical(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at)) \
           FROM events e WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(!intact, "the recomputed hash no longer matches");
}

#[tokio::test]
async fn history_is_append_only() {
    let app = spawn_app().await;
    app.create_technology("Immutable").await;
    let update = sqlx::query("UPDATE events SET event_type = 'X'")
        .execute(&app.pool)
        .await;
    assert!(update.is_err());
    let delete = sqlx::query("DELETE FROM events").execute(&app.pool).await;
    assert!(delete.is_err());
    let gap = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('technology', 'nobody', 5, 'X', '1.0', '{}', '{}')",
    )
    .execute(&app.pool)
    .await;
    assert!(gap.is_err(), "an event without its predecessor is refused");
    assert_eq!(app.stored_events().await.len(), 1);
}
