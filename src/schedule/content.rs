//! What a training looks like to templates and calendars: the JSON a reminder, update or
//! cancellation mailing carries (rendered once per mailing, the same for every recipient).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::{
    calendar::{
        Session, human,
        ics::{self, IcsEvent, Method},
    },
    config::{Audience, RegistrationMode, ReminderSettings, Settings},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// An invitation or reminder: METHOD:PUBLISH.
    Invite,
    /// The session changed: METHOD:PUBLISH with a higher SEQUENCE.
    Update,
    /// The session was cancelled: METHOD:CANCEL.
    Cancel,
}

/// The template-facing description of a session, plus its iCalendar attachment.
pub fn training_data(
    session: &Session,
    sequence: u32,
    stamp: DateTime<Utc>,
    prodid: &str,
    notice: Notice,
) -> Value {
    let method = if notice == Notice::Cancel {
        Method::Cancel
    } else {
        Method::Publish
    };
    let body = ics::render(&[IcsEvent { session, sequence }], method, stamp, prodid);
    json!({
        "training": training_json(session),
        "calendar": { "method": if notice == Notice::Cancel { "CANCEL" } else { "PUBLISH" }, "body": body },
    })
}

/// A reminder's data: the session, its invite, and which reminder this is.
pub fn reminder_data(
    session: &Session,
    sequence: u32,
    due: DateTime<Utc>,
    prodid: &str,
    reminder: &ReminderSettings,
) -> Value {
    let mut data = training_data(session, sequence, due, prodid, Notice::Invite);
    data["reminder"] = json!({ "name": reminder.name, "before": reminder.before.to_string() });
    data
}

/// An update's or cancellation's data: the session now, and as it was (null if the stored
/// snapshot could not be read).
pub fn notice_data(
    session: &Session,
    sequence: u32,
    stamp: DateTime<Utc>,
    prodid: &str,
    notice: Notice,
    previous: Option<&Session>,
) -> Value {
    let mut data = training_data(session, sequence, stamp, prodid, notice);
    data["previous"] = previous.map_or(Value::Null, training_json);
    data
}

/// What the welcome says that changes with the configuration: the next training (when,
/// where, and where to register) and the reminders as `[[reminders]]` has them, in words.
/// Made when the address is confirmed, so it is true when the welcome goes out.
pub fn welcome_data(settings: &Settings, next: Option<&Session>) -> Value {
    let base = settings.server.public_url.as_str().trim_end_matches('/');
    let next_training = next.map(|s| {
        let mut t = training_json(s);
        let register_url = match settings.registration.mode {
            RegistrationMode::External => s.registration_url.clone(),
            RegistrationMode::Harborlist => Some(format!("{base}/trainings/{}", s.id)),
        };
        t["register_url"] = json!(register_url);
        t
    });
    json!({
        "next_training": next_training,
        "reminders_text": reminders_text(&settings.reminders),
    })
}

/// "About each training, everyone on the list hears 21 days ahead and those registered get a
/// reminder 2 days before, each with a calendar invitation." From `[[reminders]]`, so it
/// stays true when staff change them.
pub fn reminders_text(reminders: &[ReminderSettings]) -> String {
    let mut sorted: Vec<&ReminderSettings> = reminders.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.before));
    let parts: Vec<String> = sorted
        .iter()
        .map(|r| {
            let w = r.before.words();
            match r.audience {
                Audience::List => format!("everyone on the list hears {w} ahead"),
                Audience::Registered => format!("those registered get a reminder {w} before"),
                Audience::Unregistered => {
                    format!("those not yet registered hear again {w} before, while seats are left")
                }
            }
        })
        .collect();
    match parts.as_slice() {
        [] => "We will write when there is news of a training.".into(),
        [one] => format!("About each training, {one}, with a calendar invitation."),
        [init @ .., last] => format!(
            "About each training, {} and {last}, each with a calendar invitation.",
            init.join(", ")
        ),
    }
}

/// The fields templates and `harborlist trainings --json` use.
pub fn training_json(session: &Session) -> Value {
    json!({
        "uid": session.uid,
        "id": session.id,
        "capacity": session.capacity,
        "title": session.title,
        "topic": session.topic,
        "summary": ics::summary(session),
        "location": session.location,
        "registration_url": session.registration_url,
        "description": session.description,
        "when": human::when(session),
        "date": human::date(session),
        "time": human::time_range(session),
        "start": session.start.to_rfc3339_opts(SecondsFormat::Secs, false),
        "end": session.end.to_rfc3339_opts(SecondsFormat::Secs, false),
        "cancelled": session.cancelled,
        "extra": session.extra,
    })
}

/// A session's seats as the store needs them, from the running settings: its capacity,
/// when registration closes, how long an offer holds, and what registration mail says about
/// it (with the `.ics` at `sequence`, stamped `stamp`).
pub fn seats(
    settings: &crate::config::Settings,
    session: &Session,
    sequence: u32,
    stamp: DateTime<Utc>,
) -> crate::store::registrations::SessionSeats {
    let reg = &settings.registration;
    let start = session.start.with_timezone(&Utc);
    let prodid = prodid(&settings.list.name);
    crate::store::registrations::SessionSeats {
        id: session.id.clone(),
        capacity: session.capacity,
        cancelled: session.cancelled,
        closes_at_ms: crate::clock::to_millis(reg.closes_before.before(start)),
        offer_ttl_ms: i64::try_from(reg.offer_ttl.std().as_millis()).unwrap_or(i64::MAX),
        data: training_data(session, sequence, stamp, &prodid, Notice::Invite),
    }
}

/// Whether harborlist takes registrations for `session` now: its own mode, not cancelled,
/// and before the close. (Full still counts as open: the form joins the waiting list.)
pub fn registration_open(
    settings: &crate::config::Settings,
    session: &Session,
    now: DateTime<Utc>,
) -> bool {
    settings.registration.mode == crate::config::RegistrationMode::Harborlist
        && !session.cancelled
        && now
            < settings
                .registration
                .closes_before
                .before(session.start.with_timezone(&Utc))
}

/// PRODID for every calendar object we publish.
pub fn prodid(list_name: &str) -> String {
    let clean: String = list_name
        .chars()
        .filter(|c| !c.is_control() && *c != '/')
        .collect();
    format!("-//harborlist//{clean}//EN")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reminder(name: &str, before: &str, audience: Audience) -> ReminderSettings {
        ReminderSettings {
            name: name.into(),
            before: before.parse().unwrap(),
            template: name.into(),
            audience,
        }
    }

    #[test]
    fn the_reminders_are_described_as_configured() {
        let default = [
            reminder("reminder", "2d", Audience::Registered),
            reminder("invitation", "21d", Audience::List),
        ];
        assert_eq!(
            reminders_text(&default),
            "About each training, everyone on the list hears 21 days ahead and those registered get a reminder 2 days before, each with a calendar invitation."
        );
        let three = [
            reminder("invitation", "30d", Audience::List),
            reminder("nudge", "7d", Audience::Unregistered),
            reminder("reminder", "1d", Audience::Registered),
        ];
        assert_eq!(
            reminders_text(&three),
            "About each training, everyone on the list hears 30 days ahead, those not yet registered hear again 7 days before, while seats are left and those registered get a reminder 1 day before, each with a calendar invitation."
        );
        assert_eq!(
            reminders_text(&default[1..]),
            "About each training, everyone on the list hears 21 days ahead, with a calendar invitation."
        );
        assert_eq!(
            reminders_text(&[]),
            "We will write when there is news of a training."
        );
    }
}
