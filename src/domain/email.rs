//! A subscriber's address, parsed once at the edge.

use std::fmt;

/// Why an address was refused. The text is shown to the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Please enter an email address.")]
    Empty,
    #[error("An email address can't contain line breaks or control characters.")]
    ControlCharacter,
    #[error("That address is too long (at most 254 characters).")]
    TooLong,
    #[error("An email address needs exactly one @, like name@example.org.")]
    MissingAt,
    #[error("The part after the @ must be a domain name, like example.org.")]
    BadDomain,
    #[error("That doesn't look like an email address: {0}")]
    Invalid(String),
}

/// A valid, deliverable-looking address. The original spelling is kept for display and
/// delivery; [`SubscriberEmail::key`] is the case-folded form used for uniqueness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberEmail(String);

impl SubscriberEmail {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        // Reject control characters before trimming: a CR/LF anywhere is an injection
        // attempt, not whitespace to tidy away.
        if input.chars().any(|c| c.is_control()) {
            return Err(EmailError::ControlCharacter);
        }
        let s = input.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(EmailError::MissingAt);
        };
        if local.is_empty() || local.contains('@') || local.contains(char::is_whitespace) {
            return Err(EmailError::MissingAt);
        }
        // A list address is delivered over the public internet: insist on a dotted domain
        // name (no IP literals, no bare hosts), each label well formed.
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && domain.len() <= 253
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(EmailError::BadDomain);
        }
        // lettre's parser is what will put the address on the wire; if it refuses, so do we.
        s.parse::<lettre::Address>()
            .map_err(|e| EmailError::Invalid(e.to_string()))?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The uniqueness key: the whole address lower-cased. Treating the local part as
    /// case-insensitive is what every large provider does and what people expect.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }

    /// The address shortened for logs, so that logs never become a copy of the list.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    pub fn to_address(&self) -> lettre::Address {
        // parse() already proved this parses.
        self.0
            .parse()
            .unwrap_or_else(|_| unreachable!("SubscriberEmail holds an address lettre accepted"))
    }
}

impl fmt::Display for SubscriberEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SubscriberEmail {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `jane.doe@example.org` → `j…@e…org`: enough to correlate log lines, not enough to mail.
pub fn redact(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().unwrap_or('?');
            let tld = domain.rsplit('.').next().unwrap_or("");
            let dfirst = domain.chars().next().unwrap_or('?');
            format!("{first}…@{dfirst}…{tld}")
        }
        None => "…".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@example.org",
            "Jane.Doe+list@Mail.Example.COM",
            "  x@y.mn.us  ",
        ] {
            assert!(SubscriberEmail::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            SubscriberEmail::parse("Jane@Example.org").map(|e| e.key()),
            Ok("jane@example.org".into())
        );
    }

    #[test]
    fn refuses_bad_addresses_with_a_reason() {
        assert_eq!(SubscriberEmail::parse(""), Err(EmailError::Empty));
        assert_eq!(SubscriberEmail::parse("plain"), Err(EmailError::MissingAt));
        assert_eq!(
            SubscriberEmail::parse("a@@b.org"),
            Err(EmailError::MissingAt)
        );
        assert_eq!(
            SubscriberEmail::parse("a@localhost"),
            Err(EmailError::BadDomain)
        );
        assert_eq!(
            SubscriberEmail::parse("a@b..org"),
            Err(EmailError::BadDomain)
        );
        assert_eq!(
            SubscriberEmail::parse("a b@c.org"),
            Err(EmailError::MissingAt)
        );
        assert_eq!(
            SubscriberEmail::parse("a@b.org\r\nBcc: victim@x.org"),
            Err(EmailError::ControlCharacter)
        );
        let long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(SubscriberEmail::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn redaction_hides_the_address() {
        assert_eq!(redact("jane.doe@example.org"), "j…@e…org");
        assert!(!redact("jane.doe@example.org").contains("jane"));
    }
}
