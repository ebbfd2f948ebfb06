//! The documented range of every duration and count in the settings, in one table.
//!
//! A value outside its range could panic (a `confirm_ttl` past the end of the calendar),
//! busy-loop (`schedule.tick = "0s"`) or exhaust the machine (`mail.pool_size` in the
//! billions), so [`check`] refuses it with the key and the range named. `check`, `serve`
//! and a reload all load settings through [`super::Settings::validate`], which runs this
//! table, so the three refuse the same values. The ranges are repeated in the comments of
//! `config/default.toml`; a test keeps the two in step.

use std::{fmt, time::Duration};

use super::{ConfigError, Settings};

/// What a setting may be.
#[derive(Debug, Clone, Copy)]
pub enum Range {
    /// A duration from `min` to `max`. With `off`, exactly zero is also allowed and means
    /// what `off` says.
    Duration {
        min: Duration,
        max: Duration,
        off: Option<&'static str>,
    },
    /// A whole number from `min` to `max`.
    Count { min: u64, max: u64 },
    /// A number from `min` to `max`, or exactly zero meaning `off`.
    Rate {
        min: f64,
        max: f64,
        off: &'static str,
    },
}

/// A setting's value, as the table reads it.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    Duration(Duration),
    Count(u64),
    Rate(f64),
}

/// One row: a key, its range, and how to read it from loaded settings.
pub struct Limit {
    pub key: &'static str,
    pub range: Range,
    read: fn(&Settings) -> Value,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}
const DAY: u64 = 86_400;

const fn span(min: Duration, max: Duration) -> Range {
    Range::Duration {
        min,
        max,
        off: None,
    }
}

const fn count(min: u64, max: u64) -> Range {
    Range::Count { min, max }
}

/// `[[reminders]] before`: one range for every entry.
pub const REMINDER_BEFORE: Range = span(secs(60), secs(365 * DAY));

/// `announcements.max_late`.
pub const MAX_LATE: Range = span(secs(60), secs(30 * DAY));

/// Every fixed key with a range. `[[reminders]] before` is [`REMINDER_BEFORE`].
pub const LIMITS: &[Limit] = &[
    Limit {
        key: "server.header_timeout",
        range: span(secs(1), secs(300)),
        read: |s| Value::Duration(s.server.header_timeout.std()),
    },
    Limit {
        key: "server.shutdown_timeout",
        range: span(secs(1), secs(300)),
        read: |s| Value::Duration(s.server.shutdown_timeout.std()),
    },
    Limit {
        key: "database.max_connections",
        range: count(1, 100),
        read: |s| Value::Count(s.database.max_connections.into()),
    },
    Limit {
        key: "mail.max_per_second",
        range: Range::Rate {
            min: 0.01,
            max: 100_000.0,
            off: "no limit",
        },
        read: |s| Value::Rate(s.mail.max_per_second),
    },
    Limit {
        key: "mail.pool_size",
        range: count(1, 100),
        read: |s| Value::Count(s.mail.pool_size.into()),
    },
    Limit {
        key: "mail.max_attempts",
        range: count(1, 100),
        read: |s| Value::Count(s.mail.max_attempts.into()),
    },
    Limit {
        key: "mail.retry_base",
        range: span(ms(100), secs(DAY)),
        read: |s| Value::Duration(s.mail.retry_base.std()),
    },
    Limit {
        key: "mail.retry_max",
        range: span(ms(100), secs(7 * DAY)),
        read: |s| Value::Duration(s.mail.retry_max.std()),
    },
    Limit {
        key: "mail.smtp_timeout",
        range: span(secs(1), secs(600)),
        read: |s| Value::Duration(s.mail.smtp_timeout.std()),
    },
    Limit {
        key: "mail.lease",
        range: span(secs(1), secs(DAY)),
        read: |s| Value::Duration(s.mail.lease.std()),
    },
    Limit {
        key: "subscriptions.confirm_ttl",
        range: span(secs(60), secs(30 * DAY)),
        read: |s| Value::Duration(s.subscriptions.confirm_ttl.std()),
    },
    Limit {
        key: "subscriptions.max_confirmations_per_day",
        range: count(1, 1_000),
        read: |s| Value::Count(s.subscriptions.max_confirmations_per_day.into()),
    },
    Limit {
        key: "subscriptions.max_requests_per_ip_per_hour",
        range: count(1, 1_000_000),
        read: |s| Value::Count(s.subscriptions.max_requests_per_ip_per_hour.into()),
    },
    Limit {
        key: "schedule.tick",
        range: span(secs(1), secs(3_600)),
        read: |s| Value::Duration(s.schedule.tick.std()),
    },
    Limit {
        key: "schedule.poll",
        range: span(ms(50), secs(600)),
        read: |s| Value::Duration(s.schedule.poll.std()),
    },
    Limit {
        key: "schedule.horizon",
        range: span(Duration::ZERO, secs(1_100 * DAY)),
        read: |s| Value::Duration(s.schedule.horizon.std()),
    },
    Limit {
        key: "schedule.watch",
        range: Range::Duration {
            min: ms(100),
            max: secs(3_600),
            off: Some("never"),
        },
        read: |s| Value::Duration(s.schedule.watch.std()),
    },
    Limit {
        key: "registration.closes_before",
        range: span(Duration::ZERO, secs(30 * DAY)),
        read: |s| Value::Duration(s.registration.closes_before.std()),
    },
    Limit {
        key: "registration.offer_ttl",
        range: span(secs(5 * 60), secs(30 * DAY)),
        read: |s| Value::Duration(s.registration.offer_ttl.std()),
    },
    Limit {
        key: "trainings.capacity",
        range: count(1, 10_000),
        read: |s| Value::Count(s.trainings.capacity.into()),
    },
    Limit {
        key: "bounces.poll",
        range: span(secs(5), secs(DAY)),
        read: |s| Value::Duration(bounces(s).poll.std()),
    },
    Limit {
        key: "bounces.max_size",
        range: count(1024, 64 * 1024 * 1024),
        read: |s| Value::Count(bounces(s).max_size),
    },
    Limit {
        key: "bounces.soft_weight",
        range: Range::Rate {
            min: 0.01,
            max: 10.0,
            off: "soft bounces count nothing",
        },
        read: |s| Value::Rate(bounces(s).soft_weight),
    },
    Limit {
        key: "bounces.threshold",
        range: count(1, 100),
        read: |s| Value::Count(bounces(s).threshold.into()),
    },
    Limit {
        key: "bounces.stale_after",
        range: span(secs(DAY), secs(365 * DAY)),
        read: |s| Value::Duration(bounces(s).stale_after.std()),
    },
    Limit {
        key: "announcements.max_late",
        range: MAX_LATE,
        read: |s| Value::Duration(s.announcement_rules.max_late.std()),
    },
];

