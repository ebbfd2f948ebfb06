//! Durations written the way people write them in config: "72h", "21d", "90m", "45s".

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

    /// As a person writes it in a sentence: "3 days", "3 weeks", "1 hour 30 minutes".
    /// (`Display` is the config form, "3days", which reads badly in mail and pages.)
    pub fn in_words(self) -> String {
        let secs = self.0.as_secs();
        if secs == 0 {
            return "no time".into();
        }
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let mut parts = Vec::new();
        if days > 0 && days % 7 == 0 && rest == 0 {
            parts.push(unit(days / 7, "week"));
        } else if days > 0 {
            parts.push(unit(days, "day"));
        }
        for (n, name) in [
            (rest / 3600, "hour"),
            (rest % 3600 / 60, "minute"),
            (rest % 60, "second"),
        ] {
            if n > 0 {
                parts.push(unit(n, name));
            }
        }
        // Two units say enough: "1 day 2 hours", not down to the second.
        parts.truncate(2);
        parts.join(" ")
    }

    /// `t` minus this duration, or the first instant chrono can hold.
    pub fn before(self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_sub_signed(self.chrono())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

fn unit(n: u64, name: &str) -> String {
    if n == 1 {
        format!("1 {name}")
    } else {
        format!("{n} {name}s")
    }
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
    fn in_words_reads_as_a_sentence_does() {
        let words = |s: &str| s.parse::<HumanDuration>().unwrap().in_words();
        assert_eq!(words("72h"), "3 days");
        assert_eq!(words("3d"), "3 days");
        assert_eq!(words("1d"), "1 day");
        assert_eq!(words("21d"), "3 weeks");
        assert_eq!(words("7d"), "1 week");
        assert_eq!(words("90m"), "1 hour 30 minutes");
        assert_eq!(words("36h"), "1 day 12 hours");
        assert_eq!(words("2h"), "2 hours");
        assert_eq!(words("45s"), "45 seconds");
        assert_eq!(words("1d 2h 3m"), "1 day 2 hours");
        assert_eq!(words("0s"), "no time");
    }

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
    fn arithmetic_past_the_calendar_saturates() {
        let huge: HumanDuration = "100000000d".parse().unwrap();
        let now = Utc::now();
        assert_eq!(huge.after(now), DateTime::<Utc>::MAX_UTC);
        assert_eq!(huge.before(now), DateTime::<Utc>::MIN_UTC);
    }
}
