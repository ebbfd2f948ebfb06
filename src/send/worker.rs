//! The claim → send → record loop.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    backoff::{jitter, retry_delay},
    record::{ToRecord, record_outcomes},
};
use crate::{
    clock::{SharedClock, to_millis},
    domain::redact,
    mail::{
        Letter, Recipient, SendError, Transport,
        context::{Composer, is_list_mail},
    },
    startup::Live,
    store::{Store, delivery::Claimed, record::Outcome},
};

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub instance: String,
    pub concurrency: usize,
    pub batch: i64,
    pub max_per_second: f64,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub lease: Duration,
    pub poll: Duration,
}

/// The next batch's claim, made while the current batch is sending (see
/// [`Sender::turn`]).
struct Ahead {
    owner: String,
    /// Starts the claim.
    go: Arc<Notify>,
    /// Ends the task's renewal of the claimed batch's lease, or the task if it has not
    /// claimed yet.
    stop: CancellationToken,
    claimed: oneshot::Receiver<Result<Vec<Claimed>, crate::store::StoreError>>,
}

pub struct Sender {
    store: Store,
    live: Live,
    transport: Transport,
    clock: SharedClock,
    config: SenderConfig,
    wake: Arc<Notify>,
    limiter: Option<DefaultDirectRateLimiter>,
    turn: AtomicU64,
    /// Messages being handed to the relay: twice `concurrency` at most, so that each
    /// connection has the next message waiting and can pipeline its envelope behind the
    /// current one (see `mail::smtp`).
    sending: Semaphore,
    /// Messages the relay may have accepted whose outcome is not yet stored: `concurrency`
    /// at most. A permit outlives the SMTP session's part in a message, so a connection can
    /// start the next message while the last one is being recorded.
    unrecorded: Arc<Semaphore>,
    /// Claims whose answer was lost (the database dropped the connection mid-claim): the
    /// rows may be marked ours but were never sent, so they are released as soon as the
    /// database answers again instead of waiting out the lease.
    lost_claims: std::sync::Mutex<Vec<String>>,
}

