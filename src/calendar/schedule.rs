//! `Calendar`: validated `[trainings]` config plus the queries on it.
//!
//! Flow: `from_settings` parses every value (reporting problems by config
//! key), expands the recurrence once via `recurrence::expand`, resolves each
//! `[[trainings.change]]` against those dates and builds the extras. Queries
//! then merge recurring occurrences (with their change applied on the fly)
//! and extras, and select by the *effective* start, so a moved session is
//! found where it now is, not where it used to be (see `query`).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;

use super::error::CalendarError;
use super::parse;
use super::recurrence::{self, Occurrence};
use super::session::Session;
use super::settings::{ChangeSettings, ExtraSettings, TrainingsSettings};

/// The training schedule, ready to answer "what is on when".
#[derive(Debug, Clone)]
pub struct Calendar {
    settings: TrainingsSettings,
    tz: Tz,
    uid_domain: String,
    base: Template,
    /// Sorted by date, at most one per date.
    pub(super) occurrences: Vec<Occurrence>,
    changes: BTreeMap<NaiveDate, Change>,
    /// The largest distance any change moves a session. Queries widen their
    /// scan of original starts by this much so that a session moved into (or
    /// out of) a window is judged by where it now is.
    pub(super) max_shift: TimeDelta,
    /// Sorted by start.
    pub(super) extras: Vec<Session>,
}

/// What every recurring session has unless a change says otherwise.
#[derive(Debug, Clone)]
struct Template {
    title: String,
    location: String,
    description: String,
    registration_url: Option<String>,
    duration: TimeDelta,
    capacity: u32,
}

#[derive(Debug, Clone, Default)]
struct Change {
    cancelled: bool,
    start: Option<DateTime<Tz>>,
    duration: Option<TimeDelta>,
    location: Option<String>,
    topic: Option<String>,
    title: Option<String>,
    description: Option<String>,
    capacity: Option<u32>,
}

impl Calendar {
    /// Validates `settings` and precomputes the schedule. `uid_domain` is the
    /// right-hand side of every UID (the list's own domain), which keeps UIDs
    /// globally unique as RFC 5545 asks.
    pub fn from_settings(
        settings: &TrainingsSettings,
        uid_domain: &str,
    ) -> Result<Calendar, CalendarError> {
        if uid_domain.is_empty()
            || !uid_domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(CalendarError::new(
                "uid_domain",
                format!("expected a domain name such as \"lists.example.org\", got {uid_domain:?}"),
            ));
        }
        let tz = parse::timezone("trainings.timezone", &settings.timezone)?;
        let starts_on = parse::date("trainings.starts_on", &settings.starts_on)?;
        let start_time = parse::time("trainings.start_time", &settings.start_time)?;
        let base = Template {
            title: parse::title("trainings.title", &settings.title)?,
            location: settings.location.clone(),
            description: settings.description.clone(),
            registration_url: parse::registration_url(
                "trainings.registration_url",
                &settings.registration_url,
            )?,
            duration: parse::duration("trainings.duration", &settings.duration)?,
            capacity: parse::capacity("trainings.capacity", settings.capacity)?,
        };
        let occurrences = recurrence::expand(tz, &settings.rrule, starts_on, start_time)?;

        let mut calendar = Calendar {
            settings: settings.clone(),
            tz,
            uid_domain: uid_domain.to_owned(),
            base,
            occurrences,
            changes: BTreeMap::new(),
            max_shift: TimeDelta::zero(),
            extras: Vec::new(),
        };
        let mut first_change_of: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        for (i, change) in settings.change.iter().enumerate() {
            let key = format!("trainings.change[{i}]");
            let (date, resolved) = calendar.resolve_change(&key, change)?;
            if let Some(prev) = first_change_of.insert(date, i) {
                return Err(CalendarError::new(
                    format!("{key}.date"),
                    format!("{date} is already changed by trainings.change[{prev}]; merge the two"),
                ));
            }
            calendar.changes.insert(date, resolved);
        }
        calendar.max_shift = calendar
            .occurrences
            .iter()
            .filter_map(|o| {
                let moved = calendar.changes.get(&o.date)?.start?;
                Some((moved - o.start).abs())
            })
            .max()
            .unwrap_or_else(TimeDelta::zero);