impl Range {
    pub fn contains(&self, value: Value) -> bool {
        match (*self, value) {
            (Range::Duration { min, max, off }, Value::Duration(d)) => {
                (off.is_some() && d.is_zero()) || (min..=max).contains(&d)
            }
            (Range::Count { min, max }, Value::Count(n)) => (min..=max).contains(&n),
            (Range::Rate { min, max, .. }, Value::Rate(r)) => r == 0.0 || (min..=max).contains(&r),
            _ => false,
        }
    }

    /// Refuses `value` for `key` unless it is in range, naming both.
    pub fn check(&self, key: &str, value: Value) -> Result<(), ConfigError> {
        if self.contains(value) {
            return Ok(());
        }
        Err(ConfigError::invalid(
            key,
            format!("{value} is out of range; use {self}"),
        ))
    }
}

/// A duration as config is written: in the largest unit that divides it ("30d", "1h").
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return humantime::format_duration(d).to_string();
    }
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Range::Duration { min, max, off } => {
                if let Some(off) = off {
                    write!(f, "0s ({off}) or ")?;
                }
                write!(f, "{} to {}", human(min), human(max))
            }
            Range::Count { min, max } => write!(f, "{min} to {max}"),
            Range::Rate { min, max, off } => write!(f, "0 ({off}) or {min} to {max}"),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Duration(d) => write!(f, "{:?}", human(d)),
            Value::Count(n) => write!(f, "{n}"),
            Value::Rate(r) => write!(f, "{r}"),
        }
    }
}

/// Every ranged setting in `settings`, checked against the table.
/// `[bounces]` as in effect: its defaults when the section is absent.
fn bounces(s: &Settings) -> std::borrow::Cow<'_, super::BounceSettings> {
    s.bounces.as_ref().map_or_else(
        || std::borrow::Cow::Owned(Default::default()),
        std::borrow::Cow::Borrowed,
    )
}

pub fn check(settings: &Settings) -> Result<(), ConfigError> {
    for limit in LIMITS {
        limit.range.check(limit.key, (limit.read)(settings))?;
    }
    for (i, r) in settings.reminders.iter().enumerate() {
        REMINDER_BEFORE.check(
            &format!("reminders[{i}].before"),
            Value::Duration(r.before.std()),
        )?;
    }
    if settings.mail.retry_base > settings.mail.retry_max {
        return Err(ConfigError::invalid(
            "mail.retry_base",
            format!(
                "{} is longer than mail.retry_max ({})",
                settings.mail.retry_base, settings.mail.retry_max
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config/default.toml` documents each range on the key's own line, in the words the
    /// error uses, so what staff read there is what `check` enforces.
    #[test]
    fn default_toml_documents_every_range() {
        let text = include_str!("../../config/default.toml");
        let mut missing = Vec::new();
        let rows = LIMITS
            .iter()
            .map(|l| (l.key.to_owned(), l.range))
            .chain([("reminders.before".to_owned(), REMINDER_BEFORE)]);
        for (key, range) in rows {
            let (section, name) = key.split_once('.').expect("section.key");
            let mut in_section = false;
            let documented = text.lines().any(|line| {
                let bare = line.trim_start_matches(['#', ' ']);
                if bare.starts_with('[') {
                    in_section = bare.trim_matches(['[', ']']) == section;
                    return false;
                }
                in_section
                    && bare.starts_with(&format!("{name} "))
                    && line.contains(&format!("({range})"))
            });
            if !documented {
                missing.push(format!("{key}: ({range})"));
            }
        }
        assert!(missing.is_empty(), "not documented: {missing:?}");
    }

    #[test]
    fn zero_is_allowed_only_where_it_means_off() {
        let tick = LIMITS.iter().find(|l| l.key == "schedule.tick").unwrap();
        assert!(!tick.range.contains(Value::Duration(Duration::ZERO)));
        let watch = LIMITS.iter().find(|l| l.key == "schedule.watch").unwrap();
        assert!(watch.range.contains(Value::Duration(Duration::ZERO)));
        assert!(!watch.range.contains(Value::Duration(ms(10))));
        let err = tick
            .range
            .check(tick.key, Value::Duration(Duration::ZERO))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "schedule.tick: \"0s\" is out of range; use 1s to 1h");
    }
}
