//! SIGKILL, again and again, while an announcement goes out.

use std::time::{Duration, Instant};

use harborlist::store::Store;

use crate::{
    POOL_SIZE, Rng, address, announcements, both_backends, delivery_states,
    helpers::{Backend, TestDb, eventually},
    kills, messages, seed_bulk, setup,
    sink::FaultSink,
    tally,
};

both_backends!(
    kill_9_mid_send_loses_nothing_and_repeats_only_what_was_in_flight,
    kill_9_with_a_pipelining_relay_loses_nothing_and_repeats_only_what_was_in_flight,
);

const SUBJECT: &str = "Kill nine";
const KEY: &str = "announcement:kill9";

async fn kill_9_mid_send_loses_nothing_and_repeats_only_what_was_in_flight(backend: Backend) {
    kill_9(backend, false).await;
}

/// The same against a relay that offers PIPELINING, where a session writes the next
/// envelope behind each message and takes the permit only once that envelope is accepted.
async fn kill_9_with_a_pipelining_relay_loses_nothing_and_repeats_only_what_was_in_flight(
    backend: Backend,
) {
    kill_9(backend, true).await;
}

async fn kill_9(backend: Backend, pipelining: bool) {
    let (n, k) = (messages(), kills());
    let label = if pipelining {
        format!("kill9 {backend:?} pipelining")
    } else {
        format!("kill9 {backend:?}")
    };
    let mut rng = Rng::new(&label);
    let db = TestDb::new(backend).await;
    let sink = if pipelining {
        FaultSink::start_pipelining()
    } else {
        FaultSink::start()
    };
    let setup = setup(&db.url, &sink);
    let store = Store::connect(&db.url, 4).await.expect("store");
    let emails: Vec<String> = (0..n).map(address).collect();
    seed_bulk(&store, &emails).await;
    setup.write_announcements(&announcements(&[("kill9", 1, SUBJECT)]));

    let started = Instant::now();
    for round in 0..k {
        let daemon = setup.launch().await;
        let before = sink.count();
        let remaining = n.saturating_sub(sink.recipients_of(SUBJECT).len());
        // Kill after a random time, or sooner once a random share of what is left (on
        // average half of an even split over the kills to come) has arrived, so that the
        // kills land while mail is flowing rather than after it has all gone.
        let delay = Duration::from_millis(rng.between(300, 1500));
        let share = (remaining / (k - round + 1)).max(1) as u64;
        let target = rng.between(1, share) as usize;
        let t = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let new = sink.count() - before;
            let waited = t.elapsed();
            if new >= target || (waited >= delay && (new > 0 || waited >= Duration::from_secs(8))) {
                break;
            }
        }
        daemon.kill9();
        eprintln!(
            "[{label}] kill {}/{k} after {:?}: {} new message(s) in this run, {} recipient(s) reached",
            round + 1,
            t.elapsed(),
            sink.count() - before,
            sink.recipients_of(SUBJECT).len()
        );
    }

    let daemon = setup.launch().await;
    eventually(90, "a message for every subscriber", || async {
        (sink.recipients_of(SUBJECT).len() >= n).then_some(())
    })
    .await;
    eventually(30, "every delivery recorded", || async {
        let states = delivery_states(&store, KEY).await;
        (states.get("sent").copied() == Some(n as i64) && states.len() == 1).then_some(())
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    // Anything still on its way would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = daemon.log();
    daemon.kill9();

    let t = tally(&sink, SUBJECT, &emails);
    eprintln!(
        "[{label}] messages {n}, kills {k}, lost {}, duplicates {} ({:.2} per kill, bound {}), envelopes behind a dot {}, seconds {seconds:.1}",
        t.lost.len(),
        t.duplicates,
        t.duplicates as f64 / k.max(1) as f64,
        k * POOL_SIZE,
        sink.riding()
    );
    if pipelining {
        assert!(
            sink.riding() > 0,
            "the pipelined path was not taken: no envelope rode behind a dot"
        );
    }
    assert!(
        t.lost.is_empty(),
        "lost {}: {:?}",
        t.lost.len(),
        &t.lost[..t.lost.len().min(10)]
    );
    assert!(
        t.unexpected.is_empty(),
        "mail to non-subscribers: {:?}",
        t.unexpected
    );
    assert!(
        t.duplicates <= k * POOL_SIZE,
        "{} duplicates after {k} kills; at most {} messages are in flight per kill (pool_size {POOL_SIZE})",
        t.duplicates,
        k * POOL_SIZE
    );
    assert!(
        t.mixed_ids.is_empty(),
        "repeats carry the same Message-ID: {:?}",
        t.mixed_ids
    );
    assert_eq!(t.shared_ids, 0, "Message-IDs are per recipient");
    assert_eq!(
        delivery_states(&store, KEY)
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("sent".to_owned(), n as i64)],
        "every delivery row ends sent\n{log}"
    );
}
