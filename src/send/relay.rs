//! The relay's health as the sender sees it, and the whole sender's pause while it fails.
//!
//! Every message's outcome passes through here. A relay fault (a failure before `RCPT`: a
//! wrong password, a TLS setting, a relay that is down or silent) says nothing about the
//! recipient, so instead of spending one attempt per message the sender holds *all* mail:
//! a pause of `mail.retry_base`, doubling with each pause that ends in another fault, up to
//! `mail.retry_max`, and over as soon as a message goes. The operator hears of it at once:
//! one ERROR line when the relay starts failing (an INFO line when it recovers), the gauge
//! `harborlist_relay_up`, and the state in [`Health`], persisted as JSON under
//! `service_state` name [`RELAY_STATE`] so that `harborlist status` in another process
//! shows it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    clock::{SharedClock, to_millis},
    config::{MailSettings, TransportKind},
    health::{Health, RelayState},
    mail::{
        SendError,
        redact::{redact_addresses, redacted_url},
    },
    store::Store,
};

/// The `service_state` row that holds the relay's [`crate::health::RelayStatus`] as JSON.
pub const RELAY_STATE: &str = "relay";

/// The gauge: 1 while the relay takes mail, 0 while it fails.
const RELAY_UP: &str = "harborlist_relay_up";

pub(super) struct RelayWatch {
    health: Health,
    store: Store,
    clock: SharedClock,
    /// The setting to check, and its value as it may be shown (password hidden).
    setting: &'static str,
    shown: String,
    base: Duration,
    max: Duration,
    pause: Mutex<Pause>,
    /// Orders the writes of the persisted state: each takes the newest state once it holds
    /// this, so the last write is never an older state.
    persisting: tokio::sync::Mutex<()>,
}

/// The sender's pause: until when, and how many pauses in a row ended in another fault.
#[derive(Debug, Default)]
struct Pause {
    until: Option<Instant>,
    faults: u32,
    /// Nothing has failed since the relay was last seen working and recorded as such.
    steady: bool,
}

impl RelayWatch {
    pub(super) fn new(
        mail: &MailSettings,
        health: Health,
        store: Store,
        clock: SharedClock,
        base: Duration,
        max: Duration,
    ) -> Self {
        let (setting, shown) = match mail.transport {
            TransportKind::Smtp => ("mail.smtp_url", redacted_url(mail.relay_url())),
            TransportKind::File => ("mail.outbox_dir", mail.outbox_dir.display().to_string()),
        };
        Self {
            health,
            store,
            clock,
            setting,
            shown,
            base,
            max,
            pause: Mutex::new(Pause::default()),
            persisting: tokio::sync::Mutex::new(()),
        }
    }

    /// Shows the relay as up until a message says otherwise: the gauge exists from the
    /// start, so that an alert on it can tell "failing" from "not reported".
    pub(super) fn start(&self) {
        let up = self.health.relay().state == RelayState::Ok;
        metrics::gauge!(RELAY_UP).set(if up { 1.0 } else { 0.0 });
    }

    /// How much longer the sender holds all mail, if it does.
    pub(super) fn paused_for(&self) -> Option<Duration> {
        self.paused_at(Instant::now())
    }

    fn paused_at(&self, now: Instant) -> Option<Duration> {
        let pause = self.lock();
        let left = pause.until?.checked_duration_since(now)?;
        (!left.is_zero()).then_some(left)
    }

    pub(super) fn is_paused(&self) -> bool {
        self.paused_for().is_some()
    }

    /// A message failed before `RCPT`. Starts a pause unless one is running (messages that
    /// were already on their way when it began fail too, and must not lengthen it), and
    /// reports the relay as failing.
    pub(super) fn fault(self: &Arc<Self>, e: &SendError) {
        self.fault_at(e, Instant::now());
    }

    fn fault_at(self: &Arc<Self>, e: &SendError, now: Instant) {
        let reply = relay_reply(e);
        let summary = format!("{}: {reply}", e.stage);
        // The pause, the health and the gauge change together, under the pause's lock, so
        // that a success racing a fault can't leave one saying "ok" and another "failing".
        let (pause, newly, changed) = {
            let mut pause = self.lock();
            pause.steady = false;
            let started = self.start_pause(&mut pause, now);
            let before = self.health.relay().last_error;
            let newly = self
                .health
                .relay_failing(to_millis(self.clock.now()), summary.clone());
            if newly {
                metrics::gauge!(RELAY_UP).set(0.0);
            }
            (started, newly, before.as_deref() != Some(summary.as_str()))
        };
        let stage = e.stage.as_str();
        if newly {
            tracing::error!(
                stage,
                reply = %reply,
                relay = %self.shown,
                retry_in = ?pause,
                "the mail relay is failing at {stage}: {reply}. No mail goes out until it answers, \
                 and no subscriber is held responsible. Check {} ({})",
                self.setting,
                self.shown
            );
        } else if let Some(pause) = pause {
            tracing::warn!(stage, reply = %reply, retry_in = ?pause, "the mail relay is still failing; holding all mail");
        }
        if newly || changed {
            self.persist();
        }
    }

