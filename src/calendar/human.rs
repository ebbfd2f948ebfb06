//! Session times as people read them in emails and on the web page.
//!
//! Flow: a `Session` (whose instants already carry the calendar's zone) is
//! formatted in US English, 12-hour clock, with the zone abbreviation so a
//! reader outside Minnesota knows which 11:00 is meant. `when` is simply
//! `date` + ", " + `time_range`, so the three can never disagree.

use chrono::{DateTime, Offset};
use chrono_tz::{OffsetName, Tz};

use super::session::Session;

/// `"Wednesday, January 20, 2027, 11:00 AM – 12:30 PM CST"`.
pub fn when(session: &Session) -> String {
    format!("{}, {}", date(session), time_range(session))
}

/// `"Wednesday, January 20, 2027"` (the start date).
pub fn date(session: &Session) -> String {
    long_date(&session.start)
}

/// `"11:00 AM – 12:30 PM CST"`.
///
/// If the session ends on another day, the end gets its date too
/// (`"11:00 PM – Thursday, January 21, 2027, 12:30 AM CST"`). If a DST change
/// falls inside the session, each end gets its own abbreviation, because one
/// abbreviation would misstate one of the two times.
pub fn time_range(session: &Session) -> String {
    let start = session.start;
    let end = session.end.with_timezone(&start.timezone());
    let start_abbr = abbreviation(&start);
    let end_abbr = abbreviation(&end);
    let start_part = if start_abbr == end_abbr {
        clock(&start)
    } else {
        format!("{} {start_abbr}", clock(&start))
    };
    let end_part = if end.date_naive() == start.date_naive() {
        clock(&end)
    } else {
        format!("{}, {}", long_date(&end), clock(&end))
    };
    format!("{start_part} – {end_part} {end_abbr}")
}

fn long_date(t: &DateTime<Tz>) -> String {
    t.format("%A, %B %-d, %Y").to_string()
}

fn clock(t: &DateTime<Tz>) -> String {
    t.format("%-I:%M %p").to_string()
}

/// "CST"/"CDT"; zones without a letter abbreviation fall back to the offset
/// (tzdata already writes many of those as "-03"), so something is always shown.
fn abbreviation(t: &DateTime<Tz>) -> String {
    match t.offset().abbreviation() {
        Some(name) => name.to_owned(),
        None => format!("UTC{}", t.offset().fix()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn session(start: DateTime<Tz>, minutes: i64) -> Session {
        Session {
            id: "x".into(),
            capacity: 30,
            uid: "u".into(),
            original_date: start.date_naive(),
            start,
            end: start + TimeDelta::minutes(minutes),
            title: "T".into(),
            topic: None,
            location: "L".into(),
            registration_url: None,
            description: String::new(),
            cancelled: false,
            extra: false,
        }
    }

    #[test]
    fn same_day() {
        let tz = chrono_tz::America::Chicago;
        let s = session(tz.with_ymd_and_hms(2027, 1, 20, 11, 0, 0).unwrap(), 90);
        assert_eq!(
            when(&s),
            "Wednesday, January 20, 2027, 11:00 AM – 12:30 PM CST"
        );
        assert_eq!(date(&s), "Wednesday, January 20, 2027");
        assert_eq!(time_range(&s), "11:00 AM – 12:30 PM CST");
    }

    #[test]
    fn crossing_midnight_shows_end_date() {
        let tz = chrono_tz::America::Chicago;
        let s = session(tz.with_ymd_and_hms(2027, 1, 20, 23, 0, 0).unwrap(), 90);
        assert_eq!(
            when(&s),
            "Wednesday, January 20, 2027, 11:00 PM – Thursday, January 21, 2027, 12:30 AM CST"
        );
    }

    #[test]
    fn crossing_a_dst_change_names_both_offsets() {
        let tz = chrono_tz::America::Chicago;
        // 2027-11-07 01:00 CDT; 60 minutes later it is 01:00 CST.
        let start = tz.with_ymd_and_hms(2027, 11, 7, 0, 30, 0).unwrap();
        let s = session(start, 90);
        assert_eq!(time_range(&s), "12:30 AM CDT – 1:00 AM CST");
    }
}
