//! How a session's seats stand, as `trainings`, `status` and `registrations` show them:
//! the capacity from the configuration, the counts from the database, and whether the
//! registration is open, full (the waiting list is open), closed or kept elsewhere.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    calendar::Session,
    config::{RegistrationMode, Settings},
    store::registrations::SeatCounts,
};

/// Where a session's registration stands, as `trainings --json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    /// No seat left; the form joins the waiting list.
    Full,
    /// Cancelled, or past `registration.closes_before`.
    Closed,
    /// `registration.mode = "external"`: people register at `registration_url`.
    External,
}

/// One session's seats. `counts` is `None` when the database could not be read.
#[derive(Debug, Clone, Copy)]
pub struct SeatView {
    pub capacity: u32,
    pub counts: Option<SeatCounts>,
    pub registration: Registration,
}

impl SeatView {
    pub fn of(
        settings: &Settings,
        session: &Session,
        counts: Option<SeatCounts>,
        now: DateTime<Utc>,
    ) -> Self {
        let closes = settings
            .registration
            .closes_before
            .before(session.start.with_timezone(&Utc));
        let registration = if settings.registration.mode == RegistrationMode::External {
            Registration::External
        } else if session.cancelled || now >= closes {
            Registration::Closed
        } else if counts.is_some_and(|c| c.left(session.capacity) == 0) {
            Registration::Full
        } else {
            Registration::Open
        };
        Self {
            capacity: session.capacity,
            counts,
            registration,
        }
    }

    pub fn seats_left(&self) -> Option<i64> {
        self.counts.map(|c| c.left(self.capacity))
    }

    /// `trainings --json`'s fields (counts `null` when the database could not be read).
    pub fn json(&self) -> Value {
        json!({
            "capacity": self.capacity,
            "registered": self.counts.map(|c| c.registered + c.attended),
            "waitlisted": self.counts.map(|c| c.waitlisted),
            "offered": self.counts.map(|c| c.offered),
            "seats_left": self.seats_left(),
            "registration": self.registration,
        })
    }

    /// "12/30, 3 waiting", "full, 3 waiting", "closed (12/30)", "external".
    pub fn human(&self) -> String {
        let Some(c) = self.counts else {
            return match self.registration {
                Registration::External => "external".into(),
                Registration::Closed => "closed".into(),
                _ => format!("?/{} (database not read)", self.capacity),
            };
        };
        let taken = format!("{}/{}", c.taken(), self.capacity);
        let waiting = if c.waitlisted > 0 {
            format!(", {} waiting", c.waitlisted)
        } else {
            String::new()
        };
        let offers = if c.offered > 0 {
            format!(", {} offer(s) open", c.offered)
        } else {
            String::new()
        };
        match self.registration {
            Registration::External => "external".into(),
            Registration::Closed if c.taken() == 0 && c.waitlisted == 0 => "closed".into(),
            Registration::Closed => format!("closed ({taken}{waiting})"),
            Registration::Full => format!("full ({taken}){waiting}{offers}"),
            Registration::Open => format!("{taken}{waiting}{offers}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn counts(registered: i64, waitlisted: i64, offered: i64) -> Option<SeatCounts> {
        Some(SeatCounts {
            registered,
            waitlisted,
            offered,
            attended: 0,
        })
    }

    #[test]
    fn open_full_closed_and_external_read_as_staff_expect() {
        let mut settings = crate::config::Sources::new(None)
            .load()
            .expect("default settings");
        settings.trainings.capacity = 30;
        let calendar = settings.calendar().expect("calendar");
        let mut session = calendar.session_by_id("2027-01-20").expect("session");
        let start = session.start.with_timezone(&Utc);
        let early = start - Duration::days(10);
        let view = |s: &Settings, session: &Session, c, now| SeatView::of(s, session, c, now);

        let v = view(&settings, &session, counts(12, 0, 0), early);
        assert_eq!(
            (v.registration, v.human()),
            (Registration::Open, "12/30".into())
        );
        assert_eq!(v.seats_left(), Some(18));
        let v = view(&settings, &session, counts(30, 3, 0), early);
        assert_eq!(
            (v.registration, v.human()),
            (Registration::Full, "full (30/30), 3 waiting".into())
        );
        let v = view(&settings, &session, counts(29, 2, 1), early);
        assert_eq!(v.human(), "full (30/30), 2 waiting, 1 offer(s) open");
        // A lowered capacity: nobody is dropped, and no seat is left.
        let v = view(&settings, &session, counts(32, 0, 0), early);
        assert_eq!(
            (v.registration, v.seats_left()),
            (Registration::Full, Some(0))
        );
        assert_eq!(v.json()["registered"], 32);

        let v = view(
            &settings,
            &session,
            counts(12, 1, 0),
            start - Duration::hours(1),
        );
        assert_eq!(
            (v.registration, v.human()),
            (Registration::Closed, "closed (12/30, 1 waiting)".into())
        );
        let v = view(&settings, &session, None, early);
        assert_eq!(v.registration, Registration::Open);
        assert!(v.json()["registered"].is_null() && v.json()["seats_left"].is_null());

        session.cancelled = true;
        assert_eq!(
            view(&settings, &session, counts(0, 0, 0), early).registration,
            Registration::Closed
        );
        settings.registration.mode = RegistrationMode::External;
        let v = view(&settings, &session, counts(3, 0, 0), early);
        assert_eq!(
            (v.registration, v.human()),
            (Registration::External, "external".into())
        );
        assert_eq!(v.json()["registration"], "external");
    }
}
