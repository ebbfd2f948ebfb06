//! What a report from the receiving side says, as types: its [`ReportKind`] and the
//! RFC 3463 [`StatusCode`] it carries. The parser (`crate::bounce`) produces them and the
//! store records them; both read them the same way.

use std::fmt;

/// What kind of report a message is. The names are what `bounces check` prints and the
/// store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportKind {
    /// A permanent failure (5.x.x).
    Hard,
    /// A temporary failure given up on (4.x.x with Action: failed).
    Soft,
    /// Still trying (Action: delayed): counts as nothing.
    Delayed,
    /// A person marked the message as spam (an RFC 5965 feedback report).
    Complaint,
    /// An out-of-office or vacation answer (RFC 3834): ignored.
    AutoReply,
    /// Anything else that reached the return path.
    NotAReport,
}

impl ReportKind {
    pub const ALL: [ReportKind; 6] = [
        Self::Hard,
        Self::Soft,
        Self::Delayed,
        Self::Complaint,
        Self::AutoReply,
        Self::NotAReport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hard => "hard",
            Self::Soft => "soft",
            Self::Delayed => "delayed",
            Self::Complaint => "complaint",
            Self::AutoReply => "auto-reply",
            Self::NotAReport => "not-a-report",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether it is a delivery failure, which may count against the address.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Hard | Self::Soft)
    }
}

impl fmt::Display for ReportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 3463 enhanced status code: `class.subject.detail`, e.g. 5.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl StatusCode {
    /// Exactly a code (`5.1.1`), as a DSN's `Status:` field holds it (a trailing comment in
    /// parentheses is allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let code = text.split(['(', ' ', '\t']).next()?.trim();
        let mut parts = code.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts
            .next()
            .filter(|p| (1..=3).contains(&p.len()))?
            .parse()
            .ok()?;
        let detail: u16 = parts
            .next()
            .filter(|p| (1..=3).contains(&p.len()))?
            .parse()
            .ok()?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(Self {
            class,
            subject,
            detail,
        })
    }

    /// The first code written in free text, such as an SMTP reply
    /// (`550 5.1.1 <x@y>: User unknown`).
    pub fn find(text: &str) -> Option<Self> {
        text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .map(|w| w.trim_matches('.'))
            .filter(|w| w.matches('.').count() == 2)
            .find_map(Self::parse)
    }

    /// A permanent failure.
    pub fn is_permanent(self) -> bool {
        self.class == 5
    }

    /// A temporary failure.
    pub fn is_transient(self) -> bool {
        self.class == 4
    }

    /// X.7.X: security or policy (spam filtering, authentication, reputation). It says
    /// something about the list's mail, not about the address.
    pub fn is_policy(self) -> bool {
        self.subject == 7
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_parse_exactly_and_are_found_in_replies() {
        assert_eq!(StatusCode::parse("5.1.1").unwrap().to_string(), "5.1.1");
        assert_eq!(
            StatusCode::parse("4.2.2 (mailbox full)")
                .unwrap()
                .to_string(),
            "4.2.2"
        );
        assert!(StatusCode::parse("5.1").is_none());
        assert!(StatusCode::parse("6.1.1").is_none());
        assert!(StatusCode::parse("5.1.1.1").is_none());
        let found = StatusCode::find("550 5.7.515 Access denied, sending domain does not meet the required authentication level").unwrap();
        assert_eq!(found.to_string(), "5.7.515");
        assert!(found.is_policy() && found.is_permanent());
        assert_eq!(
            StatusCode::find("smtp; 550-5.1.1 The email account does not exist.")
                .unwrap()
                .to_string(),
            "5.1.1"
        );
        assert!(StatusCode::find("version 1.2.3.4 of 10.0.0.1").is_none());
        assert!(StatusCode::find("no code here").is_none());
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in ReportKind::ALL {
            assert_eq!(ReportKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ReportKind::parse("bogus"), None);
    }
}