        let mut uids = HashSet::new();
        for (i, extra) in settings.extra.iter().enumerate() {
            let key = format!("trainings.extra[{i}]");
            let session = calendar.build_extra(&key, extra)?;
            if !uids.insert(session.uid.clone()) {
                let field = if extra.id.is_some() { "id" } else { "start" };
                return Err(CalendarError::new(
                    format!("{key}.{field}"),
                    format!(
                        "another extra already has UID {}; give each extra a distinct id",
                        session.uid
                    ),
                ));
            }
            calendar.extras.push(session);
        }
        super::query::sort_sessions(&mut calendar.extras);
        Ok(calendar)
    }

    fn resolve_change(
        &self,
        key: &str,
        change: &ChangeSettings,
    ) -> Result<(NaiveDate, Change), CalendarError> {
        let date = parse::date(&format!("{key}.date"), &change.date)?;
        let Some(occurrence) = self.occurrence_on(date) else {
            return Err(CalendarError::new(
                format!("{key}.date"),
                format!("{date} is not a date of the recurrence"),
            ));
        };
        let start = match (&change.start, &change.start_time) {
            (Some(_), Some(_)) => {
                return Err(CalendarError::new(
                    format!("{key}.start_time"),
                    "set either start or start_time, not both",
                ));
            }
            (Some(start), None) => Some(parse::start(&format!("{key}.start"), self.tz, start)?),
            (None, Some(time)) => {
                let time_key = format!("{key}.start_time");
                let time = parse::time(&time_key, time)?;
                Some(parse::local_instant(
                    &time_key,
                    self.tz,
                    date.and_time(time),
                )?)
            }
            (None, None) => None,
        };
        let cancelled = change.cancelled.unwrap_or(false);
        if cancelled && start.is_some() {
            return Err(CalendarError::new(
                format!("{key}.cancelled"),
                "a change cannot both cancel a session and move it; drop start/start_time \
                 or cancelled",
            ));
        }
        let title = match &change.title {
            Some(t) => Some(parse::title(&format!("{key}.title"), t)?),
            None => None,
        };
        let duration = match &change.duration {
            Some(d) => Some(parse::duration(&format!("{key}.duration"), d)?),
            None => None,
        };
        // Resolve the end now so an out-of-range move is a config error, not
        // a panic in a query later.
        let new_start = start.unwrap_or(occurrence.start);
        new_start
            .checked_add_signed(duration.unwrap_or(self.base.duration))
            .ok_or_else(|| CalendarError::new(format!("{key}.start"), "is out of range"))?;
        Ok((
            date,
            Change {
                cancelled,
                start,
                duration,
                location: change.location.clone(),
                topic: parse::topic(change.topic.as_deref()),
                title,
                description: change.description.clone(),
                capacity: match change.capacity {
                    Some(seats) => Some(parse::capacity(&format!("{key}.capacity"), seats)?),
                    None => None,
                },
            },
        ))
    }

    fn build_extra(&self, key: &str, extra: &ExtraSettings) -> Result<Session, CalendarError> {
        let start = parse::start(&format!("{key}.start"), self.tz, &extra.start)?;
        let duration = match &extra.duration {
            Some(d) => parse::duration(&format!("{key}.duration"), d)?,
            None => self.base.duration,
        };
        let end = start
            .checked_add_signed(duration)
            .ok_or_else(|| CalendarError::new(format!("{key}.start"), "is out of range"))?;
        if let Some(seats) = extra.capacity {
            parse::capacity(&format!("{key}.capacity"), seats)?;
        }
        let id = match &extra.id {
            Some(id) => {
                self.check_extra_id(&format!("{key}.id"), id)?;
                id.clone()
            }
            None => format!(
                "extra-{}",
                start.with_timezone(&Utc).format("%Y%m%dT%H%M%SZ")
            ),
        };
        let uid = format!("training-{id}@{}", self.uid_domain);
        let title = match &extra.title {
            Some(t) => parse::title(&format!("{key}.title"), t)?,
            None => self.base.title.clone(),
        };
        let registration_url = match &extra.registration_url {
            Some(url) => parse::registration_url(&format!("{key}.registration_url"), url)?,
            None => self.base.registration_url.clone(),
        };
        Ok(Session {
            uid,
            id,
            capacity: extra.capacity.unwrap_or(self.base.capacity),
            original_date: start.date_naive(),
            start,
            end,
            title,
            topic: parse::topic(extra.topic.as_deref()),
            location: extra
                .location
                .clone()
                .unwrap_or_else(|| self.base.location.clone()),
            registration_url,
            description: extra
                .description
                .clone()
                .unwrap_or_else(|| self.base.description.clone()),
            cancelled: false,
            extra: true,
        })
    }

    /// Ids become part of a UID, so they are kept to a safe alphabet and must
    /// not impersonate a recurring session's UID (`training-YYYYMMDD@...`).
    fn check_extra_id(&self, key: &str, id: &str) -> Result<(), CalendarError> {
        let safe = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !safe {
            return Err(CalendarError::new(
                key,
                format!("expected 1-64 letters, digits, '-', '_' or '.', got {id:?}"),
            ));
        }
        let looks_recurring = NaiveDate::parse_from_str(id, "%Y%m%d")
            .ok()
            .filter(|d| d.format("%Y%m%d").to_string() == id)
            .is_some_and(|d| self.occurrence_on(d).is_some())
            // A recurring session's id is its date: an extra must not take one.
            || NaiveDate::parse_from_str(id, "%Y-%m-%d").is_ok();
        if looks_recurring || id.starts_with("extra-") {
            return Err(CalendarError::new(
                key,
                format!("{id:?} would clash with an automatically generated UID"),
            ));
        }
        Ok(())
    }

    pub(super) fn occurrence_on(&self, date: NaiveDate) -> Option<&Occurrence> {
        self.occurrences
            .binary_search_by(|o| o.date.cmp(&date))
            .ok()
            .map(|i| &self.occurrences[i])
    }

    pub(super) fn recurring_session(&self, occurrence: &Occurrence) -> Session {
        let none = Change::default();
        let change = self.changes.get(&occurrence.date).unwrap_or(&none);
        let start = change.start.unwrap_or(occurrence.start);
        let duration = change.duration.unwrap_or(self.base.duration);
        Session {
            uid: format!(
                "training-{}@{}",
                occurrence.date.format("%Y%m%d"),
                self.uid_domain
            ),
            id: occurrence.date.format("%Y-%m-%d").to_string(),
            capacity: change.capacity.unwrap_or(self.base.capacity),
            original_date: occurrence.date,
            start,
            // Checked when the change was resolved; saturate rather than panic.
            end: start.checked_add_signed(duration).unwrap_or(start),
            title: change
                .title
                .clone()
                .unwrap_or_else(|| self.base.title.clone()),
            topic: change.topic.clone(),
            location: change
                .location
                .clone()
                .unwrap_or_else(|| self.base.location.clone()),
            registration_url: self.base.registration_url.clone(),
            description: change
                .description
                .clone()
                .unwrap_or_else(|| self.base.description.clone()),
            cancelled: change.cancelled,
            extra: false,
        }
    }

    /// The zone every session's wall-clock time is defined in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The settings this calendar was built from, as given.
    pub fn settings(&self) -> &TrainingsSettings {
        &self.settings
    }
}
