//! `Session`: one concrete training, the unit everything downstream uses.
//!
//! Sessions are produced by `Calendar` queries with changes already applied,
//! and consumed by reminders, the iCalendar feed and human formatting. The
//! fingerprint lets the mailer decide whether a stored session differs from
//! the current one in a way attendees must be told about.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// One training occurrence, recurring or extra.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// Stable across edits: derived from the original recurrence date, or
    /// from the extra's `id` (or its start when it has none).
    pub uid: String,
    /// Stable and URL-safe, for links and staff commands: the original recurrence date
    /// (`2027-01-20`) for a recurring session, the extra's `id` for an extra (or
    /// `extra-YYYYMMDDTHHMMSSZ` from its start when it has none). Moves do not change it.
    pub id: String,
    /// Seats: `[trainings] capacity`, or the change's or extra's own.
    pub capacity: u32,
    /// The date the recurrence produced (recurring) or the start date in the
    /// calendar's zone (extra). Moves do not change it.
    pub original_date: NaiveDate,
    pub start: DateTime<Tz>,
    pub end: DateTime<Tz>,
    pub title: String,
    pub topic: Option<String>,
    pub location: String,
    pub registration_url: Option<String>,
    pub description: String,
    pub cancelled: bool,
    pub extra: bool,
}

impl Session {
    /// A short hex digest of what attendees care about (start, end, location,
    /// title, topic, cancelled); it changes exactly when an update notice is
    /// warranted. The capacity is left out: more or fewer seats are not news to
    /// people already registered.
    ///
    /// Instants are hashed in UTC so that renaming the zone without moving
    /// the session does not trigger a notice; the description and link are
    /// left out because rewording them is not worth an email.
    pub fn fingerprint(&self) -> String {
        let fields = serde_json::json!([
            1, // layout version, in case the set of fields ever changes
            self.start.with_timezone(&Utc).to_rfc3339(),
            self.end.with_timezone(&Utc).to_rfc3339(),
            self.location,
            self.title,
            self.topic,
            self.cancelled,
        ]);
        // JSON keeps the field boundaries unambiguous ("a","bc" vs "ab","c").
        let digest = Sha256::digest(fields.to_string().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn sample() -> Session {
        let tz = chrono_tz::America::Chicago;
        let start = tz.with_ymd_and_hms(2027, 1, 20, 11, 0, 0).unwrap();
        Session {
            uid: "training-20270120@example.org".into(),
            id: "2027-01-20".into(),
            capacity: 30,
            original_date: start.date_naive(),
            start,
            end: start + TimeDelta::minutes(90),
            title: "T".into(),
            topic: None,
            location: "L".into(),
            registration_url: None,
            description: "D".into(),
            cancelled: false,
            extra: false,
        }
    }

    #[test]
    fn fingerprint_tracks_attendee_facing_fields_only() {
        let base = sample();
        let fp = base.fingerprint();
        assert_eq!(fp.len(), 16);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fp, sample().fingerprint());

        let mut quiet = sample();
        quiet.description = "reworded".into();
        quiet.registration_url = Some("https://example.org".into());
        quiet.capacity = 5;
        quiet.start = quiet
            .start
            .with_timezone(&chrono_tz::UTC)
            .with_timezone(&chrono_tz::America::Chicago);
        assert_eq!(quiet.fingerprint(), fp);

        let edits: [fn(&mut Session); 6] = [
            |s| s.start += TimeDelta::minutes(30),
            |s| s.end += TimeDelta::minutes(30),
            |s| s.location = "Elsewhere".into(),
            |s| s.title = "Other".into(),
            |s| s.topic = Some("Topic".into()),
            |s| s.cancelled = true,
        ];
        for edit in edits {
            let mut changed = sample();
            edit(&mut changed);
            assert_ne!(changed.fingerprint(), fp, "{changed:?}");
        }
    }
}
