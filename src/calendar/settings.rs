//! The `[trainings]` configuration as staff write it in TOML.
//!
//! These types are the raw, string-typed shape of the config: serde fills in
//! the defaults (which describe the real Safe Harbor schedule, so an empty
//! `[trainings]` table is a working calendar) and rejects unknown keys. Nothing
//! here is interpreted yet; `Calendar::from_settings` turns these strings into
//! time zones, dates and instants and reports any problem by config key.

use serde::{Deserialize, Serialize};

/// `[trainings]`: the recurring schedule plus its exceptions and extras.
///
/// Every field has a serde default, and `Default` gives the same values, so a
/// config only needs to mention what differs from the published schedule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingsSettings {
    /// IANA zone name the schedule's wall-clock times are in.
    pub timezone: String,
    /// An RFC 5545 RRULE value (without `DTSTART`; the optional `RRULE:` prefix is accepted).
    pub rrule: String,
    /// `YYYY-MM-DD`: the first date the recurrence may produce.
    pub starts_on: String,
    /// `HH:MM` local wall-clock start of every recurring session.
    pub start_time: String,
    /// humantime duration such as `90m` or `1h 30m`.
    pub duration: String,
    pub title: String,
    pub location: String,
    /// Where people sign up; empty means there is no registration link.
    pub registration_url: String,
    pub description: String,
    /// Seats in each session, unless a change or extra sets its own.
    pub capacity: u32,
    /// `[[trainings.change]]`: edits to single instances of the recurrence.
    pub change: Vec<ChangeSettings>,
    /// `[[trainings.extra]]`: one-off sessions outside the recurrence.
    pub extra: Vec<ExtraSettings>,
}

/// The schedule's own defaults, kept as constants so docs and tests can name them.
pub const DEFAULT_TIMEZONE: &str = "America/Chicago";
pub const DEFAULT_RRULE: &str = "FREQ=MONTHLY;BYMONTH=1,3,5,7,9,11;BYDAY=3WE";
pub const DEFAULT_STARTS_ON: &str = "2024-01-01";
pub const DEFAULT_START_TIME: &str = "11:00";
pub const DEFAULT_DURATION: &str = "90m";
pub const DEFAULT_TITLE: &str = "Safe Harbor training for youth workers";
pub const DEFAULT_LOCATION: &str = "LSS/Children's Home Society, 1605 Eustis Street, St Paul, MN";
pub const DEFAULT_CAPACITY: u32 = 30;
pub const DEFAULT_DESCRIPTION: &str =
    "This training is free, but registration is required because space is limited.";

impl Default for TrainingsSettings {
    fn default() -> Self {
        Self {
            timezone: DEFAULT_TIMEZONE.to_owned(),
            rrule: DEFAULT_RRULE.to_owned(),
            starts_on: DEFAULT_STARTS_ON.to_owned(),
            start_time: DEFAULT_START_TIME.to_owned(),
            duration: DEFAULT_DURATION.to_owned(),
            title: DEFAULT_TITLE.to_owned(),
            location: DEFAULT_LOCATION.to_owned(),
            registration_url: String::new(),
            description: DEFAULT_DESCRIPTION.to_owned(),
            capacity: DEFAULT_CAPACITY,
            change: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// `[[trainings.change]]`: cancels, moves or edits one recurring session.
///
/// The session keeps its identity (UID) from `date`, the date the recurrence
/// originally produced, so calendar clients update the event instead of
/// showing a second one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSettings {
    /// `YYYY-MM-DD` of the recurring instance being changed.
    pub date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    /// New start: local `YYYY-MM-DDTHH:MM` in the calendar's zone, or RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// New local `HH:MM` on the same day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Seats in this session only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// `[[trainings.extra]]`: a one-off session; unset fields fall back to `[trainings]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraSettings {
    /// Stable identifier for the UID; without it the UID derives from `start`,
    /// so moving an id-less extra looks like a new event to calendar clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// RFC 3339, or local `YYYY-MM-DDTHH:MM` in the calendar's zone.
    pub start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_url: Option<String>,
    /// Seats in this session only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}
