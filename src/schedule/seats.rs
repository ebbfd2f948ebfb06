//! The planner's part in registration: each turn it passes seats on, and it holds back a
//! last call to those not registered once nobody could take a seat any more.
//!
//! * [`refill`]: for every session with people waiting or holding an offer, expire the
//!   offers that ran out and offer the free seats to the next in line
//!   ([`Store::refill`](crate::store::Store::refill)). A capacity raised by a reload, an
//!   offer that expired unclaimed and a seat given up while the planner was away are all the
//!   same case: free seats and people waiting. Offers are mail written in the same
//!   transaction, so the sender is woken when any were made.
//! * [`skip_when_full`]: an `unregistered` reminder is "sent only while seats are left",
//!   so at its fan-out time a session with none left closes it as `skipped`, with the
//!   reason `status` shows.

use super::{Planner, TurnReport, content};
use crate::{
    clock::to_millis,
    config::RegistrationMode,
    store::{
        StoreError,
        queue::{MailingRow, Segment},
    },
};

/// A day after the close every offer has long been expired by an earlier turn (offers end
/// at the close at the latest), so sessions further past it are left alone: their
/// waiting lists stay as they were, for the record, and cost no write each turn.
const AFTER_CLOSE_MS: i64 = 86_400_000;

/// Passes free seats on to the waiting lists (see the module's doc).
pub async fn refill(p: &Planner, report: &mut TurnReport) -> Result<(), StoreError> {
    let runtime = p.live.current();
    // With registration taken elsewhere, harborlist offers no seats (not even from a
    // waiting list left from before the switch).
    if runtime.settings.registration.mode != RegistrationMode::Harborlist {
        return Ok(());
    }
    let now = p.clock.now();
    let now_ms = to_millis(now);
    for id in p.store.sessions_with_waiting_list().await? {
        // A session gone from the calendar was cancelled (reconcile told its people), and
        // a cancelled one has no seats to give.
        let Some(session) = runtime.calendar.session_by_id(&id) else {
            continue;
        };
        if session.cancelled {
            continue;
        }
        let sequence = p
            .store
            .training(&session.uid)
            .await?
            .map_or(0, |t| u32::try_from(t.sequence).unwrap_or(0));
        let seats = content::seats(&runtime.settings, &session, sequence, now);
        if now_ms >= seats.closes_at_ms.saturating_add(AFTER_CLOSE_MS) {
            continue;
        }
        let made = p.store.refill(&seats, now_ms).await?;
        if made > 0 {
            tracing::info!(training = %id, offers = made, "seats offered to the waiting list");
            report.offers += usize::try_from(made).unwrap_or(usize::MAX);
            p.wake_sender.notify_one();
        }
    }
    Ok(())
}

/// Closes each due, still planned `unregistered` mailing whose session has no seat left,
/// and marks it so in `due` (so that it supersedes nothing this turn).
pub async fn skip_when_full(
    p: &Planner,
    due: &mut [MailingRow],
    now_ms: i64,
    report: &mut TurnReport,
) -> Result<(), StoreError> {
    // One whose training has begun is left for process_due to skip as too late.
    let wanted = |m: &MailingRow| {
        m.state == "planned"
            && m.segment == Some(Segment::Unregistered)
            && m.not_after_ms.is_none_or(|t| t > now_ms)
    };
    if !due.iter().any(wanted) {
        return Ok(());
    }
    let runtime = p.live.current();
    let counts = p.store.seat_counts().await?;
    for m in due.iter_mut().filter(|m| wanted(m)) {
        let Some(session) = m
            .training
            .as_deref()
            .and_then(|id| runtime.calendar.session_by_id(id))
        else {
            continue;
        };
        let c = counts.get(&session.id).copied().unwrap_or_default();
        if c.left(session.capacity) > 0 {
            continue;
        }
        let reason = format!(
            "no seats left: {} of {} taken ({} waiting); a last call goes only while seats are left",
            c.taken(),
            session.capacity,
            c.waitlisted
        );
        if p.store.skip_planned(m.id, &reason, now_ms).await? {
            tracing::info!(mailing = %m.key, %reason, "skipped");
            report.skipped += 1;
        }
        m.state = "skipped".into();
    }
    Ok(())
}
