//! Parsers for the individual string values in `[trainings]`.
//!
//! Each function takes the config key it is parsing so that its error can
//! name it; callers thread keys such as `trainings.extra[2].start` through.
//! Formats are strict (a value must print back exactly as it was written)
//! because a lenient parser that accepts `2027-3-1` today invites surprises
//! when someone copies it into another tool tomorrow.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Timelike};
use chrono_tz::Tz;

use super::error::CalendarError;

/// Longer than any real training; mostly catches `90d` typed for `90m`, and
/// keeps start + duration far away from chrono's range limits.
pub(crate) const MAX_DURATION: TimeDelta = TimeDelta::days(7);

pub(crate) fn timezone(key: &str, value: &str) -> Result<Tz, CalendarError> {
    value
        .parse::<Tz>()
        .map_err(|_| CalendarError::new(key, format!("unknown time zone {value:?}")))
}

pub(crate) fn date(key: &str, value: &str) -> Result<NaiveDate, CalendarError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|d| d.format("%Y-%m-%d").to_string() == value)
        .ok_or_else(|| {
            CalendarError::new(key, format!("expected a date YYYY-MM-DD, got {value:?}"))
        })
}

pub(crate) fn time(key: &str, value: &str) -> Result<NaiveTime, CalendarError> {
    NaiveTime::parse_from_str(value, "%H:%M")
        .ok()
        .filter(|t| t.format("%H:%M").to_string() == value)
        .ok_or_else(|| {
            CalendarError::new(key, format!("expected a 24-hour time HH:MM, got {value:?}"))
        })
}

pub(crate) fn duration(key: &str, value: &str) -> Result<TimeDelta, CalendarError> {
    if value.trim_start().starts_with('-') {
        return Err(CalendarError::new(
            key,
            format!("duration {value:?} must be positive"),
        ));
    }
    let parsed = humantime::parse_duration(value).map_err(|e| {
        CalendarError::new(
            key,
            format!("invalid duration {value:?} ({e}); write e.g. \"90m\" or \"1h 30m\""),
        )
    })?;
    if parsed.is_zero() {
        return Err(CalendarError::new(
            key,
            format!("duration {value:?} must be longer than zero"),
        ));
    }
    if parsed.subsec_nanos() != 0 {
        return Err(CalendarError::new(
            key,
            format!("duration {value:?} must be a whole number of seconds"),
        ));
    }
    TimeDelta::from_std(parsed)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| CalendarError::new(key, format!("duration {value:?} is longer than 7 days")))
}

/// Maps a wall-clock time in `tz` to an instant.
///
/// In the autumn overlap the earlier instant wins: that is the reading a
/// person who wrote "01:30" most likely meant, and it is deterministic. In the
/// spring gap the time never happens, and guessing would silently put a
/// session an hour away from what was announced, so it is an error.
pub(crate) fn local_instant(
    key: &str,
    tz: Tz,
    local: NaiveDateTime,
) -> Result<DateTime<Tz>, CalendarError> {
    tz.from_local_datetime(&local).earliest().ok_or_else(|| {
        CalendarError::new(
            key,
            format!(
                "{} does not exist in {}: the clocks skip it for daylight saving time",
                local.format("%Y-%m-%dT%H:%M"),
                tz.name()
            ),
        )
    })
}

