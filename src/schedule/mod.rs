//! The planner: configuration and calendar in, due mailings fanned out.
//!
//! Each turn (woken by tokio-cron-scheduler's tick, by a known due instant, or by a
//! reload) it:
//!
//! 1. reconciles trainings ([`reconcile`]): records each upcoming session, bumps its
//!    iCalendar SEQUENCE when it changed, and queues an update or cancellation notice if
//!    reminders for it already went out;
//! 2. writes the reminder mailings the pure function [`plan::reminders`] says should exist,
//!    and cancels planned ones that no longer should;
//! 3. passes free seats on to the waiting lists ([`seats::refill`]): expired offers go to
//!    the next in line, and a capacity raised by a reload is offered out;
//! 4. fans out every due mailing ([`Planner::process_due`]) to its segment, applying the
//!    catch-up rules: never after its training has begun, of several overdue reminders for
//!    one training only the latest that reaches the same people ([`plan::superseded_by`]),
//!    and a last call to those not registered only while seats are left.
//!
//! Due instants are computed here, in UTC, from the calendar's zone, never by the cron
//! library, whose zone-aware jobs keep the UTC offset they were created with.

pub mod announcements;
pub mod content;
pub mod plan;
mod reconcile;
mod seats;

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::{
    clock::{SharedClock, from_millis, to_millis},
    health::Health,
    runtime::Live,
    store::{Store, StoreError},
};

/// Why a mailing whose training had begun was skipped, as `status` shows it.
const TOO_LATE: &str = "its training began before it could be sent";

/// Subscribers added to the delivery queue per transaction during fan-out.
const FANOUT_BATCH: i64 = 5_000;

/// What one planner turn did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TurnReport {
    pub planned: usize,
    pub cancelled: usize,
    pub notices: usize,
    pub fanned_out: usize,
    pub skipped: usize,
    /// Seats offered to waiting lists.
    pub offers: usize,
    pub locked_out: bool,
}

#[derive(Clone)]
pub struct Planner {
    store: Store,
    live: Live,
    clock: SharedClock,
    /// Wakes the sender after a fan-out.
    wake_sender: Arc<Notify>,
    /// Wakes the planner (tick, reload).
    wake: Arc<Notify>,
    /// Where finished turns are reported (`/healthz`).
    health: Health,
}

impl Planner {
    pub fn new(store: Store, live: Live, clock: SharedClock, wake_sender: Arc<Notify>) -> Self {
        Self {
            store,
            live,
            clock,
            wake_sender,
            wake: Arc::new(Notify::new()),
            health: Health::new(),
        }
    }

    /// Reports finished turns to `health` instead of a private one.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// The time on this planner's clock, for stamping a configuration as it is loaded.
    pub fn now_ms(&self) -> i64 {
        to_millis(self.clock.now())
    }

    /// Asks for a planning turn as soon as possible (after a reload, for instance).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    pub async fn run(self, shutdown: CancellationToken, tick: Duration) {
        // tokio-cron-scheduler only ticks; it never decides what is due.
        let scheduler = self.start_ticker(tick).await;
        while !shutdown.is_cancelled() {
            let nap = match self.turn().await {
                Ok(report) => {
                    self.health.planner_turned(to_millis(self.clock.now()));
                    if report != TurnReport::default() {
                        // The events themselves are logged where they happen.
                        tracing::debug!(?report, "planner turn");
                    }
                    self.until_next_due(tick).await
                }
                Err(e) => {
                    tracing::error!(error = %e, "planner turn failed; will retry");
                    Duration::from_secs(2).min(tick)
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        if let Some(mut scheduler) = scheduler {
            let _ = scheduler.shutdown().await;
        }
        tracing::info!("planner stopped");
    }

    async fn start_ticker(&self, tick: Duration) -> Option<JobScheduler> {
        let wake = self.wake.clone();
        let result = async {
            let scheduler = JobScheduler::new().await?;
            scheduler
                .add(Job::new_repeated(tick, move |_, _| wake.notify_one())?)
                .await?;
            scheduler.start().await?;
            Ok::<_, tokio_cron_scheduler::JobSchedulerError>(scheduler)
        }
        .await;
        match result {
            Ok(s) => Some(s),
            Err(e) => {
                // The loop still wakes on its own sleep; the ticker is a convenience.
                tracing::warn!(error = %e, "could not start the tick scheduler; relying on timed sleeps");
                None
            }
        }
    }

    /// Sleep until the earliest planned mailing falls due, but at most one tick.
    async fn until_next_due(&self, tick: Duration) -> Duration {
        let now = to_millis(self.clock.now());
        match self.store.next_planned_due().await {
            Ok(Some(due)) if due > now => Duration::from_millis((due - now) as u64 + 5).min(tick),
            Ok(Some(_)) => Duration::from_millis(50),
            _ => tick,
        }
    }

    /// One planning turn. Public so tests can drive it with a manual clock.
    pub async fn turn(&self) -> Result<TurnReport, StoreError> {
        let Some(lock) = self.store.try_planner_lock().await? else {
            return Ok(TurnReport {
                locked_out: true,
                ..TurnReport::default()
            });
        };
        let mut report = TurnReport::default();
        let result = async {
            reconcile::trainings(self, &mut report).await?;
            announcements::reconcile(self, &mut report).await?;
            seats::refill(self, &mut report).await?;
            self.process_due(&mut report).await
        }
        .await;
        lock.release().await;
        result.map(|()| report)
    }

    /// Fans out what is due, or closes it if it is too late.
    async fn process_due(&self, report: &mut TurnReport) -> Result<(), StoreError> {
        let now = self.clock.now();
        let now_ms = to_millis(now);
        let mut due = self.store.due_mailings(now_ms).await?;
        // How late the planner is running: the age of the oldest due mailing not yet fanned
        // out (0 when nothing is waiting).
        let lag = due
            .iter()
            .filter(|m| m.state == "planned")
            .map(|m| (now - from_millis(m.due_ms)).num_milliseconds().max(0) as f64 / 1000.0)
            .fold(0.0, f64::max);
        metrics::gauge!("harborlist_scheduler_lag_seconds").set(lag);
        seats::skip_when_full(self, &mut due, now_ms, report).await?;
        for m in &due {
            if m.state == "skipped" {
                continue;
            }
            if m.state == "planned" {
                if announcements::skip_if_late(self, m, now_ms, report).await? {
                    continue;
                }
                if m.not_after_ms.is_some_and(|na| na <= now_ms) {
                    tracing::warn!(mailing = %m.key, "skipped: its training began before it could be sent");
                    self.store.skip_planned(m.id, TOO_LATE, now_ms).await?;
                    report.skipped += 1;
                    continue;
                }
                if let Some(later) = plan::superseded_by(m, &due) {
                    tracing::info!(mailing = %m.key, by = %later, "skipped: a later reminder for the same training is also due");
                    let reason = plan::superseded_reason(&later);
                    self.store.skip_planned(m.id, &reason, now_ms).await?;
                    report.skipped += 1;
                    continue;
                }
            }
            let mut recipients = 0;
            loop {
                let added = self.store.fan_out_batch(m.id, FANOUT_BATCH, now_ms).await?;
                if added == 0 {
                    break;
                }
                recipients += added;
                self.wake_sender.notify_one();
            }
            report.fanned_out += 1;
            tracing::info!(mailing = %m.key, recipients, "mailing started: queued for its recipients");
        }
        Ok(())
    }
}
