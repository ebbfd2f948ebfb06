//! Durations written the way people write them in config: "72h", "21d", "90m", "45s",
//! and read back to people in words ([`words`]: "3 days", "1 hour 30 minutes").

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub fn std(self) -> Duration {
        self.0
    }

    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }

    /// `t` plus this duration, or the last instant chrono can hold: `+` would panic past
    /// it, and the duration comes from config.
    pub fn after(self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_add_signed(self.chrono())
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// As people read it: "3 days", "1 hour 30 minutes" (see [`words`]).
    pub fn words(self) -> String {
        words(self.0)
    }

    /// `t` minus this duration, or the first instant chrono can hold.
    pub fn before(self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_sub_signed(self.chrono())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// A duration in words, for pages, mail and messages people read: each whole unit from
/// days down to seconds that it has ("3 days", "1 day 12 hours", "1 hour 30 minutes"), or
/// milliseconds below a second. Not `Display`, which stays the config spelling ("3days")
/// that parses back.
pub fn words(d: Duration) -> String {
    const UNITS: [(u64, &str, &str); 4] = [
        (86_400, "day", "days"),
        (3_600, "hour", "hours"),
        (60, "minute", "minutes"),
        (1, "second", "seconds"),
    ];
    let count = |n: u128, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut secs = d.as_secs();
    if secs == 0 && d.as_millis() > 0 {
        return count(d.as_millis(), "millisecond", "milliseconds");
    }
    if secs == 0 {
        return "0 seconds".into();
    }
    let mut parts = Vec::new();
    for (size, one, many) in UNITS {
        if secs >= size {
            parts.push(count(u128::from(secs / size), one, many));
            secs %= size;
        }
    }
    parts.join(" ")
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(Self).map_err(|e| {
            format!(
                "{s:?} is not a duration ({e}); write it like \"72h\", \"21d\", \"90m\" or \"45s\""
            )
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(
            "72h".parse::<HumanDuration>().map(|d| d.0.as_secs()),
            Ok(72 * 3600)
        );
        assert_eq!(
            "21d".parse::<HumanDuration>().map(|d| d.0.as_secs()),
            Ok(21 * 86400)
        );
        assert_eq!(
            "90m".parse::<HumanDuration>().map(|d| d.0.as_secs()),
            Ok(5400)
        );
        assert_eq!(
            "45s".parse::<HumanDuration>().map(|d| d.0.as_secs()),
            Ok(45)
        );
        assert!("72".parse::<HumanDuration>().is_err());
        assert!("soon".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn words_are_for_people() {
        let w = |s: &str| s.parse::<HumanDuration>().unwrap().words();
        assert_eq!(w("1d"), "1 day");
        assert_eq!(w("3d"), "3 days");
        assert_eq!(w("72h"), "3 days");
        assert_eq!(w("90m"), "1 hour 30 minutes");
        assert_eq!(w("36h"), "1 day 12 hours");
        assert_eq!(w("1h"), "1 hour");
        assert_eq!(w("45s"), "45 seconds");
        assert_eq!(w("1m 1s"), "1 minute 1 second");
        assert_eq!(w("200ms"), "200 milliseconds");
        assert_eq!(w("0s"), "0 seconds");
    }

    #[test]
    fn arithmetic_past_the_calendar_saturates() {
        let huge: HumanDuration = "100000000d".parse().unwrap();
        let now = Utc::now();
        assert_eq!(huge.after(now), DateTime::<Utc>::MAX_UTC);
        assert_eq!(huge.before(now), DateTime::<Utc>::MIN_UTC);
    }
}
