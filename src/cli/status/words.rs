//! Mailings in staff's words, from the machine's keys and states: what a mailing is
//! ("Invitation · Wed Jan 20, 2027 training", "Announcement 'may-2027-topics'") and how far
//! it got ("scheduled", "sending", "sent", "cancelled", "skipped: …").
//!
//! Keys name a training by its UID, which holds the date the recurrence gave it; a moved
//! training is named by the date it is on now, from the calendar, with where it moved from.

use std::fmt;

use chrono::NaiveDate;

use crate::calendar::{Calendar, Session};

/// A mailing's state as the database stores it (`mailings.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailingState {
    Planned,
    /// Fan-out has begun and not finished.
    Fanning,
    /// Every delivery is written; some may still be waiting to be sent.
    Fanned,
    Cancelled,
    Skipped,
}

impl MailingState {
    pub fn parse(state: &str) -> Option<Self> {
        Some(match state {
            "planned" => Self::Planned,
            "fanning" => Self::Fanning,
            "fanned" => Self::Fanned,
            "cancelled" => Self::Cancelled,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }
}

/// A mailing's state as staff read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaffState<'a> {
    Scheduled,
    Sending,
    Sent,
    Cancelled,
    /// Closed without sending, with the reason when one was recorded.
    Skipped(Option<&'a str>),
    /// A state this version does not know (a newer one wrote it): shown as stored.
    Unknown(&'a str),
}

impl<'a> StaffState<'a> {
    /// `pending`: its deliveries still queued or being sent.
    pub fn of(state: &'a str, pending: i64, reason: Option<&'a str>) -> Self {
        match MailingState::parse(state) {
            Some(MailingState::Planned) => Self::Scheduled,
            Some(MailingState::Fanning) => Self::Sending,
            Some(MailingState::Fanned) if pending > 0 => Self::Sending,
            Some(MailingState::Fanned) => Self::Sent,
            Some(MailingState::Cancelled) => Self::Cancelled,
            Some(MailingState::Skipped) => Self::Skipped(reason.filter(|r| !r.is_empty())),
            None => Self::Unknown(state),
        }
    }

    /// The word alone, for a table column ("skipped", its reason listed apart).
    pub fn word(&self) -> &str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Cancelled => "cancelled",
            Self::Skipped(_) => "skipped",
            Self::Unknown(state) => state,
        }
    }
}

/// "skipped: no seats left: …", or the word alone.
impl fmt::Display for StaffState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skipped(Some(reason)) => write!(f, "skipped: {reason}"),
            other => f.write_str(other.word()),
        }
    }
}

/// A list mailing's name for staff. `key` is its mailing key; `training` the session id
/// stored with it, when there is one.
pub fn title(calendar: &Calendar, key: &str, training: Option<&str>) -> String {
    let about = |uid: &str| training_words(calendar, training, uid);
    if let Some(id) = key.strip_prefix("announcement:") {
        return format!("Announcement '{id}'");
    }
    if let Some((uid, name)) = key
        .strip_prefix("reminder:")
        .and_then(|r| r.rsplit_once(':'))
    {
        return format!("{} · {}", capitalised(name), about(uid));
    }
    for (prefix, what) in [
        ("update:", "Update notice"),
        ("cancel:", "Cancellation notice"),
    ] {
        if let Some((uid, _sequence)) = key.strip_prefix(prefix).and_then(|r| r.rsplit_once(':')) {
            return format!("{what} · {}", about(uid));
        }
    }
    key.to_owned()
}

