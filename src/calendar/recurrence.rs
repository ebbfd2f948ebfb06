//! Expands `trainings.rrule` into the concrete recurring start instants.
//!
//! Flow: the RRULE text is parsed and checked by the `rrule` crate with a
//! DTSTART of `starts_on` at `start_time` in the configured zone, so the crate
//! expands in local time and DST is handled by construction. Its output is
//! then distrusted: every instance must fall on the configured wall-clock
//! time, at most one per day, and expansion stops at a fixed horizon and
//! instance cap. The result is a finite, sorted list computed once at load
//! time, so queries never iterate an unbounded rule and a config that hits a
//! daylight-saving gap years from now fails at startup, not on that day.

use chrono::{DateTime, Months, NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;
use rrule::{Frequency, RRule, RRuleSet, Unvalidated};

use super::error::CalendarError;
use super::parse;

const KEY_RRULE: &str = "trainings.rrule";
const KEY_START_TIME: &str = "trainings.start_time";

/// How far past `starts_on` sessions are generated. The daemon will not run
/// for a century; a finite horizon is what lets us check every instance.
pub(crate) const HORIZON_YEARS: u32 = 100;

/// Safety net behind the horizon: a daily rule over the horizon is about
/// 36,525 instances, so exceeding this means the rule is not what it seems.
pub(crate) const MAX_OCCURRENCES: usize = 40_000;

/// One date the recurrence produces, with the instant its session starts
/// before any `[[trainings.change]]` is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Occurrence {
    pub date: NaiveDate,
    pub start: DateTime<Tz>,
}

/// Expands the rule; the result is sorted by date (and so by start).
pub(crate) fn expand(
    tz: Tz,
    rrule_text: &str,
    starts_on: NaiveDate,
    start_time: NaiveTime,
) -> Result<Vec<Occurrence>, CalendarError> {
    let rule = parse_rule(rrule_text)?;
    let dtstart = parse::local_instant(KEY_START_TIME, tz, starts_on.and_time(start_time))?;
    let dtstart = dtstart.with_timezone(&rrule::Tz::Tz(tz));
    let rule = rule
        .validate(dtstart)
        .map_err(|e| CalendarError::new(KEY_RRULE, e.to_string()))?;
    let horizon = starts_on
        .checked_add_months(Months::new(HORIZON_YEARS * 12))
        .ok_or_else(|| CalendarError::new("trainings.starts_on", "is too far in the future"))?;

    // `limit()` turns on the crate's own loop guard, which is what stops a
    // rule that can never match (e.g. February 30th) from spinning forever.
    let set = RRuleSet::new(dtstart).rrule(rule).limit();
    let mut out: Vec<Occurrence> = Vec::new();
    for produced in &set {
        let local = produced.with_timezone(&tz).naive_local();
        let date = local.date();
        if date > horizon {
            break;
        }
        if out.len() >= MAX_OCCURRENCES {
            return Err(CalendarError::new(
                KEY_RRULE,
                format!("produces more than {MAX_OCCURRENCES} sessions in {HORIZON_YEARS} years"),
            ));
        }
        if out.last().is_some_and(|prev| prev.date >= date) {
            return Err(CalendarError::new(
                KEY_RRULE,
                format!("produces more than one session on {date}"),
            ));
        }
        // The crate quietly shifts a time that falls in a DST gap (02:30 on
        // the spring-forward day becomes 03:30); catch that here rather than
        // announce a session at a time nobody configured.
        if local.time() != start_time {
            return Err(gap_error(tz, date, start_time));
        }
        // Resolve the instant ourselves so the overlap rule (earlier instant)
        // is the same one used for changes and extras.
        let start = tz
            .from_local_datetime(&date.and_time(start_time))
            .earliest()
            .ok_or_else(|| gap_error(tz, date, start_time))?;
        out.push(Occurrence { date, start });
    }
    if out.is_empty() {
        return Err(CalendarError::new(
            KEY_RRULE,
            format!("produces no dates on or after trainings.starts_on ({starts_on})"),
        ));
    }
    Ok(out)
}

fn gap_error(tz: Tz, date: NaiveDate, time: NaiveTime) -> CalendarError {
    CalendarError::new(
        KEY_START_TIME,
        format!(
            "{} does not exist in {} on {date}, a date of trainings.rrule: \
             the clocks skip it for daylight saving time",
            time.format("%H:%M"),
            tz.name()
        ),
    )
}

