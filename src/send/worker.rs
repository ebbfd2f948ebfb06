//! The claim → send → record loop.
//!
//! [`Sender::run`] loops: re-queue expired leases now and then, take a turn, and when a turn
//! finds nothing, fold the sent log a chunk at a time and nap until the next retry is due. A
//! turn takes a batch (claimed now or ahead, see `claims.rs`), runs one task per message
//! (`deliver.rs`), and hands every outcome to the turn's recorder (`super::record`). While
//! the relay is failing (`super::relay`) the loop claims nothing and only waits out the pause.

mod claims;
mod deliver;

use std::{
    num::NonZeroU32,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::claims::Ahead;
use super::{
    record::{ToRecord, record_outcomes},
    relay::RelayWatch,
};
use crate::{
    clock::{SharedClock, to_millis},
    health::Health,
    mail::Transport,
    runtime::Live,
    store::Store,
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
    /// The relay's state (reported to `/healthz`, `/metrics` and `status`) and the pause
    /// of all sending while it fails.
    relay: Arc<RelayWatch>,
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
        let relay = Arc::new(RelayWatch::new(
            &live.settings().mail,
            Health::new(),
            store.clone(),
            clock.clone(),
            config.retry_base,
            config.retry_max,
        ));
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
            relay,
        }
    }

    /// Reports the relay's state to `health` instead of a private one.
    pub fn with_health(mut self, health: Health) -> Self {
        self.relay = Arc::new(RelayWatch::new(
            &self.live.settings().mail,
            health,
            self.store.clone(),
            self.clock.clone(),
            self.config.retry_base,
            self.config.retry_max,
        ));
        self
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
        self.relay.start();
        while !shutdown.is_cancelled() {
            if let Some(left) = self.relay.paused_for() {
                // The relay is failing: nothing is claimed, and a batch claimed ahead goes
                // back to the queue rather than sit in `sending` for the whole pause.
                if let Some(ahead) = ahead.take() {
                    self.give_back(ahead).await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(left) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
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
        // Every message is recorded: end the relay sessions politely (QUIT), bounded by the
        // SMTP timeout.
        self.transport.close().await;
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

    /// One claim → send → record cycle. Returns how many deliveries it handled.
    ///
    /// A full batch means more is probably waiting, so the next batch is claimed while this
    /// one is half handed out (`ahead`), and the wire does not stop for the claim, which on
    /// PostgreSQL was a large share of a run.
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
        let rules = self.live.current().bounce_rules();
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
                record_outcomes(&self.store, &self.clock, owner, outcomes, &rules, shutdown),
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
}
