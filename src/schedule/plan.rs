//! Pure planning: which reminder mailings should exist, given the calendar, the reminder
//! settings and the time, who of the list each goes to, and which overdue one is
//! superseded by a later one. No I/O here, so every rule is testable with plain values.

use chrono::{DateTime, Days, TimeZone, Utc};
use chrono_tz::Tz;

use super::content;
use crate::{
    calendar::Session,
    clock::to_millis,
    config::{Audience, RegistrationMode, ReminderSettings},
    domain::HumanDuration,
    store::queue::{MailingRow, PlannedMailing, Segment},
};

/// The key that makes a reminder go out once per (training, reminder).
pub fn reminder_key(uid: &str, reminder: &str) -> String {
    format!("reminder:{uid}:{reminder}")
}

/// Who of the list a reminder with this audience goes to. With registration elsewhere
/// (`registration.mode = "external"`) harborlist does not know who registered, so every
/// audience is the whole list (`check` warns about such a reminder).
pub fn segment(audience: Audience, mode: RegistrationMode) -> Option<Segment> {
    match (mode, audience) {
        (RegistrationMode::External, _) | (_, Audience::List) => None,
        (RegistrationMode::Harborlist, Audience::Registered) => Some(Segment::Registered),
        (RegistrationMode::Harborlist, Audience::Unregistered) => Some(Segment::Unregistered),
    }
}

/// Reminder mailings for the sessions that have not begun, each due `before` its start
/// and never sent once it has started, to its audience's segment. Cancelled sessions get
/// none.
pub fn reminders(
    sessions: &[(Session, u32)],
    reminders: &[ReminderSettings],
    mode: RegistrationMode,
    now: DateTime<Utc>,
    prodid: &str,
) -> Vec<PlannedMailing> {
    let mut out = Vec::new();
    for (session, sequence) in sessions {
        let start = session.start.with_timezone(&Utc);
        if session.cancelled || start <= now {
            continue;
        }
        for r in reminders {
            let due = due_at(session.start, r.before);
            // DTSTAMP is the due time, not "now": the planned row must not change on every
            // turn, and the invitation is created, for the reader, when it is sent.
            let data = content::reminder_data(session, *sequence, due, prodid, r);
            out.push(PlannedMailing {
                key: reminder_key(&session.uid, &r.name),
                kind: "reminder".into(),
                template: r.template.clone(),
                data,
                due_ms: to_millis(due),
                not_after_ms: Some(to_millis(start)),
                training: Some(session.id.clone()),
                segment: segment(r.audience, mode),
            });
        }
    }
    out
}

/// When a reminder `before` a start falls due. Whole days count on the calendar ("21d"
/// before 11:00 is 11:00 local, three weeks earlier, even across a DST change); anything
/// else ("90m") is an exact duration.
pub fn due_at(start: DateTime<Tz>, before: HumanDuration) -> DateTime<Utc> {
    let exact = before.std();
    if exact.subsec_nanos() == 0 && exact.as_secs() > 0 && exact.as_secs().is_multiple_of(86_400) {
        let local = start
            .naive_local()
            .checked_sub_days(Days::new(exact.as_secs() / 86_400));
        if let Some(t) = local.and_then(|l| start.timezone().from_local_datetime(&l).earliest()) {
            return t.with_timezone(&Utc);
        }
    }
    before.before(start.with_timezone(&Utc))
}

/// If `m` is an overdue reminder and a later reminder for the same training is also due,
/// and reaches the people `m` is still for, the later one's key: sending both at once
/// after downtime would be noise.
///
/// Audiences differ, so a later reminder supersedes only one it covers ([`covers`]): a
/// list invitation is not superseded by a reminder to those registered (the people who have
/// not registered yet would then hear nothing), nor is a reminder to those registered by
/// anything else. Mailings the planner has closed already (an `unregistered` one skipped
/// for want of seats) are not in `planned` state and so supersede nothing.
pub fn superseded_by(m: &MailingRow, due: &[MailingRow]) -> Option<String> {
    let training = reminder_training(&m.key)?;
    due.iter()
        .filter(|o| o.id != m.id && o.state == "planned")
        .filter(|o| reminder_training(&o.key) == Some(training))
        .filter(|o| o.due_ms > m.due_ms)
        .find(|o| covers(o.segment, m.segment))
        .map(|o| o.key.clone())
}