impl Sender {
    pub fn new(
        store: Store,
        live: Live,
        transport: Transport,
        clock: SharedClock,
        config: SenderConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let limiter = (config.max_per_second > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / config.max_per_second);
            let burst = NonZeroU32::new((config.max_per_second.ceil() as u32).max(1))
                .unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(burst);
            RateLimiter::direct(quota)
        });
        let sending = Semaphore::new(config.concurrency.max(1) * 2);
        let unrecorded = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Self {
            store,
            live,
            transport,
            clock,
            config,
            wake,
            limiter,
            turn: AtomicU64::new(0),
            sending,
            unrecorded,
            lost_claims: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs until `shutdown` is cancelled, then finishes what is in flight.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        this.run_loop(shutdown).await;
    }

    async fn run_loop(self: &Arc<Self>, shutdown: CancellationToken) {
        let mut last_requeue = Instant::now() - Duration::from_secs(3600);
        let mut last_gauge = Instant::now() - Duration::from_secs(3600);
        let mut db_backoff = Duration::from_millis(200);
        let mut ahead: Option<Ahead> = None;
        while !shutdown.is_cancelled() {
            if last_requeue.elapsed() >= self.config.lease / 4 {
                match self
                    .store
                    .requeue_expired(to_millis(self.clock.now()))
                    .await
                {
                    Ok(n) if n > 0 => tracing::warn!(
                        count = n,
                        "re-queued deliveries whose sender's lease expired"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not re-queue expired leases"),
                }
                last_requeue = Instant::now();
            }
            if last_gauge.elapsed() >= Duration::from_secs(5) {
                self.update_queue_gauge().await;
                last_gauge = Instant::now();
            }
            match self.turn(&shutdown, &mut ahead).await {
                Ok(0) => {
                    db_backoff = Duration::from_millis(200);
                    // Nothing to send: the moment to fold the sent log, a chunk per pass, so
                    // that mail falling due meanwhile waits for one chunk at most.
                    if self.settle_chunk().await {
                        continue;
                    }
                    let nap = self.idle_nap().await;
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(nap) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Ok(_) => db_backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?db_backoff, "sender could not reach the database");
                    tokio::select! {
                        _ = tokio::time::sleep(db_backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    db_backoff = (db_backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        if let Some(ahead) = ahead.take() {
            self.give_back(ahead).await;
        }
        // What was logged as sent goes into `deliveries` before we go, so that the table
        // is exact while no sender runs.
        if let Err(e) = self.store.settle_sent().await {
            tracing::warn!(error = %e, "could not fold the sent log; the next start will");
        }
        tracing::info!("sender stopped");
    }

    /// How long to sleep when nothing is due: until the next retry, at most one poll.
    async fn idle_nap(&self) -> Duration {
        let now = to_millis(self.clock.now());
        match self.store.next_delivery_due().await {
            Ok(Some(due)) if due > now => {
                Duration::from_millis((due - now) as u64).min(self.config.poll)
            }
            Ok(Some(_)) => Duration::from_millis(10),
            _ => self.config.poll,
        }
    }

    async fn update_queue_gauge(&self) {
        if let Ok(depth) = self.store.queue_depth().await {
            metrics::gauge!("harborlist_queue_depth").set(depth as f64);
        }
    }

    /// A new lease owner: one per claim, so that a claim can be renewed, released or
    /// recorded against on its own.
    fn next_owner(&self) -> String {
        format!(
            "{}#{}",
            self.config.instance,
            self.turn.fetch_add(1, Ordering::Relaxed)
        )
    }

    async fn claim_now(&self, owner: &str) -> Result<Vec<Claimed>, crate::store::StoreError> {
        let now = self.clock.now();
        let lease_until = now
            + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(5));
        self.store
            .claim(
                owner,
                to_millis(now),
                to_millis(lease_until),
                self.config.batch,
            )
            .await
    }

    /// Starts the claim of the next batch, to run once `go` is notified (when the current
    /// batch is half handed out). While its batch waits, the task renews the batch's lease,
    /// until `stop`: then the turn that takes the batch up renews it itself.
    fn claim_ahead(self: &Arc<Self>) -> Ahead {
        let owner = self.next_owner();
        let go = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (tx, claimed) = oneshot::channel();
        let (this, task_owner, task_go, task_stop) = (
            Arc::clone(self),
            owner.clone(),
            Arc::clone(&go),
            stop.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = task_go.notified() => {}
                _ = task_stop.cancelled() => {
                    let _ = tx.send(Ok(Vec::new()));
                    return;
                }
            }
            let result = this.claim_now(&task_owner).await;
            let holds = matches!(&result, Ok(batch) if !batch.is_empty());
            let _ = tx.send(result);
            if holds {
                tokio::select! {
                    never = this.keep_lease(&task_owner) => match never {},
                    _ = task_stop.cancelled() => {}
                }
            }
        });
        Ahead {
            owner,
            go,
            stop,
            claimed,
        }
    }

    /// Waits for a claim made ahead and takes over its batch from the task that made it.
    async fn take_up(
        &self,
        ahead: Ahead,
    ) -> (String, Result<Vec<Claimed>, crate::store::StoreError>) {
        ahead.go.notify_one();
        let result = ahead.claimed.await.unwrap_or_else(|_| {
            Err(crate::store::StoreError::Corrupt(
                "the claim made ahead was dropped".into(),
            ))
        });
        ahead.stop.cancel();
        (ahead.owner, result)
    }

    /// Returns a claim made ahead that no turn will send (the sender is stopping).
    async fn give_back(&self, ahead: Ahead) {
        ahead.stop.cancel();
        let owner = ahead.owner.clone();
        let _ = ahead.claimed.await;
        match self.store.release_claim(&owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "returned deliveries claimed ahead to the queue"),
            Err(e) => {
                tracing::warn!(error = %e, "could not return the deliveries claimed ahead; they go back when their lease ends");
            }
        }
    }

    /// One claim → send → record cycle. Returns how many deliveries it handled.
    ///
    /// A full batch means more is probably waiting, so the next batch is claimed while this
    /// one is half handed out (`ahead`), and the wire does not stop for the claim: with 400
    /// rows each claim took 10–25 ms, a quarter of a PostgreSQL run.
    async fn turn(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        ahead: &mut Option<Ahead>,
    ) -> Result<usize, crate::store::StoreError> {
        self.release_lost_claims().await?;
        let claiming = Instant::now();
        let (owner, claimed) = match ahead.take() {
            Some(ahead) => self.take_up(ahead).await,
            None => {
                let owner = self.next_owner();
                let claimed = self.claim_now(&owner).await;
                (owner, claimed)
            }
        };
        let batch = match claimed {
            Ok(batch) => batch,
            Err(e) => {
                self.lost_claims
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(owner);
                return Err(e);
            }
        };
        if batch.is_empty() {
            return Ok(0);
        }
        metrics::histogram!("harborlist_claim_seconds").record(claiming.elapsed().as_secs_f64());
        let half = (batch.len() as i64 >= self.config.batch).then(|| {
            let next = self.claim_ahead();
            let go = Arc::clone(&next.go);
            *ahead = Some(next);
            (batch.len() / 2, go)
        });
        let composer = self.live.composer();
        // Each message is its own task, so that one message is composed while others wait on
        // the relay, and with `--threads` above 1 the work spreads over the threads. Each outcome is
        // recorded before its `unrecorded` permit is released: a message the relay accepted
        // but not yet recorded is then one of at most `concurrency`, which bounds the
        // repeats after a crash (recording the batch at its end would repeat everything the
        // batch had sent). The outcomes go to one recorder, which
        // commits whatever arrived while its last commit ran in a single transaction (group
        // commit): one writer instead of `concurrency` writers queueing for SQLite's lock,
        // and one commit for several messages.
        let owner: Arc<str> = owner.into();
        let (to_record, outcomes) = mpsc::unbounded_channel::<ToRecord>();
        // Lazily: a message's future is made only when `buffer_unordered` takes it. A
        // future holds a whole send's state, and making all of a 400-row claim's up front
        // cost 14 MB.
        let sends = batch.into_iter().enumerate().map(move |(i, c)| {
            if let Some((at, go)) = &half
                && i == *at
            {
                go.notify_one();
            }
            let (this, composer, to_record, shutdown) = (
                Arc::clone(self),
                composer.clone(),
                to_record.clone(),
                shutdown.clone(),
            );
            // A task that panicked recorded nothing; its row returns when the lease ends.
            async move {
                tokio::spawn(async move {
                    let mut permit = None;
                    let outcome = this.deliver(&composer, &c, &shutdown, &mut permit).await;
                    let (stored, answer) = oneshot::channel();
                    let record = ToRecord {
                        outcome,
                        permit,
                        stored,
                    };
                    to_record.send(record).is_ok() && answer.await.unwrap_or(false)
                })
                .await
                .unwrap_or(false)
            }
        });
        // Three tasks per connection: one on the wire, one queued behind it (see `sending`),
        // one composing. The recorder stops when `sends` is used up and dropped with its
        // `to_record`, after the last outcome is handed in.
        let work = stream::iter(sends)
            .buffer_unordered(self.config.concurrency.max(1) * 3)
            .collect::<Vec<bool>>();
        let owner = &*owner;
        // A batch can outlast the lease (a slow relay): renew it while we live, so that only a
        // dead sender's rows are re-queued, never those a live one is still sending. The
        // renewal runs alongside the sends (not between them): a paused send could be holding
        // the very lock the renewal waits for.
        let (handled, failure) = tokio::select! {
            (handled, failure) = futures_util::future::join(
                work,
                record_outcomes(&self.store, &self.clock, owner, outcomes, shutdown),
            ) => (handled.len(), failure),
            never = self.keep_lease(owner) => match never {},
        };
        match failure {
            Some(e) => Err(e),
            None => Ok(handled),
        }
    }

    /// Folds a chunk of this process's sent log into `deliveries` (see
    /// [`Store::settle_sent`]) and says whether more may be left. Folding waits until the
    /// sender is idle: during a mailing, the fold's row writes took the same two cores
    /// that the messages need (see the README). A failure is only logged: the log keeps
    /// its rows for the next try.
    async fn settle_chunk(&self) -> bool {
        match self.store.settle_own_sent_chunk().await {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(error = %e, "could not fold the sent log; will try again");
                false
            }
        }
    }

    /// Renews `owner`'s lease every third of it, until dropped.
    async fn keep_lease(&self, owner: &str) -> std::convert::Infallible {
        loop {
            tokio::time::sleep((self.config.lease / 3).max(Duration::from_millis(100))).await;
            let until = self.clock.now()
                + chrono::Duration::from_std(self.config.lease)
                    .unwrap_or(chrono::Duration::minutes(5));
            if let Err(e) = self.store.extend_lease(owner, to_millis(until)).await {
                tracing::warn!(error = %e, "could not renew the lease; those deliveries may be sent twice");
            }
        }
    }

    async fn release_lost_claims(&self) -> Result<(), crate::store::StoreError> {
        let owners: Vec<String> = self
            .lost_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for owner in owners {
            let released = self.store.release_claim(&owner).await?;
            if released > 0 {
                tracing::info!(
                    count = released,
                    "released deliveries from a claim whose answer was lost"
                );
            }
            self.lost_claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|o| o != &owner);
        }
        Ok(())
    }

    async fn deliver(
        &self,
        composer: &Composer,
        c: &Claimed,
        shutdown: &CancellationToken,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Outcome {
        let list_mail = is_list_mail(&c.mailing.kind);
        if let Some(reason) = self.skip_reason(c) {
            return Outcome::Skipped {
                delivery_id: c.delivery_id,
                reason,
            };
        }
        let mailing = &*c.mailing;
        let letter = Letter {
            mailing_key: &mailing.key,
            template: &mailing.template,
            list_mail,
            data: &mailing.data,
        };
        let recipient = Recipient {
            subscriber_id: c.subscriber_id,
            email: &c.email,
            name: c.name.as_deref(),
            unsub_nonce: &c.unsub_nonce,
        };
        let composed = match composer.compose(&letter, &recipient, self.clock.now()) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(mailing = %c.mailing.key, error = %e, "could not compose message");
                return Outcome::Failed {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                    error: e.to_string(),
                    bounce: false,
                };
            }
        };
        // Composing (CPU) happens before taking a sending turn, so the next messages are
        // rendered while the current ones are on the wire.
        let _sending = match self.sending.acquire().await {
            Ok(turn) => turn,
            Err(_) => {
                return Outcome::Released {
                    delivery_id: c.delivery_id,
                };
            }
        };
        if let Some(limiter) = &self.limiter {
            tokio::select! {
                _ = limiter.until_ready() => {}
                _ = shutdown.cancelled() => return Outcome::Released { delivery_id: c.delivery_id },
            }
        }
        if shutdown.is_cancelled() {
            return Outcome::Released {
                delivery_id: c.delivery_id,
            };
        }
        let started = Instant::now();
        // The transport takes an `unrecorded` permit before the relay can accept the message
        // and the caller holds it until the outcome is stored: at most `concurrency` messages
        // are ever accepted but not yet recorded, which bounds what a crash can repeat.
        let (result, permit) = self
            .transport
            .send_gated(
                &composed.envelope,
                &composed.bytes,
                &composed.message_id,
                &self.unrecorded,
            )
            .await;
        *slot = permit;
        metrics::histogram!("harborlist_send_seconds").record(started.elapsed().as_secs_f64());
        let to = redact(&c.email);
        match result {
            Ok(()) => {
                metrics::counter!("harborlist_messages_sent_total", "kind" => c.mailing.kind.clone())
                    .increment(1);
                tracing::debug!(mailing = %c.mailing.key, %to, "sent");
                Outcome::Sent {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                    clears_bounces: list_mail && c.bounce_streak != 0,
                }
            }
            Err(SendError::Permanent(error)) => {
                metrics::counter!("harborlist_messages_failed_total", "reason" => "permanent")
                    .increment(1);
                tracing::warn!(mailing = %c.mailing.key, %to, %error, "permanent failure; not retrying");
                Outcome::Failed {
                    delivery_id: c.delivery_id,
                    subscriber_id: c.subscriber_id,
                    error,
                    bounce: list_mail,
                }
            }
            Err(SendError::Transient(error)) => {
                let attempts = u32::try_from(c.attempts).unwrap_or(u32::MAX);
                if attempts >= self.config.max_attempts {
                    metrics::counter!("harborlist_messages_failed_total", "reason" => "retries_exhausted").increment(1);
                    tracing::warn!(mailing = %c.mailing.key, %to, %error, attempts, "giving up after repeated temporary failures");
                    return Outcome::Failed {
                        delivery_id: c.delivery_id,
                        subscriber_id: c.subscriber_id,
                        error,
                        bounce: false,
                    };
                }
                let delay = retry_delay(
                    attempts,
                    self.config.retry_base,
                    self.config.retry_max,
                    jitter(),
                );
                metrics::counter!("harborlist_messages_retried_total").increment(1);
                tracing::info!(mailing = %c.mailing.key, %to, %error, attempts, retry_in = ?delay, "temporary failure; will retry");
                let at = self.clock.now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(30));
                Outcome::Retry {
                    delivery_id: c.delivery_id,
                    at_ms: to_millis(at),
                    error,
                }
            }
        }
    }

    /// Reasons not to send a claimed delivery at all.
    fn skip_reason(&self, c: &Claimed) -> Option<String> {
        if let Some(deadline) = c.mailing.not_after_ms
            && to_millis(self.clock.now()) >= deadline
        {
            return Some("too late: the training has begun".into());
        }
        let wanted: &[&str] = match c.mailing.kind.as_str() {
            // A confirmation goes to whoever asked, unless they are already in.
            "confirm" => &["pending", "unsubscribed", "bouncing"],
            "goodbye" => &["unsubscribed"],
            _ => &["active"],
        };
        (!wanted.contains(&c.status.as_str())).then(|| format!("subscriber is {}", c.status))
    }
}
