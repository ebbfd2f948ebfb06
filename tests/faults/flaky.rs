//! A relay that fails: 451s, dropped connections, and 550s that add up to a bounce.

use std::{collections::HashSet, time::Duration};

use harborlist::store::Store;
use sqlx::Row;

use crate::{
    address, announcements, both_backends, delivery_of, delivery_states,
    helpers::{Backend, DaemonSetup, TestDb, eventually},
    messages, seed_bulk, settled, setup,
    sink::{FaultSink, Mode},
    subscriber_state, tally,
};

both_backends!(
    temporary_451s_are_retried_until_each_message_arrives_once_and_a_550_is_not_retried,
    dropped_connections_are_retried_until_each_message_arrives_once,
    three_550s_in_a_row_make_an_address_bouncing_and_it_gets_no_more_list_mail,
);

/// Recipients for the flaky-relay runs: a fifth of the main size.
fn flaky_size() -> usize {
    (messages() / 5).clamp(50, 2000)
}

struct World {
    _db: TestDb,
    sink: FaultSink,
    setup: DaemonSetup,
    store: Store,
}

async fn world(backend: Backend, emails: &[String], mode: Mode) -> World {
    let db = TestDb::new(backend).await;
    let sink = FaultSink::start();
    sink.set(mode);
    let setup = setup(&db.url, &sink);
    let store = Store::connect(&db.url, 4).await.expect("store");
    seed_bulk(&store, emails).await;
    World {
        _db: db,
        sink,
        setup,
        store,
    }
}

/// Deliveries of a mailing that took more than one attempt.
async fn retried(store: &Store, mailing_key: &str) -> i64 {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM deliveries d JOIN mailings m ON m.id = d.mailing_id
         WHERE m.key = $1 AND d.attempts > 1",
    )
    .bind(mailing_key)
    .fetch_one(store.pool())
    .await
    .expect("retried")
    .get("n")
}