fn parse_rule(text: &str) -> Result<RRule<Unvalidated>, CalendarError> {
    let text = text.trim();
    let body = match text.get(..6) {
        Some(prefix) if prefix.eq_ignore_ascii_case("RRULE:") => &text[6..],
        _ => text,
    };
    if body.is_empty() {
        return Err(CalendarError::new(KEY_RRULE, "must not be empty"));
    }
    // DTSTART, EXDATE and friends would fight with starts_on, start_time and
    // [[trainings.change]], which are the supported way to say those things.
    if body.contains(':') || body.contains('\n') {
        return Err(CalendarError::new(
            KEY_RRULE,
            "must be a single RRULE value such as \"FREQ=MONTHLY;BYDAY=3WE\"; \
             the first date comes from trainings.starts_on and the time from \
             trainings.start_time",
        ));
    }
    let rule: RRule<Unvalidated> = body
        .parse()
        .map_err(|e: rrule::RRuleError| CalendarError::new(KEY_RRULE, e.to_string()))?;
    if matches!(
        rule.get_freq(),
        Frequency::Hourly | Frequency::Minutely | Frequency::Secondly
    ) {
        return Err(CalendarError::new(
            KEY_RRULE,
            format!(
                "FREQ={} is not supported: sessions happen at most once a day",
                rule.get_freq()
            ),
        ));
    }
    if !rule.get_by_hour().is_empty()
        || !rule.get_by_minute().is_empty()
        || !rule.get_by_second().is_empty()
    {
        return Err(CalendarError::new(
            KEY_RRULE,
            "BYHOUR, BYMINUTE and BYSECOND are not supported; set trainings.start_time",
        ));
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    const CHICAGO: Tz = chrono_tz::America::Chicago;

    #[test]
    fn default_rule_first_dates() {
        let occ = expand(
            CHICAGO,
            super::super::settings::DEFAULT_RRULE,
            d(2024, 1, 1),
            t(11, 0),
        )
        .unwrap();
        let dates: Vec<_> = occ.iter().take(3).map(|o| o.date).collect();
        assert_eq!(dates, vec![d(2024, 1, 17), d(2024, 3, 20), d(2024, 5, 15)]);
        let last = occ.last().unwrap().date;
        assert!(
            last <= d(2124, 1, 1) && last > d(2123, 10, 1),
            "horizon: {last}"
        );
    }

    #[test]
    fn prefix_and_count_and_until() {
        let occ = expand(
            CHICAGO,
            "RRULE:FREQ=WEEKLY;COUNT=3",
            d(2027, 1, 6),
            t(11, 0),
        )
        .unwrap();
        assert_eq!(occ.len(), 3);
        let occ = expand(
            CHICAGO,
            "FREQ=DAILY;UNTIL=20270110T000000Z",
            d(2027, 1, 6),
            t(11, 0),
        )
        .unwrap();
        assert_eq!(occ.len(), 4);
    }

    #[test]
    fn rejects_unsupported_rules() {
        for bad in [
            "",
            "FREQ=HOURLY",
            "FREQ=DAILY;BYHOUR=9,10",
            "DTSTART:20270101T000000Z\nRRULE:FREQ=DAILY",
            "FREQ=SOMETIMES",
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
        ] {
            let err = expand(CHICAGO, bad, d(2027, 1, 1), t(11, 0)).unwrap_err();
            assert_eq!(err.key(), KEY_RRULE, "{bad:?}: {err}");
        }
    }

    #[test]
    fn gap_on_a_produced_date_is_an_error() {
        // Second Sunday of March 2025 is 2025-03-09, the spring-forward day.
        let err = expand(
            CHICAGO,
            "FREQ=YEARLY;BYMONTH=3;BYDAY=2SU",
            d(2024, 6, 1),
            t(2, 30),
        )
        .unwrap_err();
        assert_eq!(err.key(), KEY_START_TIME);
        assert!(err.problem().contains("2025-03-09"), "{err}");
    }

    #[test]
    fn overlap_on_a_produced_date_takes_the_earlier_instant() {
        let occ = expand(
            CHICAGO,
            "FREQ=YEARLY;BYMONTH=11;BYDAY=1SU",
            d(2027, 1, 1),
            t(1, 30),
        )
        .unwrap();
        assert_eq!(occ[0].date, d(2027, 11, 7));
        assert_eq!(occ[0].start.to_rfc3339(), "2027-11-07T01:30:00-05:00");
    }
}