/// Why a reminder superseded by the one keyed `later` was skipped, as `status` shows it.
pub fn superseded_reason(later: &str) -> String {
    let name = later.rsplit_once(':').map_or(later, |(_, name)| name);
    format!("the later {name:?} reminder for the same training was due too, and went instead")
}

/// Whether a later mailing to `later` reaches everyone an earlier one to `earlier` still
/// means something to. The same audience does; so does the whole list for those not
/// registered (it is more people); and those not registered stand for the whole list where
/// an invitation is concerned, since the rest of the list has already registered or is
/// waiting. Those registered are their own audience both ways.
fn covers(later: Option<Segment>, earlier: Option<Segment>) -> bool {
    match (later, earlier) {
        (a, b) if a == b => true,
        (None, Some(Segment::Unregistered)) | (Some(Segment::Unregistered), None) => true,
        _ => false,
    }
}

/// `reminder:<uid>:<name>` → `<uid>` (UIDs contain `@` and `-` but never `:`).
fn reminder_training(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("reminder:")?;
    rest.rsplit_once(':').map(|(uid, _)| uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, key: &str, due_ms: i64) -> MailingRow {
        MailingRow {
            id,
            key: key.into(),
            kind: "reminder".into(),
            state: "planned".into(),
            due_ms,
            not_after_ms: None,
            data: "{}".into(),
            training: None,
            segment: None,
        }
    }

    #[test]
    fn whole_days_keep_the_local_time_across_dst() {
        let start = chrono_tz::America::Chicago
            .with_ymd_and_hms(2027, 3, 17, 11, 0, 0)
            .unwrap();
        let d = |s: &str| s.parse::<HumanDuration>().unwrap();
        // 21 days before 11:00 CDT is 11:00 CST (17:00 UTC), not 10:00 CST.
        assert_eq!(
            due_at(start, d("21d")),
            "2027-02-24T17:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            due_at(start, d("2d")),
            "2027-03-15T16:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            due_at(start, d("90m")),
            "2027-03-17T14:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn only_the_latest_overdue_reminder_of_a_training_goes_out() {
        let a = row(1, "reminder:training-20270120@x.org:invitation", 10);
        let b = row(2, "reminder:training-20270120@x.org:reminder", 20);
        let c = row(3, "reminder:training-20270317@x.org:invitation", 5);
        let due = vec![a.clone(), b.clone(), c.clone()];
        assert_eq!(superseded_by(&a, &due), Some(b.key.clone()));
        assert_eq!(superseded_by(&b, &due), None);
        assert_eq!(superseded_by(&c, &due), None);
        assert_eq!(superseded_by(&row(4, "announcement:x", 1), &due), None);
    }

    #[test]
    fn a_later_reminder_supersedes_only_one_whose_audience_it_covers() {
        let at = |id, name: &str, due, segment| MailingRow {
            segment,
            ..row(id, &format!("reminder:training-20270120@x.org:{name}"), due)
        };
        let invite = at(1, "invitation", 10, None);
        let last_call = at(2, "last-call", 20, Some(Segment::Unregistered));
        let remind = at(3, "reminder", 30, Some(Segment::Registered));
        // The registered-only reminder covers nobody else.
        let due = vec![invite.clone(), remind.clone()];
        assert_eq!(superseded_by(&invite, &due), None);
        assert_eq!(superseded_by(&remind, &due), None);
        // The last call to those not registered covers the invitation.
        let due = vec![invite.clone(), last_call.clone(), remind.clone()];
        assert_eq!(superseded_by(&invite, &due), Some(last_call.key.clone()));
        assert_eq!(superseded_by(&last_call, &due), None);
        // Once skipped (no seats left) it supersedes nothing.
        let skipped = MailingRow {
            state: "skipped".into(),
            ..last_call.clone()
        };
        assert_eq!(
            superseded_by(&invite, &[invite.clone(), skipped, remind]),
            None
        );
    }

    #[test]
    fn audiences_become_segments_only_when_harborlist_takes_registrations() {
        use Audience::*;
        use RegistrationMode::*;
        assert_eq!(segment(List, Harborlist), None);
        assert_eq!(segment(Registered, Harborlist), Some(Segment::Registered));
        assert_eq!(
            segment(Unregistered, Harborlist),
            Some(Segment::Unregistered)
        );
        for a in [List, Registered, Unregistered] {
            assert_eq!(segment(a, External), None);
        }
    }
}
