//! The process's own health, as `/healthz`, `/metrics` and `harborlist status` report it.
//!
//! One [`Health`] is shared by the supervised tasks: the sender reports the relay's state,
//! the planner each finished turn, and the supervisor a task that stopped. Readers take a
//! snapshot; nothing here blocks for long or touches the database (the sender persists the
//! relay state itself, so that `status` in another process can show it).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicI64, Ordering},
};

use serde::{Deserialize, Serialize};

/// Whether the mail relay takes mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayState {
    Ok,
    Failing,
}

/// The relay's state, since when (UTC milliseconds; `None` before anything was sent), and
/// the last relay fault as staff read it (stage and reply, addresses and passwords hidden).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStatus {
    pub state: RelayState,
    pub since_ms: Option<i64>,
    pub last_error: Option<String>,
}

impl Default for RelayStatus {
    fn default() -> Self {
        Self {
            state: RelayState::Ok,
            since_ms: None,
            last_error: None,
        }
    }
}

/// How reading `bounces.imap_url` goes: whether the last session logged in, how many
/// sessions failed in a row, and the last failure in words (never the password).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxStatus {
    pub up: bool,
    pub failures_in_a_row: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    relay: Mutex<RelayStatus>,
    mailbox: Mutex<MailboxStatus>,
    stopped: Mutex<Option<String>>,
    /// When the planner last finished a turn (UTC ms); 0 before the first.
    planner_turn_ms: AtomicI64,
    /// When the service started (UTC ms): the planner's first turn is due from then.
    started_ms: AtomicI64,
    /// Planner turns finished so far, so a test can wait for the next one.
    planner_turns: std::sync::atomic::AtomicU64,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn relay(&self) -> RelayStatus {
        self.inner
            .relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that the relay took a message (or answered past `RCPT`). Returns the status
    /// before, if this changed the state, so the caller can log and persist the change.
    pub fn relay_ok(&self, now_ms: i64) -> Option<RelayStatus> {
        let mut relay = self.inner.relay.lock().unwrap_or_else(|p| p.into_inner());
        if relay.state == RelayState::Ok && relay.since_ms.is_some() {
            return None;
        }
        let before = relay.clone();
        *relay = RelayStatus {
            state: RelayState::Ok,
            since_ms: Some(now_ms),
            last_error: before.last_error.clone(),
        };
        Some(before)
    }

    /// Records a relay fault. Returns true if the relay was not already failing.
    pub fn relay_failing(&self, now_ms: i64, error: String) -> bool {
        let mut relay = self.inner.relay.lock().unwrap_or_else(|p| p.into_inner());
        let newly = relay.state != RelayState::Failing;
        if newly {
            relay.state = RelayState::Failing;
            relay.since_ms = Some(now_ms);
        }
        relay.last_error = Some(error);
        newly
    }

    /// The bounce mailbox reader's state.
    pub fn mailbox(&self) -> MailboxStatus {
        self.inner
            .mailbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that the bounce mailbox reader logged in and is reading.
    pub fn mailbox_up(&self) {
        let mut m = self.inner.mailbox.lock().unwrap_or_else(|p| p.into_inner());
        m.up = true;
        m.failures_in_a_row = 0;
    }

    /// Records a failed session with the bounce mailbox.
    pub fn mailbox_failed(&self, error: String) {
        let mut m = self.inner.mailbox.lock().unwrap_or_else(|p| p.into_inner());
        m.up = false;
        m.failures_in_a_row += 1;
        m.last_error = Some(error);
    }

    /// Records that a supervised task ended, and why. The first one is kept.
    pub fn task_stopped(&self, task: &str, why: &str) {
        let mut stopped = self.inner.stopped.lock().unwrap_or_else(|p| p.into_inner());
        stopped.get_or_insert_with(|| format!("the {task} stopped: {why}"));
    }

    /// Why the service is no longer whole, if a task has stopped.
    pub fn stopped(&self) -> Option<String> {
        self.inner
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notes when the service started, from which the planner's first turn is expected.
    pub fn set_started(&self, now_ms: i64) {
        self.inner.started_ms.store(now_ms, Ordering::Relaxed);
    }

    /// How long the planner has gone without finishing a turn (since the start, before the
    /// first), in milliseconds.
    pub fn planner_silent_for_ms(&self, now_ms: i64) -> i64 {
        let since = self
            .last_planner_turn_ms()
            .unwrap_or_else(|| self.inner.started_ms.load(Ordering::Relaxed));
        now_ms.saturating_sub(since).max(0)
    }

    pub fn planner_turned(&self, now_ms: i64) {
        self.inner.planner_turn_ms.store(now_ms, Ordering::Relaxed);
        self.inner.planner_turns.fetch_add(1, Ordering::Release);
    }

    /// How many planner turns have finished since the start.
    pub fn planner_turns(&self) -> u64 {
        self.inner.planner_turns.load(Ordering::Acquire)
    }

    /// When the planner last finished a turn, if it has.
    pub fn last_planner_turn_ms(&self) -> Option<i64> {
        let ms = self.inner.planner_turn_ms.load(Ordering::Relaxed);
        (ms != 0).then_some(ms)
    }
}
