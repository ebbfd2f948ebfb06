//! Storing what happened to each message: group commit, retries, the crash bound's permits.
//!
//! Each turn of the sender has one recorder. Message tasks hand it a [`ToRecord`] (the
//! outcome, the permit the message was accepted under, and where to answer); it stores
//! whatever arrived while its writers were busy in one write, releases those permits, then
//! answers. A permit is released only once its outcome is stored, which is what bounds the
//! messages a crash can repeat to `mail.pool_size`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    clock::{SharedClock, to_millis},
    store::{
        Store, StoreError,
        bounces::BounceRules,
        record::{Outcome, Recorder},
    },
};

/// An outcome on its way to the recorder, with the permit its message was handed over
/// under (released once the outcome is stored) and where to answer whether it was.
pub(super) struct ToRecord {
    pub outcome: Outcome,
    pub permit: Option<OwnedSemaphorePermit>,
    pub stored: oneshot::Sender<bool>,
}

/// The most outcomes one transaction records. Groups are as large as what finished while
/// the previous commit ran, so with a handful of connections they stay small; the cap only
/// bounds a statement's parameter count after a stall.
const GROUP_COMMIT_MAX: usize = 256;

/// Records outcomes as they arrive, each group in one write, and answers each sender
/// whether its outcome is stored. Returns the first failure, if any.
///
/// A group is whatever arrived while the writers were busy. On SQLite there is one
/// writer (the database has one anyway); on PostgreSQL a few, each with its own session,
/// so that an outcome waits for its own write and not also for the one before it.
pub(super) async fn record_outcomes(
    store: &Store,
    clock: &SharedClock,
    owner: &str,
    mut incoming: mpsc::UnboundedReceiver<ToRecord>,
    rules: &BounceRules,
    shutdown: &CancellationToken,
) -> Option<StoreError> {
    let mut failure = None;
    // Free writers, each with the session it opened (or none yet).
    let mut free: Vec<Option<Recorder>> = (0..store.record_writers()).map(|_| None).collect();
    let mut writing = futures_util::stream::FuturesUnordered::new();
    let mut open = true;
    let mut group = Vec::with_capacity(GROUP_COMMIT_MAX);
    while open || !writing.is_empty() {
        tokio::select! {
            n = incoming.recv_many(&mut group, GROUP_COMMIT_MAX), if open && !free.is_empty() => {
                if n == 0 {
                    open = false;
                    continue;
                }
                let mut outcomes = Vec::with_capacity(n);
                let mut permits = Vec::with_capacity(n);
                let mut answers = Vec::with_capacity(n);
                for record in group.drain(..) {
                    outcomes.push(record.outcome);
                    permits.push(record.permit);
                    answers.push(record.stored);
                }
                let mut recorder = free.pop().flatten();
                writing.push(async move {
                    let started = Instant::now();
                    let written =
                        record_with_retry(store, clock, &mut recorder, owner, &outcomes, rules, shutdown)
                            .await;
                    metrics::histogram!(crate::telemetry::RECORD)
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("harborlist_record_group_size")
                        .record(outcomes.len() as f64);
                    // The permits go first, straight from here: a connection waiting for
                    // one sends its next message without waiting for the sender's task.
                    drop(permits);
                    for answer in answers {
                        let _ = answer.send(written.is_ok());
                    }
                    (recorder, written.err())
                });
            }
            Some((recorder, error)) = writing.next(), if !writing.is_empty() => {
                free.push(recorder);
                if let Some(e) = error {
                    failure.get_or_insert(e);
                }
            }
        }
    }
    failure
}

/// Outcomes must not be dropped because the database blinked: keep trying for a while.
/// If it never comes back, the leases expire and the rows are sent again (never lost).
/// `recorder` is the turn's database session, opened on first use and dropped after a
/// failure, so that a retry gets a fresh one.
async fn record_with_retry(
    store: &Store,
    clock: &SharedClock,
    recorder: &mut Option<Recorder>,
    owner: &str,
    outcomes: &[Outcome],
    rules: &BounceRules,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let mut wait = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        let now = to_millis(clock.now());
        let written = match recorder {
            Some(r) => r.record(owner, outcomes, now, rules).await,
            None => match store.recorder().await {
                Ok(r) => recorder.insert(r).record(owner, outcomes, now, rules).await,
                Err(e) => Err(e),
            },
        };
        if written.is_err() {
            *recorder = None;
        }
        match written {
            Ok(()) => return Ok(()),
            Err(e) if tries < 60 && !(shutdown.is_cancelled() && tries >= 5) => {
                tracing::warn!(error = %e, "recording delivery outcomes failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