/// A `[[reminders]]` name as staff wrote it, capitalised, with `-` and `_` as spaces:
/// "invitation" → "Invitation", "last-call" → "Last call".
fn capitalised(name: &str) -> String {
    let spaced = name.replace(['-', '_'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

/// "Wed Jan 20, 2027 training", "Wed May 26, 2027 training (moved from May 19)": the
/// session from the calendar by its id (stored with the mailing, or read from its UID);
/// for one no longer in the calendar, the date its UID holds.
fn training_words(calendar: &Calendar, training: Option<&str>, uid: &str) -> String {
    let inner = uid
        .strip_prefix("training-")
        .and_then(|rest| rest.split_once('@'))
        .map(|(inner, _)| inner);
    let uid_date = inner.and_then(|i| NaiveDate::parse_from_str(i, "%Y%m%d").ok());
    let id = training.map(str::to_owned).or_else(|| match uid_date {
        Some(date) => Some(date.format("%Y-%m-%d").to_string()),
        None => inner.map(str::to_owned),
    });
    if let Some(session) = id.as_deref().and_then(|id| calendar.session_by_id(id)) {
        return session_words(calendar, &session);
    }
    match (uid_date, inner) {
        (Some(date), _) => format!("{} training", date.format("%a %b %-d, %Y")),
        (None, Some(inner)) => format!("training {inner}"),
        (None, None) => format!("training {uid}"),
    }
}

/// A session as a mailing's title names it, with where it moved from.
pub fn session_words(calendar: &Calendar, session: &Session) -> String {
    let day = session.start.format("%a %b %-d, %Y");
    match moved(calendar, session) {
        Some(from) => format!("{day} training ({from})"),
        None => format!("{day} training"),
    }
}

/// "moved from May 19" (the date it had, with its year when that differs too), or
/// "moved from 11:00 AM" for one moved within its day; `None` if it was not moved.
pub fn moved(calendar: &Calendar, session: &Session) -> Option<String> {
    let usual = calendar.moved_from(session)?;
    let now = session.start;
    let from = if usual.date_naive() == now.date_naive() {
        usual.format("%-I:%M %p").to_string()
    } else if usual.format("%Y").to_string() == now.format("%Y").to_string() {
        usual.format("%b %-d").to_string()
    } else {
        usual.format("%b %-d, %Y").to_string()
    };
    Some(format!("moved from {from}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{ChangeSettings, TrainingsSettings};

    const UID_MAY: &str = "training-20270519@trainings.example.org";

    fn calendar(changes: Vec<ChangeSettings>) -> Calendar {
        let settings = TrainingsSettings {
            change: changes,
            ..TrainingsSettings::default()
        };
        Calendar::from_settings(&settings, "trainings.example.org").expect("calendar")
    }

    fn change(date: &str, f: impl FnOnce(&mut ChangeSettings)) -> ChangeSettings {
        let mut c: ChangeSettings = toml::from_str(&format!("date = {date:?}")).expect("a change");
        f(&mut c);
        c
    }

    #[test]
    fn reminders_and_announcements_by_their_names() {
        let cal = calendar(Vec::new());
        assert_eq!(
            title(
                &cal,
                "reminder:training-20270120@trainings.example.org:invitation",
                Some("2027-01-20")
            ),
            "Invitation · Wed Jan 20, 2027 training"
        );
        // Without the stored session id (older rows), the UID says which.
        assert_eq!(
            title(&cal, &format!("reminder:{UID_MAY}:last-call"), None),
            "Last call · Wed May 19, 2027 training"
        );
        assert_eq!(
            title(&cal, "announcement:may-2027-topics", None),
            "Announcement 'may-2027-topics'"
        );
        assert_eq!(
            title(&cal, &format!("cancel:{UID_MAY}:2"), Some("2027-05-19")),
            "Cancellation notice · Wed May 19, 2027 training"
        );
        assert_eq!(title(&cal, "confirm:abc", None), "confirm:abc");
    }

    #[test]
    fn a_moved_training_is_named_where_it_is_now() {
        let cal = calendar(vec![change("2027-05-19", |c| {
            c.start = Some("2027-05-26T11:00".into());
        })]);
        assert_eq!(
            title(
                &cal,
                &format!("reminder:{UID_MAY}:reminder"),
                Some("2027-05-19")
            ),
            "Reminder · Wed May 26, 2027 training (moved from May 19)"
        );
        assert_eq!(
            title(&cal, &format!("update:{UID_MAY}:1"), Some("2027-05-19")),
            "Update notice · Wed May 26, 2027 training (moved from May 19)"
        );
        let cal = calendar(vec![change("2027-05-19", |c| {
            c.start_time = Some("14:00".into());
        })]);
        assert_eq!(
            title(&cal, &format!("reminder:{UID_MAY}:invitation"), None),
            "Invitation · Wed May 19, 2027 training (moved from 11:00 AM)"
        );
    }

    #[test]
    fn a_training_gone_from_the_calendar_keeps_its_date() {
        let cal = calendar(Vec::new());
        assert_eq!(
            title(
                &cal,
                "cancel:training-20270518@trainings.example.org:1",
                Some("2027-05-18")
            ),
            "Cancellation notice · Tue May 18, 2027 training"
        );
    }

    #[test]
    fn states_in_words() {
        assert_eq!(StaffState::of("planned", 0, None).to_string(), "scheduled");
        assert_eq!(StaffState::of("fanning", 0, None).to_string(), "sending");
        assert_eq!(StaffState::of("fanned", 3, None).to_string(), "sending");
        assert_eq!(StaffState::of("fanned", 0, None).to_string(), "sent");
        assert_eq!(
            StaffState::of("cancelled", 0, None).to_string(),
            "cancelled"
        );
        let skipped = StaffState::of("skipped", 0, Some("no seats left"));
        assert_eq!(skipped.to_string(), "skipped: no seats left");
        assert_eq!(skipped.word(), "skipped");
        assert_eq!(StaffState::of("skipped", 0, None).to_string(), "skipped");
    }
}
