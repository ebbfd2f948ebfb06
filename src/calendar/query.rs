//! Read-only queries on a built `Calendar`.
//!
//! Flow: recurring occurrences are stored in original-start order, but a
//! `[[trainings.change]]` can move a session anywhere. Each query therefore
//! scans original starts in the requested window widened by `max_shift` (the
//! largest move any change makes), applies the changes, and only then
//! filters by the effective start; extras are merged in and the result is
//! put in start order.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::schedule::Calendar;
use super::session::Session;

impl Calendar {
    /// Sessions (recurring with changes applied, cancelled ones included with
    /// cancelled=true, plus extras) whose start is >= from and < to, sorted by
    /// start.
    pub fn sessions_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Session> {
        if from >= to {
            return Vec::new();
        }
        let in_window = |s: &Session| s.start.to_utc() >= from && s.start.to_utc() < to;
        let lo = from
            .checked_sub_signed(self.max_shift)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let hi = to
            .checked_add_signed(self.max_shift)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let first = self.occurrences.partition_point(|o| o.start.to_utc() < lo);
        let mut out: Vec<Session> = self.occurrences[first..]
            .iter()
            .take_while(|o| o.start.to_utc() < hi)
            .map(|o| self.recurring_session(o))
            .filter(in_window)
            .collect();
        out.extend(self.extras.iter().filter(|s| in_window(s)).cloned());
        sort_sessions(&mut out);
        out
    }

    /// The next `count` sessions starting at or after `from` (cancelled included).
    pub fn upcoming(&self, from: DateTime<Utc>, count: usize) -> Vec<Session> {
        if count == 0 {
            return Vec::new();
        }
        let lo = from
            .checked_sub_signed(self.max_shift)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let first = self.occurrences.partition_point(|o| o.start.to_utc() < lo);
        let mut out: Vec<Session> = Vec::new();
        for occurrence in &self.occurrences[first..] {
            // Once `count` candidates are known, an occurrence whose earliest
            // possible (shifted) start is past the count-th best cannot win.
            if out.len() >= count {
                sort_sessions(&mut out);
                out.truncate(count);
                let worst = out[count - 1].start.to_utc();
                let earliest = occurrence
                    .start
                    .to_utc()
                    .checked_sub_signed(self.max_shift)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                if earliest > worst {
                    break;
                }
            }
            let session = self.recurring_session(occurrence);
            if session.start.to_utc() >= from {
                out.push(session);
            }
        }
        out.extend(
            self.extras
                .iter()
                .filter(|s| s.start.to_utc() >= from)
                .take(count)
                .cloned(),
        );
        sort_sessions(&mut out);
        out.truncate(count);
        out
    }

    /// The session whose original date (recurring) or start date (extra), in
    /// the zone, is `date`. A recurring session wins over an extra that day.
    pub fn session_on(&self, date: NaiveDate) -> Option<Session> {
        if let Some(occurrence) = self.occurrence_on(date) {
            return Some(self.recurring_session(occurrence));
        }
        self.extras
            .iter()
            .find(|s| s.original_date == date)
            .cloned()
    }

    /// Where a recurring session would start without its `[[trainings.change]]`, when
    /// that differs from where it starts now (a moved session); `None` for one that was
    /// not moved, and for an extra, which is only ever where it is.
    pub fn moved_from(&self, session: &Session) -> Option<DateTime<Tz>> {
        if session.extra {
            return None;
        }
        let usual = self.occurrence_on(session.original_date)?.start;
        (usual != session.start).then_some(usual)
    }

    /// The session with this stable `id` (`2027-01-20`, or an extra's id), cancelled or not.
    pub fn session_by_id(&self, id: &str) -> Option<Session> {
        if let Some(extra) = self.extras.iter().find(|s| s.id == id) {
            return Some(extra.clone());
        }
        let date = NaiveDate::parse_from_str(id, "%Y-%m-%d").ok()?;
        // Only the canonical spelling names a session, so each has one link.
        if date.format("%Y-%m-%d").to_string() != id {
            return None;
        }
        self.occurrence_on(date).map(|o| self.recurring_session(o))
    }
}

/// Start order, with the UID as tie-break so output never depends on how
/// recurring sessions and extras happened to be merged.
pub(super) fn sort_sessions(sessions: &mut [Session]) {
    sessions.sort_by(|a, b| (a.start, &a.uid).cmp(&(b.start, &b.uid)));
}
