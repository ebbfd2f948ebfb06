//! Sample data for rendering templates outside a real mailing (`check`, `preview`).
//!
//! The shapes match what the planner and the web layer store, so a template that renders
//! here in strict mode renders in production.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{
    calendar::{Calendar, Session},
    clock::to_millis,
    config::{AnnouncementSettings, SendAt, Settings},
    domain::new_nonce,
    schedule::{
        announcements,
        content::{self, Notice},
    },
};

/// The mailing data a template named `template` is sent with, about `session` if given.
pub fn mailing_data(
    settings: &Settings,
    template: &str,
    session: Option<&Session>,
    now: DateTime<Utc>,
) -> Value {
    match template {
        "confirm" => json!({
            "confirm_nonce": new_nonce(),
            "expires_at_ms": to_millis(settings.subscriptions.confirm_ttl.after(now)),
        }),
        "welcome" | "goodbye" => json!({}),
        "announcement" => {
            let sample = AnnouncementSettings {
                id: "sample".into(),
                send_at: SendAt::Instant(now),
                subject: "A sample announcement".into(),
                markdown: Some("Hello,\n\nThis is a **sample** announcement with [a link](https://example.org/).".into()),
                template: None,
                vars: Default::default(),
                training: session.map(|s| s.original_date),
                send_late: false,
            };
            match settings.calendar() {
                Ok(calendar) => announcements::mailing(&sample, settings, &calendar, 0).data,
                Err(_) => json!({}),
            }
        }
        other => {
            let Some(session) = session else {
                return json!({});
            };
            let notice = match other {
                "cancellation" => Notice::Cancel,
                "update" => Notice::Update,
                _ => Notice::Invite,
            };
            let mut data = content::training_data(
                session,
                u32::from(notice != Notice::Invite),
                now,
                &content::prodid(&settings.list.name),
                notice,
            );
            data["previous"] = match notice {
                // A sample move, an hour later than it was, so that the preview of an
                // update shows what one says: the old time next to the new.
                Notice::Update => {
                    let mut before = session.clone();
                    before.start -= chrono::Duration::hours(1);
                    before.end -= chrono::Duration::hours(1);
                    content::training_json(&before)
                }
                _ => content::training_json(session),
            };
            let reminder = settings
                .reminders
                .iter()
                .find(|r| r.template == other)
                .or(settings.reminders.first());
            data["reminder"] = match reminder {
                Some(r) => json!({ "name": r.name, "before": r.before.to_string() }),
                None => json!({ "name": "reminder", "before": "2days" }),
            };
            data
        }
    }
}

/// The next session on the calendar, to stand in for "the training this is about".
pub fn next_session(calendar: &Calendar, now: DateTime<Utc>) -> Option<Session> {
    calendar.upcoming(now, 1).into_iter().next()
}