    /// The relay took a message, or answered about a recipient: it works. Ends any pause.
    /// Called for every message sent, so the steady case is one uncontended lock.
    pub(super) fn ok(self: &Arc<Self>) {
        let before = {
            let mut pause = self.lock();
            if pause.steady {
                return;
            }
            *pause = Pause {
                steady: true,
                ..Pause::default()
            };
            let before = self.health.relay_ok(to_millis(self.clock.now()));
            if before.is_some() {
                metrics::gauge!(RELAY_UP).set(1.0);
            }
            before
        };
        let Some(before) = before else { return };
        if before.state == RelayState::Failing {
            tracing::info!(
                relay = %self.shown,
                "the mail relay takes mail again; sending resumes"
            );
        }
        self.persist();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pause> {
        self.pause.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a pause if none is running, and returns its length.
    fn start_pause(&self, pause: &mut Pause, now: Instant) -> Option<Duration> {
        if pause.until.is_some_and(|until| until > now) {
            return None;
        }
        pause.faults = pause.faults.saturating_add(1);
        let doubling = 1u32 << (pause.faults - 1).min(30);
        let length = self.base.saturating_mul(doubling).min(self.max);
        pause.until = Some(now + length);
        Some(length)
    }

    /// Writes the relay's current state to `service_state`, in the background: the message
    /// that noticed the change is not held up by the database.
    fn persist(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _turn = this.persisting.lock().await;
            let status = this.health.relay();
            let json = match serde_json::to_string(&status) {
                Ok(json) => json,
                Err(e) => {
                    tracing::warn!(error = %e, "could not encode the relay's state");
                    return;
                }
            };
            let now = to_millis(this.clock.now());
            if let Err(e) = this.store.set_state(RELAY_STATE, &json, now).await {
                tracing::warn!(error = %e, "could not store the relay's state for `harborlist status`");
            }
        });
    }
}

/// The relay's answer as staff may read it: its code and text, or what happened instead,
/// with any address in it shortened.
pub(super) fn relay_reply(e: &SendError) -> String {
    let text = redact_addresses(&e.text);
    match e.code {
        Some(code) => format!("{code} {text}"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::transport::Stage;

    async fn watch(base_ms: u64, max_ms: u64) -> (Arc<RelayWatch>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let store = Store::connect(&url, 1).await.expect("store");
        let mut mail = crate::config::load_from(std::path::Path::new("config"), None)
            .expect("defaults")
            .mail;
        mail.transport = TransportKind::Smtp;
        mail.smtp_url = Some("smtp://u:hunter2@relay.example.org:587".into());
        let watch = RelayWatch::new(
            &mail,
            Health::new(),
            store,
            Arc::new(crate::clock::SystemClock),
            Duration::from_millis(base_ms),
            Duration::from_millis(max_ms),
        );
        (Arc::new(watch), dir)
    }

    #[tokio::test]
    async fn pauses_double_up_to_the_limit_and_a_success_ends_them() {
        let (w, _dir) = watch(100, 350).await;
        let auth = SendError::reply(Stage::Auth, 535, "5.7.8 bad credentials");
        let mut lengths = Vec::new();
        let mut now = Instant::now();
        for _ in 0..4 {
            w.fault_at(&auth, now);
            // Faults of messages already under way do not lengthen the pause.
            w.fault_at(&auth, now + Duration::from_millis(10));
            let left = w.paused_at(now).expect("paused");
            lengths.push(left.as_millis());
            now += left;
            assert_eq!(w.paused_at(now), None);
        }
        assert_eq!(lengths, vec![100, 200, 350, 350]);
        let status = w.health.relay();
        assert_eq!(status.state, RelayState::Failing);
        assert_eq!(
            status.last_error.as_deref(),
            Some("AUTH: 535 5.7.8 bad credentials")
        );
        w.fault_at(&auth, now);
        w.ok();
        assert_eq!(w.paused_at(now), None, "a message that went ends the pause");
        assert_eq!(w.health.relay().state, RelayState::Ok);
        w.fault_at(&auth, now);
        assert_eq!(w.paused_at(now).map(|d| d.as_millis()), Some(100));
    }

    #[test]
    fn replies_are_shown_without_addresses() {
        let e = SendError::reply(
            Stage::Mail,
            554,
            "5.7.1 <list@example.org>: Sender rejected",
        );
        assert_eq!(relay_reply(&e), "554 5.7.1 <l…@e…org>: Sender rejected");
        let e = SendError::no_reply(Stage::Greeting, "no answer from the relay within 1s");
        assert_eq!(relay_reply(&e), "no answer from the relay within 1s");
    }
}
