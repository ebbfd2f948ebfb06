//! A subscriber's optional display name.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("A name can't contain line breaks or control characters.")]
    ControlCharacter,
    #[error("A name can't contain characters that change the direction or layout of text.")]
    LayoutCharacter,
    #[error("That name is too long (at most 100 characters).")]
    TooLong,
}

/// Free text, at most 100 characters, never containing CR, LF or other control characters,
/// so it is safe in a header. It may contain `<b>` and the like: HTML output escapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberName(String);

impl SubscriberName {
    /// An empty or blank name is no name.
    pub fn parse(input: &str) -> Result<Option<Self>, NameError> {
        if input.chars().any(|c| c.is_control()) {
            return Err(NameError::ControlCharacter);
        }
        if input.chars().any(is_layout_control) {
            return Err(NameError::LayoutCharacter);
        }
        let s = input.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if s.chars().count() > 100 {
            return Err(NameError::TooLong);
        }
        Ok(Some(Self(s.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The organisation someone gives when they register: the same rules as a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation(String);

impl Organisation {
    /// An empty or blank organisation is none.
    pub fn parse(input: &str) -> Result<Option<Self>, NameError> {
        Ok(SubscriberName::parse(input)?.map(|n| Self(n.0)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same organisation however it was typed ("Youthlink", " YouthLink "), for
    /// counting distinct ones in reports.
    pub fn key(&self) -> String {
        self.0
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    }
}

/// Characters that make text read other than it is: the bidirectional controls (U+202A–E,
/// U+2066–9, U+200E/F, U+061C), which can reverse what follows, and the line and
/// paragraph separators (U+2028/9), which fake a line break in a header or a greeting.
pub(super) fn is_layout_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{061C}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

impl fmt::Display for SubscriberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(SubscriberName::parse("  "), Ok(None));
        assert_eq!(
            SubscriberName::parse(" <b>Ann</b> ").map(|n| n.map(|n| n.0)),
            Ok(Some("<b>Ann</b>".into()))
        );
        assert_eq!(
            SubscriberName::parse("Ann\r\nBcc: x"),
            Err(NameError::ControlCharacter)
        );
        assert_eq!(
            SubscriberName::parse(&"x".repeat(101)),
            Err(NameError::TooLong)
        );
        for sneaky in [
            "Ann\u{202E}evil",
            "Ann\u{2028}Bcc",
            "Ann\u{2029}",
            "\u{2066}Ann",
        ] {
            assert_eq!(
                SubscriberName::parse(sneaky),
                Err(NameError::LayoutCharacter),
                "{sneaky:?}"
            );
        }
        assert_eq!(
            SubscriberName::parse("José Núñez").map(|n| n.map(|n| n.0)),
            Ok(Some("José Núñez".into()))
        );
    }
}