async fn temporary_451s_are_retried_until_each_message_arrives_once_and_a_550_is_not_retried(
    backend: Backend,
) {
    const SUBJECT: &str = "Flaky relay 451";
    const KEY: &str = "announcement:flaky451";
    let bad = "rejected@example.org";
    let m = flaky_size();
    let good: Vec<String> = (0..m).map(address).collect();
    let mut all = good.clone();
    all.push(bad.to_owned());
    let reject: HashSet<String> = [bad.to_owned()].into();
    // First a 451 at the end of DATA, which leaves the session hanging (a relay that stops
    // answering: only the client's timeout gets out of it), then a 451 to every DATA command
    // until two seconds after the first of those, then the relay accepts.
    let w = world(
        backend,
        &all,
        Mode {
            temp_fail_at_end: true,
            reject: reject.clone(),
            ..Mode::default()
        },
    )
    .await;
    w.setup
        .write_announcements(&announcements(&[("flaky451", 1, SUBJECT)]));
    let daemon = w.setup.launch().await;

    eventually(30, "the first 451", || async {
        (w.sink.datas() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hung = w.sink.datas();
    w.sink.set(Mode {
        temp_fail_at_data: true,
        reject: reject.clone(),
        ..Mode::default()
    });
    // The hung sessions take the client's timeout (smtp_timeout = 3s) to give up.
    eventually(30, "a retry after the hung sessions", || async {
        (w.sink.datas() > hung).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A 451 to the end of data leaves the session usable, so an envelope pipelined behind
    // that message before the switch (its DATA already answered 354) may still complete:
    // at most one per connection.
    assert!(
        w.sink.count() <= crate::POOL_SIZE,
        "nothing but envelopes already accepted goes while the relay says 451: {}",
        w.sink.count()
    );
    let refused = w.sink.datas();
    w.sink.set(Mode {
        reject,
        ..Mode::default()
    });

    eventually(60, "a message for every good address", || async {
        (w.sink.recipients_of(SUBJECT).len() >= m).then_some(())
    })
    .await;
    settled(&w.store, KEY, all.len() as i64, 30).await;
    // A 550 wrongly retried would come back within the 200 ms–1 s backoff.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = daemon.log();
    daemon.kill9();

    let t = tally(&w.sink, SUBJECT, &good);
    let retried = retried(&w.store, KEY).await;
    eprintln!(
        "[451 {backend:?}] messages {m}, 451 at end of DATA {hung}, 451s in all {refused}, DATA commands {}, accepted {}, deliveries retried {retried}, lost {}, duplicates {}",
        w.sink.datas(),
        w.sink.count(),
        t.lost.len(),
        t.duplicates
    );
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert_eq!(t.duplicates, 0, "each message arrives exactly once");
    assert!(
        t.unexpected.is_empty(),
        "the rejected address got mail: {:?}",
        t.unexpected
    );
    assert!(
        hung > 0 && refused > hung && w.sink.datas() > w.sink.count(),
        "retries happened: {} DATA commands for {} messages",
        w.sink.datas(),
        w.sink.count()
    );
    // A 451 after RCPT is a temporary failure of that message: it spends an attempt.
    assert!(retried > 0, "the queue counted the retries");
    assert_eq!(
        delivery_states(&w.store, KEY)
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("failed".to_owned(), 1), ("sent".to_owned(), m as i64)],
        "{log}"
    );
    assert_eq!(
        delivery_of(&w.store, KEY, bad).await,
        Some(("failed".to_owned(), 1)),
        "a 550 is recorded failed after one attempt"
    );
    assert_eq!(w.sink.rejected(bad), 1, "a 550 is not retried");
    assert_eq!(
        subscriber_state(&w.store, bad).await,
        ("active".to_owned(), 1),
        "one bounce counts, but does not yet make the address bouncing"
    );
}

async fn dropped_connections_are_retried_until_each_message_arrives_once(backend: Backend) {
    const SUBJECT: &str = "Flaky relay 421";
    const KEY: &str = "announcement:flaky421";
    let m = flaky_size();
    let good: Vec<String> = (0..m).map(address).collect();
    let w = world(
        backend,
        &good,
        Mode {
            drop_on_mail: true,
            ..Mode::default()
        },
    )
    .await;
    w.setup
        .write_announcements(&announcements(&[("flaky421", 1, SUBJECT)]));
    let daemon = w.setup.launch().await;

    eventually(30, "the first dropped session", || async {
        (w.sink.mails() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.sink.count(),
        0,
        "nothing is accepted while the relay hangs up"
    );
    let dropped = w.sink.mails();
    w.sink.set(Mode::default());

    eventually(60, "a message for every address", || async {
        (w.sink.recipients_of(SUBJECT).len() >= m).then_some(())
    })
    .await;
    settled(&w.store, KEY, m as i64, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = daemon.log();
    daemon.kill9();

    let t = tally(&w.sink, SUBJECT, &good);
    let retried = retried(&w.store, KEY).await;
    eprintln!(
        "[421 {backend:?}] messages {m}, sessions dropped at MAIL FROM {dropped}, MAIL FROMs {}, accepted {}, deliveries retried {retried}, lost {}, duplicates {}",
        w.sink.mails(),
        w.sink.count(),
        t.lost.len(),
        t.duplicates
    );
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert_eq!(t.duplicates, 0, "each message arrives exactly once");
    assert!(t.unexpected.is_empty(), "{:?}", t.unexpected);
    assert!(
        dropped > 0 && w.sink.mails() > w.sink.count(),
        "sessions were dropped and retried"
    );
    // A session dropped at MAIL FROM is a relay fault (issue 15): the delivery goes back
    // to the queue without spending an attempt, so no message is any closer to giving up.
    assert_eq!(retried, 0, "a relay fault spends no attempt");
    assert_eq!(
        delivery_states(&w.store, KEY)
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("sent".to_owned(), m as i64)],
        "{log}"
    );
}

async fn three_550s_in_a_row_make_an_address_bouncing_and_it_gets_no_more_list_mail(
    backend: Backend,
) {
    let bouncer = "bouncer@example.org";
    // Rejected in the first and third mailing only: two points, below the threshold. (A
    // message the relay accepts no longer resets the score: the relay taking it says nothing
    // about the mailbox, whose bounce may still come back as a report.)
    let intermittent = "intermittent@example.org";
    let good: Vec<String> = (0..20).map(address).collect();
    let mut all = good.clone();
    all.extend([bouncer.to_owned(), intermittent.to_owned()]);
    let w = world(backend, &all, Mode::default()).await;
    let daemon = w.setup.launch().await;

    let mut toml = String::new();
    let rounds: [(&str, &[&str]); 3] = [
        ("bounce-1", &[bouncer, intermittent]),
        ("bounce-2", &[bouncer]),
        ("bounce-3", &[bouncer, intermittent]),
    ];
    for (id, rejected) in rounds {
        w.sink.set(Mode {
            reject: rejected.iter().map(|s| s.to_string()).collect(),
            ..Mode::default()
        });
        toml += &announcements(&[(id, 0, id)]);
        w.setup.write_announcements(&toml);
        let key = format!("announcement:{id}");
        settled(&w.store, &key, all.len() as i64, 30).await;
        let t = tally(&w.sink, id, &good);
        assert!(t.lost.is_empty() && t.duplicates == 0, "{id}: {t:?}");
        assert_eq!(
            delivery_of(&w.store, &key, bouncer).await,
            Some(("failed".to_owned(), 1)),
            "{id}"
        );
    }
    assert_eq!(
        subscriber_state(&w.store, bouncer).await,
        ("bouncing".to_owned(), 3),
        "three permanent failures reach the threshold"
    );
    assert_eq!(
        subscriber_state(&w.store, intermittent).await,
        ("active".to_owned(), 2),
        "two failures score two, below the threshold of three"
    );
    assert_eq!(w.sink.rejected(bouncer), 3);
    assert_eq!(w.sink.rejected(intermittent), 2);

    // The relay would take everything now: anything sent to the bouncer would arrive.
    w.sink.set(Mode::default());
    toml += &announcements(&[("bounce-4", 0, "bounce-4")]);
    w.setup.write_announcements(&toml);
    let key = "announcement:bounce-4";
    eventually(30, "the fourth announcement for everyone else", || async {
        (w.sink.recipients_of("bounce-4").len() > good.len()).then_some(())
    })
    .await;
    settled(&w.store, key, good.len() as i64 + 1, 30).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = daemon.log();
    daemon.kill9();

    let mut expected = good.clone();
    expected.push(intermittent.to_owned());
    let t = tally(&w.sink, "bounce-4", &expected);
    assert!(t.lost.is_empty() && t.duplicates == 0, "{t:?}");
    assert!(
        t.unexpected.is_empty(),
        "a bouncing address got list mail: {:?}",
        t.unexpected
    );
    let row = delivery_of(&w.store, key, bouncer).await;
    assert!(
        row.is_none() || row.as_ref().is_some_and(|(s, _)| s == "skipped"),
        "no delivery (or a skipped one) for a bouncing address: {row:?}\n{log}"
    );
    assert_eq!(w.sink.rejected(bouncer), 3, "not even tried");
    eprintln!(
        "[bounce {backend:?}] bouncer: {:?} after 3 rejections; fourth mailing row {row:?}",
        subscriber_state(&w.store, bouncer).await
    );
}
