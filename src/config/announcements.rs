//! `[[announcements]]`: messages staff queue by editing config.
//!
//! Usually kept in `config/announcements.toml`, which is layered in automatically. Each
//! entry has a stable `id` (the key that makes it go out once), a `send_at`, a `subject`,
//! and a body: `markdown = """…"""`, or `template = "name"` with optional `vars`. With
//! `training = "…"` (a session's id: its date `2027-01-20` for a recurring one, an extra's
//! `id`; or the date of an extra) it carries that training's calendar invite and, for
//! members, its Register link.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementSettings {
    pub id: String,
    pub send_at: SendAt,
    pub subject: String,
    #[serde(default)]
    pub markdown: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// The session it is about: its id, or the date it is on (see [`Self::session`]).
    #[serde(default)]
    pub training: Option<String>,
    /// Send it even if `send_at` is more than `announcements.max_late` in the past.
    #[serde(default)]
    pub send_late: bool,
}

/// The body, once validation has made sure exactly one kind is given.
#[derive(Debug, Clone, PartialEq)]
pub enum AnnouncementBody {
    Markdown {
        markdown: String,
    },
    Template {
        template: String,
        vars: BTreeMap<String, serde_json::Value>,
    },
}

impl AnnouncementSettings {
    pub fn body(&self) -> AnnouncementBody {
        match (&self.markdown, &self.template) {
            (_, Some(template)) => AnnouncementBody::Template {
                template: template.clone(),
                vars: self.vars.clone(),
            },
            (Some(markdown), None) => AnnouncementBody::Markdown {
                markdown: markdown.clone(),
            },
            (None, None) => AnnouncementBody::Markdown {
                markdown: String::new(),
            },
        }
    }

    /// The session `training` names: by its id first (`2027-01-20`, `lgbtq-2027-04`), then
    /// as a date, the form from before sessions had ids (which also finds an extra by the
    /// day it is on). `None` without `training`, or if it names no session.
    pub fn session(
        &self,
        calendar: &crate::calendar::Calendar,
    ) -> Option<crate::calendar::Session> {
        let text = self.training.as_deref()?.trim();
        calendar.session_by_id(text).or_else(|| {
            text.parse::<NaiveDate>()
                .ok()
                .and_then(|date| calendar.session_on(date))
        })
    }

    /// Problems with this entry, as (field, problem).
    pub fn problems(&self, tz: chrono_tz::Tz) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.id.is_empty()
            || self.id.len() > 64
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            out.push((
                "id",
                format!("{:?}: use 1–64 letters, digits, '-', '_' or '.'", self.id),
            ));
        }
        if self.subject.trim().is_empty() {
            out.push(("subject", "is empty".into()));
        }
        if self.subject.chars().any(char::is_control) {
            out.push((
                "subject",
                "must be one line (no line breaks or control characters)".into(),
            ));
        }
        match (&self.markdown, &self.template) {
            (Some(_), Some(_)) => out.push((
                "markdown",
                "give either markdown or template, not both".into(),
            )),
            (None, None) => out.push((
                "markdown",
                "give the body as markdown = \"…\" or template = \"name\"".into(),
            )),
            _ => {}
        }
        if let SendAt::Local(local) = &self.send_at
            && tz.from_local_datetime(local).earliest().is_none()
        {
            out.push((
                "send_at",
                format!("{local} does not exist in {tz} (the clocks skip it)"),
            ));
        }
        out
    }
}

/// When to send: an instant (RFC 3339) or a local date-time in the calendar's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendAt {
    Instant(DateTime<Utc>),
    Local(NaiveDateTime),
}

impl SendAt {
    pub fn resolve(&self, tz: chrono_tz::Tz) -> DateTime<Utc> {
        match self {
            Self::Instant(t) => *t,
            // Validation refused local times in a DST gap; an ambiguous one takes the earlier.
            Self::Local(local) => tz
                .from_local_datetime(local)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| local.and_utc()),
        }
    }

    /// The same date and time in `year`, if that date exists then (29 February).
    pub fn in_year(&self, year: i32) -> Option<Self> {
        match self {
            Self::Instant(t) => t.with_year(year).map(Self::Instant),
            Self::Local(l) => l.with_year(year).map(Self::Local),
        }
    }

    /// For a `send_at` in the past: the first later year, up to next year, that puts it
    /// after `now` ("did you mean 2027-05-01T09:00?"), or `None` if no year would.
    pub fn future_year(&self, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Option<Self> {
        let year = match self {
            Self::Instant(t) => t.year(),
            Self::Local(l) => l.year(),
        };
        (year.saturating_add(1)..=now.year().saturating_add(1))
            .filter_map(|y| self.in_year(y))
            .find(|c| {
                let exists = match c {
                    Self::Local(l) => tz.from_local_datetime(l).earliest().is_some(),
                    Self::Instant(_) => true,
                };
                exists && c.resolve(tz) > now
            })
    }

    /// As staff write it in the file.
    pub fn to_config(&self) -> String {
        match self {
            Self::Instant(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
            Self::Local(l) if l.and_utc().timestamp().rem_euclid(60) == 0 => {
                l.format("%Y-%m-%dT%H:%M").to_string()
            }
            Self::Local(l) => l.format("%Y-%m-%dT%H:%M:%S").to_string(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Self::Instant(t.with_timezone(&Utc)));
        }
        for format in [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
        ] {
            if let Ok(local) = NaiveDateTime::parse_from_str(s, format) {
                return Ok(Self::Local(local));
            }
        }
        Err(format!(
            "{s:?} is not a date-time; write \"2027-01-06T09:00\" (in the calendar's zone) or RFC 3339 \"2027-01-06T09:00:00-06:00\""
        ))
    }
}

impl<'de> Deserialize<'de> for SendAt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // TOML datetimes arrive as strings through the config crate.
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for SendAt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Instant(t) => s.serialize_str(&t.to_rfc3339()),
            Self::Local(l) => s.serialize_str(&l.format("%Y-%m-%dT%H:%M:%S").to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_at_forms() {
        assert_eq!(
            SendAt::parse("2027-01-06T09:00:00-06:00")
                .map(|s| s.resolve(chrono_tz::America::Chicago)),
            Ok("2027-01-06T15:00:00Z".parse().unwrap())
        );
        assert_eq!(
            SendAt::parse("2027-07-06T09:00").map(|s| s.resolve(chrono_tz::America::Chicago)),
            Ok("2027-07-06T14:00:00Z".parse().unwrap()),
            "local time in summer is CDT"
        );
        assert!(SendAt::parse("next tuesday").is_err());
    }

    #[test]
    fn a_past_send_at_suggests_the_year_that_puts_it_ahead() {
        let tz = chrono_tz::America::Chicago;
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let typo = SendAt::parse("2026-05-01T09:00").unwrap();
        assert_eq!(
            typo.future_year(tz, now).map(|s| s.to_config()).as_deref(),
            Some("2027-05-01T09:00")
        );
        let leap = SendAt::parse("2024-02-29T09:00").unwrap();
        assert_eq!(leap.future_year(tz, now), None, "2027 has no 29 February");
        let instant = SendAt::parse("2025-12-24T15:00:00Z").unwrap();
        assert_eq!(
            instant
                .future_year(tz, now)
                .map(|s| s.to_config())
                .as_deref(),
            Some("2026-12-24T15:00:00Z")
        );
    }
}
