//! What the planner would write now, worked out without writing anything: so that `status`
//! shows the January invitation as scheduled before the daemon has ever run (or since an
//! edit it has not seen yet), not "(none planned)".
//!
//! The same pure functions the planner uses decide it ([`plan::reminders`],
//! [`announcements::mailing`]), over the same window (`schedule.horizon`), and the same
//! catch-up rules leave out what the planner would close at once rather than send: an
//! announcement further than `announcements.max_late` past its `send_at`, a mailing whose
//! training has begun, an overdue reminder that a later one for the same training
//! supersedes.

use chrono::{DateTime, Utc};

use crate::{
    calendar::Calendar,
    clock::to_millis,
    config::Settings,
    schedule::{announcements, content, plan},
    store::queue::{MailingRow, PlannedMailing},
};

/// The list mailings the planner would plan at `now` and still send, soonest first.
pub fn would_plan(
    settings: &Settings,
    calendar: &Calendar,
    now: DateTime<Utc>,
) -> Vec<PlannedMailing> {
    let now_ms = to_millis(now);
    let horizon = settings.schedule.horizon.after(now);
    // The SEQUENCE only goes into the message; which mailings exist does not depend on it.
    let sessions: Vec<_> = calendar
        .sessions_between(now, horizon)
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    let prodid = content::prodid(&settings.list.name);
    let mut out = plan::reminders(
        &sessions,
        &settings.reminders,
        settings.registration.mode,
        now,
        &prodid,
    );
    let max_late = settings.announcement_rules.max_late.chrono();
    out.extend(
        settings
            .announcements
            .iter()
            .filter(|a| a.send_late || now - announcements::due(a, calendar) <= max_late)
            .map(|a| announcements::mailing(a, settings, calendar, 0)),
    );
    out.retain(|m| m.not_after_ms.is_none_or(|t| t > now_ms));
    let superseded = superseded(&out, now_ms);
    out.retain(|m| !superseded.contains(&m.key));
    out.sort_by(|a, b| (a.due_ms, &a.key).cmp(&(b.due_ms, &b.key)));
    out
}

/// Keys of the overdue ones a later overdue reminder for the same training goes instead of.
fn superseded(mailings: &[PlannedMailing], now_ms: i64) -> Vec<String> {
    let due: Vec<MailingRow> = mailings
        .iter()
        .filter(|m| m.due_ms <= now_ms)
        .zip(0..)
        .map(|(m, id)| MailingRow {
            id,
            key: m.key.clone(),
            kind: m.kind.clone(),
            state: "planned".into(),
            due_ms: m.due_ms,
            not_after_ms: m.not_after_ms,
            data: String::new(),
            training: m.training.clone(),
            segment: m.segment,
        })
        .collect();
    due.iter()
        .filter(|m| plan::superseded_by(m, &due).is_some())
        .map(|m| m.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        crate::config::load_from(std::path::Path::new("config"), None).expect("defaults load")
    }

    fn keys(at: &str) -> Vec<String> {
        let s = settings();
        let calendar = s.calendar().expect("calendar");
        would_plan(&s, &calendar, at.parse().expect("instant"))
            .into_iter()
            .map(|m| m.key)
            .collect()
    }

    #[test]
    fn before_anything_ran_the_next_invitation_is_planned() {
        let keys = keys("2026-12-01T12:00:00Z");
        let domain = "trainings.harborlist.example.org";
        assert_eq!(
            keys[..2],
            [
                format!("reminder:training-20270120@{domain}:invitation"),
                format!("reminder:training-20270120@{domain}:reminder"),
            ]
        );
    }

    #[test]
    fn an_overdue_invitation_is_kept_and_a_begun_training_has_none() {
        // Jan 5: the invitation (due Dec 30) is overdue but would still go; the reminder
        // (for those registered) does not supersede it.
        let overdue = keys("2027-01-05T12:00:00Z");
        assert!(
            overdue[0].ends_with("training-20270120@trainings.harborlist.example.org:invitation"),
            "{overdue:?}"
        );
        // Once the January training has begun, nothing for it.
        let begun = keys("2027-01-20T17:30:00Z");
        assert!(begun.iter().all(|k| !k.contains("20270120")), "{begun:?}");
    }
}
