//! Leases and records at the store's edge, on both backends: what a dead sender recorded
//! as sent stays sent, and what it did not goes back to the queue.
//!
//! On PostgreSQL a record of "sent" is first an append to the sent log, folded into
//! `deliveries` later; these tests kill the sender (by never calling it again) between the
//! two, which the end-to-end fault tests only reach by chance.

use std::collections::BTreeMap;

use harborlist::store::{
    Store,
    bounces::BounceRules,
    record::{Outcome, SETTLE_CHUNK},
};
use sqlx::Row;

use crate::helpers::{Backend, TestDb};

/// A list mailing with `n` queued deliveries, due at 0. Returns (delivery id, subscriber id).
async fn seed(store: &Store, n: usize) -> Vec<(i64, i64)> {
    let mailing: i64 = sqlx::query(
        "INSERT INTO mailings (key, kind, template, data, audience, priority, due_at, state, created_at, updated_at)
         VALUES ('announcement:leases', 'announcement', 'announcement', '{}', 'list', 1, 0, 'fanned', 0, 0)
         RETURNING id",
    )
    .fetch_one(store.pool())
    .await
    .expect("mailing")
    .get("id");
    let mut out = Vec::new();
    for i in 0..n {
        let subscriber: i64 = sqlx::query(
            "INSERT INTO subscribers (email, email_key, status, source, unsub_nonce, unsub_hash, created_at, updated_at)
             VALUES ($1, $1, 'active', 'import', $2, $3, 0, 0) RETURNING id",
        )
        .bind(format!("p{i}@example.org"))
        .bind(format!("nonce{i}"))
        .bind(format!("hash{i}"))
        .fetch_one(store.pool())
        .await
        .expect("subscriber")
        .get("id");
        let delivery: i64 = sqlx::query(
            "INSERT INTO deliveries (mailing_id, subscriber_id, priority, state, next_attempt_at)
             VALUES ($1, $2, 1, 'queued', 0) RETURNING id",
        )
        .bind(mailing)
        .bind(subscriber)
        .fetch_one(store.pool())
        .await
        .expect("delivery")
        .get("id");
        out.push((delivery, subscriber));
    }
    out
}

/// Each delivery's (state, lease owner, sent_at).
async fn states(store: &Store) -> BTreeMap<i64, (String, Option<String>, Option<i64>)> {
    sqlx::query("SELECT id, state, lease_owner, sent_at FROM deliveries")
        .fetch_all(store.pool())
        .await
        .expect("states")
        .into_iter()
        .map(|r| {
            (
                r.get("id"),
                (r.get("state"), r.get("lease_owner"), r.get("sent_at")),
            )
        })
        .collect()
}

fn sent(delivery_id: i64, subscriber_id: i64) -> Outcome {
    Outcome::Sent {
        delivery_id,
        subscriber_id,
    }
}

/// Claims up to 10 due deliveries for `owner` at 1,000 until `lease_until_ms`, and records
/// `recorded` (delivery, subscriber) as sent at 1,500. Returns how many were claimed.
async fn claim_and_record(
    store: &Store,
    owner: &str,
    lease_until_ms: i64,
    recorded: &[(i64, i64)],
) -> usize {
    let claimed = store
        .claim(owner, 1_000, lease_until_ms, 10)
        .await
        .expect("claim");
    let outcomes: Vec<Outcome> = recorded.iter().map(|&(d, s)| sent(d, s)).collect();
    let mut recorder = store.recorder().await.expect("recorder");
    recorder
        .record(owner, &outcomes, 1_500, &BounceRules::default())
        .await
        .expect("record");
    claimed.len()
}

async fn a_dead_senders_records_stand_and_the_rest_is_requeued(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 4).await.expect("store");
    let rows = seed(&store, 3).await;
    // Two messages reach the relay and are recorded; then the sender dies.
    let claimed = claim_and_record(&store, "dead#1", 2_000, &rows[..2]).await;
    assert_eq!(claimed, 3);

    // Before its lease runs out, nothing is taken from it.
    assert_eq!(store.requeue_expired(1_999).await.expect("requeue"), 0);
    // After, only the message it never recorded goes back.
    assert_eq!(store.requeue_expired(3_000).await.expect("requeue"), 1);
    let after = states(&store).await;
    assert_eq!(after[&rows[0].0], ("sent".into(), None, Some(1_500)));
    assert_eq!(after[&rows[1].0], ("sent".into(), None, Some(1_500)));
    assert_eq!(after[&rows[2].0], ("queued".into(), None, None));

    let again = store
        .claim("next#1", 3_000, 4_000, 10)
        .await
        .expect("claim");
    assert_eq!(
        again.iter().map(|c| c.delivery_id).collect::<Vec<_>>(),
        vec![rows[2].0],
        "only the unrecorded message is sent again"
    );
}

