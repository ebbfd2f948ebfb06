//! Several instances on one database: three on PostgreSQL with one killed mid-run, and two
//! behind a slow relay.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use harborlist::store::Store;
use sqlx::Row;

use crate::{
    POOL_SIZE, address, announcements, both_backends, delivery_states,
    helpers::{Backend, DaemonSetup, TestDb, eventually},
    messages, seed_bulk, settled, setup,
    sink::{FaultSink, Mode},
    tally,
};

both_backends!(
    a_slow_relay_does_not_cost_a_live_instance_its_claims,
    a_stopped_sender_gives_back_what_it_claimed_ahead,
);

const SUBJECT: &str = "Three instances";
const KEY: &str = "announcement:three";

/// The pid inside a lease owner, `host:pid:rand#turn`.
fn pid_of(owner: &str) -> Option<u32> {
    let instance = owner.rsplit_once('#').map_or(owner, |(i, _)| i);
    let parts: Vec<&str> = instance.rsplit(':').collect();
    parts.get(1)?.parse().ok()
}

/// Deliveries in flight right now, per lease owner.
async fn claims(store: &Store) -> BTreeMap<String, i64> {
    let rows = sqlx::query(
        "SELECT lease_owner, COUNT(*) AS n FROM deliveries WHERE state = 'sending' GROUP BY lease_owner",
    )
    .fetch_all(store.pool())
    .await
    .expect("claims");
    let mut out = BTreeMap::new();
    for r in rows {
        let owner: Option<String> = r.get("lease_owner");
        if let Some(owner) = owner {
            out.insert(owner, r.get::<i64, _>("n"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_queue_and_survive_losing_one() {
    let n = messages();
    let db = TestDb::new(Backend::Postgres).await;
    let sink = FaultSink::start();
    let setup = setup(&db.url, &sink);
    let store = Store::connect(&db.url, 4).await.expect("store");
    let emails: Vec<String> = (0..n).map(address).collect();
    seed_bulk(&store, &emails).await;

    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(Some(setup.launch().await));
    }
    let pids: Vec<u32> = daemons.iter().flatten().map(|d| d.pid()).collect();

    // Who holds claims, sampled all through the run; `killed` splits before from after.
    let seen_before = Arc::new(Mutex::new(BTreeSet::new()));
    let seen_after = Arc::new(Mutex::new(BTreeSet::new()));
    let killed_flag = Arc::new(AtomicBool::new(false));
    // When each claim (lease owner) was first and last seen in flight.
    let spans = Arc::new(Mutex::new(BTreeMap::<String, (Instant, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (store, before, after, killed, stop, spans) = (
            store.clone(),
            seen_before.clone(),
            seen_after.clone(),
            killed_flag.clone(),
            stop.clone(),
            spans.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let owners = claims(&store).await;
                let now = Instant::now();
                {
                    let mut spans = spans.lock().unwrap();
                    for owner in owners.keys() {
                        spans.entry(owner.clone()).or_insert((now, now)).1 = now;
                    }
                }
                let pids: Vec<u32> = owners.keys().filter_map(|o| pid_of(o)).collect();
                let into = if killed.load(Ordering::SeqCst) {
                    &after
                } else {
                    &before
                };
                into.lock().unwrap().extend(pids);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // All three are up before the announcement exists; each picks it up by watching.
    setup.write_announcements(&announcements(&[("three", 1, SUBJECT)]));
    let started = Instant::now();

    // Kill an instance that holds claims, once a quarter has arrived and two instances
    // have been seen sending.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (victim, held, at_kill) = loop {
        assert!(
            Instant::now() < deadline,
            "no moment to kill an instance mid-send: {} message(s), claiming {:?}",
            sink.count(),
            seen_before.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let two_seen = seen_before.lock().unwrap().len() >= 2;
        if sink.count() < n / 4 || !two_seen {
            continue;
        }
        let mut now: BTreeMap<u32, i64> = BTreeMap::new();
        for (owner, n) in claims(&store).await {
            if let Some(pid) = pid_of(&owner) {
                *now.entry(pid).or_insert(0) += n;
            }
        }
        let Some((&pid, &count)) = now.iter().max_by_key(|(_, c)| **c) else {
            continue;
        };
        let Some(daemon) = pids
            .iter()
            .position(|p| *p == pid)
            .and_then(|i| daemons[i].take())
        else {
            continue;
        };
        daemon.kill9();
        killed_flag.store(true, Ordering::SeqCst);
        break (pid, count, sink.count());
    };
    eprintln!(
        "[three] killed pid {victim} holding {held} claim(s) when {at_kill} message(s) had arrived"
    );

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
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    sampler.await.expect("sampler");
    let survivors_ok = daemons.iter_mut().flatten().all(|d| d.is_running());
    daemons.clear();

    let longest_live_claim = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|(owner, _)| pid_of(owner) != Some(victim))
        .map(|(_, (first, last))| *last - *first)
        .max()
        .unwrap_or_default();
    eprintln!("[three] longest claim held by a live instance: {longest_live_claim:?}");
    let t = tally(&sink, SUBJECT, &emails);
    let before = seen_before.lock().unwrap().clone();
    let after = seen_after.lock().unwrap().clone();
    eprintln!(
        "[three] messages {n}, instances 3, kills 1, lost {}, duplicates {}, seconds {seconds:.1}; \
         claiming before the kill {before:?}, after {after:?}",
        t.lost.len(),
        t.duplicates
    );
    assert!(survivors_ok, "the other two instances kept running");
    assert!(
        before.len() >= 2 && before.iter().all(|p| pids.contains(p)),
        "at least two instances claimed work before the kill: {before:?} of {pids:?}"
    );
    assert!(
        after.iter().any(|p| *p != victim && pids.contains(p)),
        "the survivors (not {victim}) claimed work after the kill: {after:?}"
    );
    assert!(
        sink.count() > at_kill,
        "messages arrived while the instance was dead"
    );
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
        t.duplicates <= POOL_SIZE,
        "{} duplicates after one kill; at most {POOL_SIZE} messages are in flight per instance",
        t.duplicates
    );
    assert!(
        t.mixed_ids.is_empty(),
        "repeats carry the same Message-ID: {:?}",
        t.mixed_ids
    );
    assert_eq!(t.shared_ids, 0, "Message-IDs are per recipient");
}

/// A fresh database with `n` active subscribers, and a relay that takes `delay` over each
/// message.
struct SlowRelay {
    /// Dropped with the test, which drops its database.
    _db: TestDb,
    sink: FaultSink,
    setup: DaemonSetup,
    store: Store,
    emails: Vec<String>,
}

impl SlowRelay {
    async fn start(backend: Backend, n: usize, delay: Duration) -> Self {
        let db = TestDb::new(backend).await;
        let sink = FaultSink::start();
        sink.set(Mode {
            delay,
            ..Mode::default()
        });
        let setup = setup(&db.url, &sink);
        let store = Store::connect(&db.url, 4).await.expect("store");
        let emails: Vec<String> = (0..n).map(address).collect();
        seed_bulk(&store, &emails).await;
        Self {
            _db: db,
            sink,
            setup,
            store,
            emails,
        }
    }
}

/// Two instances each claim a batch of 100 × pool_size = 400, which takes 400 / 4 × 80 ms =
/// 8 s to send, well past the 3 s lease. Half way through, one of them claims the last 400
/// ahead, and they wait about 4 s for their turn, also past the lease. Meanwhile the other
/// instance, between its batches, re-queues expired leases. A sender that is alive must keep
/// its claims, those it is sending and those it has claimed ahead: nothing may be sent twice
/// when no process died.
async fn a_slow_relay_does_not_cost_a_live_instance_its_claims(backend: Backend) {
    const SUBJECT: &str = "Slow relay";
    let n = 1200;
    let relay = SlowRelay::start(backend, n, Duration::from_millis(80)).await;
    let a = relay.setup.launch().await;
    let b = relay.setup.launch().await;
    relay
        .setup
        .write_announcements(&announcements(&[("slow", 1, SUBJECT)]));
    let started = Instant::now();

    eventually(90, "a message for every subscriber", || async {
        (relay.sink.recipients_of(SUBJECT).len() >= n).then_some(())
    })
    .await;
    settled(&relay.store, "announcement:slow", n as i64, 30).await;
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let logs = format!("{}\n{}", a.log(), b.log());
    drop((a, b));

    let t = tally(&relay.sink, SUBJECT, &relay.emails);
    eprintln!(
        "[slow {backend:?}] messages {n}, instances 2, kills 0, lost {}, duplicates {}, seconds {seconds:.1}",
        t.lost.len(),
        t.duplicates
    );
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert_eq!(
        t.duplicates, 0,
        "no process died, so nothing may be sent twice\n{logs}"
    );
    assert_eq!(
        delivery_states(&relay.store, "announcement:slow")
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("sent".to_owned(), n as i64)]
    );
}

/// A sender claims its next batch while the current one is half handed out. Stopped
/// gracefully in the second half of a batch, it gives that claim back: nothing is left
/// `sending` (where it would wait out the lease), no attempt is counted for it, and a
/// restart sends the rest once.
///
/// A batch is 100 × pool_size = 400 messages; at 20 ms a message on 4 connections it takes
/// about 2 s, and the next claim is made when about 190 have been sent.
async fn a_stopped_sender_gives_back_what_it_claimed_ahead(backend: Backend) {
    const SUBJECT: &str = "Claimed ahead";
    let n = 1000;
    let relay = SlowRelay::start(backend, n, Duration::from_millis(20)).await;
    let mut daemon = relay.setup.launch().await;
    relay
        .setup
        .write_announcements(&announcements(&[("ahead", 1, SUBJECT)]));

    // Stop in the second half of the first batch: its next batch is claimed by then.
    eventually(60, "250 messages of the first batch", || async {
        (relay.sink.with_subject(SUBJECT).len() >= 250).then_some(())
    })
    .await;
    daemon.signal("TERM");
    for _ in 0..300 {
        if !daemon.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!daemon.is_running(), "the daemon stops on SIGTERM");
    let log = daemon.log();
    assert!(
        log.contains("returned deliveries claimed ahead to the queue"),
        "the stop came while a claim was made ahead:\n{log}"
    );
    drop(daemon);
    let states = delivery_states(&relay.store, "announcement:ahead").await;
    assert_eq!(
        states.get("sending"),
        None,
        "nothing is left claimed: {states:?}"
    );
    let sent = states.get("sent").copied().unwrap_or(0);
    assert!((250..n as i64).contains(&sent), "{states:?}");
    let counted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'queued' AND attempts <> 0",
    )
    .fetch_one(relay.store.pool())
    .await
    .expect("attempts");
    assert_eq!(counted, 0, "a message given back has used no attempt");

    let _again = relay.setup.launch().await;
    settled(&relay.store, "announcement:ahead", n as i64, 60).await;
    let t = tally(&relay.sink, SUBJECT, &relay.emails);
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert_eq!(t.duplicates, 0, "a graceful stop repeats nothing");
}