/// A session start: RFC 3339 with an explicit offset, or local wall-clock
/// `YYYY-MM-DDTHH:MM[:SS]` in the calendar's zone.
pub(crate) fn start(key: &str, tz: Tz, value: &str) -> Result<DateTime<Tz>, CalendarError> {
    let expected = || {
        CalendarError::new(
            key,
            format!(
                "expected RFC 3339 (e.g. 2027-02-03T11:00:00-06:00) or local \
                 YYYY-MM-DDTHH:MM in {}, got {value:?}",
                tz.name()
            ),
        )
    };
    let instant = if let Ok(fixed) = DateTime::parse_from_rfc3339(value) {
        fixed.with_timezone(&tz)
    } else {
        let local = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
            .iter()
            .find_map(|fmt| {
                NaiveDateTime::parse_from_str(value, fmt)
                    .ok()
                    .filter(|dt| dt.format(fmt).to_string() == value)
            })
            .ok_or_else(expected)?;
        local_instant(key, tz, local)?
    };
    // iCalendar times have whole seconds; a fraction would make the feed and
    // the fingerprint disagree about when the session starts.
    if instant.nanosecond() != 0 {
        return Err(CalendarError::new(
            key,
            format!("{value:?} has fractional seconds; use whole seconds"),
        ));
    }
    Ok(instant)
}

/// A link people follow to register. Only http(s) is accepted because it is
/// put into emails and the iCalendar URL property verbatim.
/// The largest session anyone will run here; a bigger number is a typo.
pub(crate) const MAX_CAPACITY: u32 = 10_000;

pub(crate) fn capacity(key: &str, value: u32) -> Result<u32, CalendarError> {
    if (1..=MAX_CAPACITY).contains(&value) {
        Ok(value)
    } else {
        Err(CalendarError::new(
            key,
            format!("expected a number of seats from 1 to {MAX_CAPACITY}, got {value}"),
        ))
    }
}

pub(crate) fn registration_url(key: &str, value: &str) -> Result<Option<String>, CalendarError> {
    if value.is_empty() {
        return Ok(None);
    }
    let lower = value.to_ascii_lowercase();
    let has_scheme = lower.starts_with("https://") || lower.starts_with("http://");
    let clean = !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if has_scheme && clean && value.len() > "https://".len() {
        Ok(Some(value.to_owned()))
    } else {
        Err(CalendarError::new(
            key,
            format!("expected an http:// or https:// URL without spaces, got {value:?}"),
        ))
    }
}

pub(crate) fn title(key: &str, value: &str) -> Result<String, CalendarError> {
    if value.trim().is_empty() {
        Err(CalendarError::new(key, "must not be empty"))
    } else {
        Ok(value.to_owned())
    }
}

/// Empty topics are treated as "no topic" so `topic = ""` can clear one.
pub(crate) fn topic(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_date_and_time_formats() {
        assert!(date("k", "2027-01-20").is_ok());
        assert_eq!(date("k", "2027-1-20").unwrap_err().key(), "k");
        assert!(date("k", "2027-02-30").is_err());
        assert!(time("k", "11:00").is_ok());
        assert!(time("k", "11:0").is_err());
        assert!(time("k", "25:00").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("k", "90m").unwrap(), TimeDelta::minutes(90));
        assert_eq!(duration("k", "1h 30m").unwrap(), TimeDelta::minutes(90));
        assert!(
            duration("k", "0s")
                .unwrap_err()
                .problem()
                .contains("longer than zero")
        );
        assert!(
            duration("k", "-5m")
                .unwrap_err()
                .problem()
                .contains("positive")
        );
        assert!(
            duration("k", "8days")
                .unwrap_err()
                .problem()
                .contains("7 days")
        );
        assert!(duration("k", "1.5s").is_err());
        assert!(duration("k", "soon").is_err());
    }

    #[test]
    fn starts_in_both_forms() {
        let tz = chrono_tz::America::Chicago;
        let a = start("k", tz, "2027-02-03T11:00").unwrap();
        let b = start("k", tz, "2027-02-03T17:00:00Z").unwrap();
        assert_eq!(a, b);
        assert!(start("k", tz, "2027-02-03 11:00").is_err());
        assert!(start("k", tz, "2027-02-03T17:00:00.5Z").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(registration_url("k", "").unwrap(), None);
        assert!(
            registration_url("k", "https://example.org/r")
                .unwrap()
                .is_some()
        );
        assert!(registration_url("k", "ftp://example.org").is_err());
        assert!(registration_url("k", "https://exa mple.org").is_err());
    }
}