async fn a_late_record_leaves_the_delivery_to_its_new_owner(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 4).await.expect("store");
    let rows = seed(&store, 1).await;
    let (id, subscriber) = rows[0];
    store
        .claim("slow#1", 1_000, 2_000, 10)
        .await
        .expect("claim");
    assert_eq!(store.requeue_expired(3_000).await.expect("requeue"), 1);
    assert_eq!(
        store
            .claim("new#1", 3_000, 9_000, 10)
            .await
            .expect("claim")
            .len(),
        1
    );

    // The first owner's record arrives after its lease passed on: the new owner keeps it.
    let mut slow = store.recorder().await.expect("recorder");
    slow.record(
        "slow#1",
        &[sent(id, subscriber)],
        3_100,
        &BounceRules::default(),
    )
    .await
    .expect("late record");
    store.settle_sent().await.expect("settle");
    assert_eq!(
        states(&store).await[&id],
        ("sending".into(), Some("new#1".into()), None)
    );

    // The new owner's own record is the one that counts.
    let mut owner = store.recorder().await.expect("recorder");
    owner
        .record(
            "new#1",
            &[sent(id, subscriber)],
            3_200,
            &BounceRules::default(),
        )
        .await
        .expect("record");
    store.settle_sent().await.expect("settle");
    assert_eq!(
        states(&store).await[&id],
        ("sent".into(), None, Some(3_200))
    );
}

async fn releasing_a_claim_keeps_what_it_recorded(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 4).await.expect("store");
    let rows = seed(&store, 2).await;
    claim_and_record(&store, "lost#1", 9_000, &rows[..1]).await;

    assert_eq!(store.release_claim("lost#1").await.expect("release"), 1);
    let after = states(&store).await;
    assert_eq!(after[&rows[0].0], ("sent".into(), None, Some(1_500)));
    assert_eq!(after[&rows[1].0], ("queued".into(), None, None));
}

/// Until the log is folded (the sender waits until it is idle), what it holds is neither
/// waiting in the queue gauge nor pending in `status`.
async fn what_is_logged_as_sent_is_not_counted_as_waiting(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 4).await.expect("store");
    let rows = seed(&store, 3).await;
    claim_and_record(&store, "busy#1", 9_000, &rows[..2]).await;
    assert_eq!(store.queue_depth().await.expect("depth"), 1);

    let out = crate::cli::harborlist()
        .args(["status", "--json"])
        .env("HARBORLIST__DATABASE__URL", &db.url)
        .output()
        .expect("status runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let m = doc["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .find(|m| m["key"] == "announcement:leases")
        .expect("the mailing is listed")
        .clone();
    assert_eq!(
        (m["sent"].as_i64(), m["pending"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(doc["queue_depth"], 1);
    // `status` folded the log, so the table itself is now exact too.
    let after = states(&store).await;
    assert_eq!(after[&rows[0].0], ("sent".into(), None, Some(1_500)));
    assert_eq!(after[&rows[2].0].0, "sending");
}

/// An idle sender folds its log one chunk per pass, so that mail falling due meanwhile
/// waits for one chunk, not for the whole of a mailing's records.
async fn an_idle_sender_folds_its_log_a_chunk_at_a_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 4).await.expect("store");
    let rows = seed(&store, SETTLE_CHUNK + 1).await;
    let claimed = store
        .claim("big#1", 1_000, 9_000, 2 * SETTLE_CHUNK as i64)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), SETTLE_CHUNK + 1);
    let mut recorder = store.recorder().await.expect("recorder");
    for group in rows.chunks(200) {
        let outcomes: Vec<Outcome> = group.iter().map(|&(d, s)| sent(d, s)).collect();
        recorder
            .record("big#1", &outcomes, 1_500, &BounceRules::default())
            .await
            .expect("record");
    }
    let count = |states: &BTreeMap<_, (String, _, _)>, state: &str| {
        states.values().filter(|(s, _, _)| s == state).count()
    };
    match backend {
        Backend::Postgres => {
            assert_eq!(count(&states(&store).await, "sending"), SETTLE_CHUNK + 1);
            assert!(
                store.settle_own_sent_chunk().await.expect("fold"),
                "more left"
            );
            let after = states(&store).await;
            assert_eq!(
                (count(&after, "sent"), count(&after, "sending")),
                (SETTLE_CHUNK, 1)
            );
            assert!(!store.settle_own_sent_chunk().await.expect("fold"), "done");
        }
        // SQLite records straight into `deliveries`: there is nothing to fold.
        Backend::Sqlite => {
            assert!(!store.settle_own_sent_chunk().await.expect("fold"));
        }
    }
    assert_eq!(count(&states(&store).await, "sent"), SETTLE_CHUNK + 1);
    assert!(!store.settle_own_sent_chunk().await.expect("fold"));
}

crate::both_backends!(
    a_dead_senders_records_stand_and_the_rest_is_requeued,
    a_late_record_leaves_the_delivery_to_its_new_owner,
    releasing_a_claim_keeps_what_it_recorded,
    what_is_logged_as_sent_is_not_counted_as_waiting,
    an_idle_sender_folds_its_log_a_chunk_at_a_time,
);
