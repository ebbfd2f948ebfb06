//! Sample data for rendering templates outside a real mailing (`check`, `preview`, and the
//! checks `serve` and a reload run before a configuration goes live).
//!
//! Each sample is built by the same function the real path uses (the planner's
//! `reminder_data`, `notice_data` and announcement `mailing`, the web layer's confirmation
//! data), so a template that renders here in strict mode renders in production.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{
    calendar::{Calendar, Session},
    clock::to_millis,
    config::{AnnouncementSettings, ReminderSettings, SendAt, Settings},
    domain::new_nonce,
    schedule::{
        announcements,
        content::{self, Notice},
    },
};

/// One rendering a real path performs: which template, with what data.
pub struct Use {
    /// What `check` calls it: "email template reminder", "announcement may".
    pub label: String,
    pub template: String,
    pub list_mail: bool,
    pub data: Value,
    /// For announcements: its index in `settings.announcements`.
    pub announcement: Option<usize>,
}

/// Every rendering of an email template the daemon can perform with these settings.
pub fn uses(
    settings: &Settings,
    calendar: &Calendar,
    session: Option<&Session>,
    now: DateTime<Utc>,
) -> Vec<Use> {
    let fixed = [
        "confirm",
        "welcome",
        "goodbye",
        "announcement",
        "update",
        "cancellation",
    ];
    let mut out: Vec<Use> = fixed
        .iter()
        .map(|t| (*t, mailing_data(settings, t, session, now)))
        .chain(
            crate::mail::context::REGISTRATION_TEMPLATES
                .iter()
                .filter_map(|t| Some((*t, registration(settings, t, session?, now)))),
        )
        .chain(
            settings
                .reminders
                .iter()
                .filter_map(|r| Some((r.template.as_str(), reminder(settings, r, session?, now)))),
        )
        .map(|(template, data)| Use {
            label: format!("email template {template}"),
            template: template.to_owned(),
            list_mail: crate::mail::context::is_list_mail(template),
            data,
            announcement: None,
        })
        .collect();
    for (i, a) in settings.announcements.iter().enumerate() {
        let m = announcements::mailing(a, settings, calendar, 0);
        out.push(Use {
            label: format!("announcement {}", a.id),
            template: m.template,
            list_mail: true,
            data: m.data,
            announcement: Some(i),
        });
    }
    out
}

/// The mailing data a template named `template` is sent with, about `session` if given.
pub fn mailing_data(
    settings: &Settings,
    template: &str,
    session: Option<&Session>,
    now: DateTime<Utc>,
) -> Value {
    let prodid = content::prodid(&settings.list.name);
    match (template, session) {
        ("confirm", _) => json!({
            "confirm_nonce": new_nonce(),
            "expires_at_ms": to_millis(settings.subscriptions.confirm_ttl.after(now)),
        }),
        ("welcome", _) => content::welcome_data(settings, session),
        ("goodbye", _) => json!({}),
        ("announcement", _) => {
            let sample = AnnouncementSettings {
                id: "sample".into(),
                send_at: SendAt::Instant(now),
                subject: "A sample announcement".into(),
                markdown: Some("Hello,\n\nThis is a **sample** announcement with [a link](https://example.org/).".into()),
                template: None,
                vars: Default::default(),
                training: session.map(|s| s.id.clone()),
                send_late: false,
            };
            match settings.calendar() {
                Ok(calendar) => announcements::mailing(&sample, settings, &calendar, 0).data,
                Err(_) => json!({}),
            }
        }
        (_, None) => json!({}),
        (t, Some(session)) if crate::mail::context::REGISTRATION_TEMPLATES.contains(&t) => {
            registration(settings, t, session, now)
        }
        // A sample move, an hour later than it was, so that the preview of an update
        // shows what one says: the old time next to the new.
        ("update", Some(session)) => {
            let mut before = session.clone();
            before.start -= chrono::Duration::hours(1);
            before.end -= chrono::Duration::hours(1);
            content::notice_data(session, 1, now, &prodid, Notice::Update, Some(&before))
        }
        ("cancellation", Some(session)) => {
            content::notice_data(session, 1, now, &prodid, Notice::Cancel, Some(session))
        }
        (other, Some(session)) => {
            let sample = ReminderSettings {
                name: "reminder".into(),
                before: crate::domain::HumanDuration::from_secs(2 * 86_400),
                template: other.into(),
                audience: Default::default(),
            };
            let r = settings
                .reminders
                .iter()
                .find(|r| r.template == other)
                .or(settings.reminders.first())
                .unwrap_or(&sample);
            reminder(settings, r, session, now)
        }
    }
}

/// A registration mail's data, as the store writes it for a change of seats: an offer
/// with its deadline, a waiting list place.
fn registration(
    settings: &Settings,
    template: &str,
    session: &Session,
    now: DateTime<Utc>,
) -> Value {
    let seats = content::seats(settings, session, 0, now);
    let offer = (template == "seat_offer").then(|| {
        to_millis(now)
            .saturating_add(seats.offer_ttl_ms)
            .min(seats.closes_at_ms)
    });
    let rank = (template == "waitlisted").then_some(3);
    crate::store::registrations::mail_data(&seats, template, &new_nonce(), offer, rank)
}

fn reminder(
    settings: &Settings,
    r: &ReminderSettings,
    session: &Session,
    now: DateTime<Utc>,
) -> Value {
    content::reminder_data(session, 0, now, &content::prodid(&settings.list.name), r)
}

/// The next session on the calendar, to stand in for "the training this is about"; the
/// latest past one if none is ahead, so that training templates are still rendered.
pub fn next_session(calendar: &Calendar, now: DateTime<Utc>) -> Option<Session> {
    calendar.upcoming(now, 1).into_iter().next().or_else(|| {
        let years_ago = now.checked_sub_signed(chrono::Duration::days(3 * 366))?;
        calendar.sessions_between(years_ago, now).pop()
    })
}
