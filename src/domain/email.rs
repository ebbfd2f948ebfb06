//! A subscriber's address, parsed once at the edge into one canonical spelling.
//!
//! Two spellings that reach the same mailbox on the wire must be one subscriber with one
//! key, or the per-address limit can be dodged (`"victim"@x.test`) and a look-alike can
//! squat a real address (`\u{212A}ate@x.test`, KELVIN SIGN, lower-cases to `kate@…`). So,
//! in order: control and invisible characters are refused; the text is NFKC-normalised (compatibility
//! forms such as the Kelvin sign and fullwidth letters fold into their plain letters); a
//! quoted local part that says the same as a plain one is unquoted and any other is
//! refused; the domain goes through IDNA to its ASCII (punycode) form; and a non-ASCII
//! local part is refused unless the relay is known to carry SMTPUTF8 (`mail.smtputf8`).

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Why an address was refused. The text is shown to the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Please enter an email address.")]
    Empty,
    #[error("An email address can't contain line breaks, control or invisible characters.")]
    ControlCharacter,
    #[error("That address is too long (at most 254 characters).")]
    TooLong,
    #[error("An email address needs exactly one @, like name@example.org.")]
    MissingAt,
    #[error("The part after the @ must be a domain name, like example.org.")]
    BadDomain,
    #[error("An email address can't contain spaces.")]
    Whitespace,
    #[error(
        "Addresses with quotation marks before the @ can't be used here. Please use the plain form, like name@example.org."
    )]
    Quoted,
    #[error(
        "This list can only deliver to addresses with plain letters (a–z, 0–9 and . _ + -) before the @."
    )]
    NonAsciiLocalPart,
    #[error("That doesn't look like an email address: {0}")]
    Invalid(String),
}

/// A valid, deliverable-looking address in its canonical spelling (see the module doc):
/// the local part as typed (after normalisation), the domain in ASCII. The spelling is
/// kept for display and delivery; [`SubscriberEmail::key`] is the case-folded form used
/// for uniqueness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberEmail(String);

/// Characters allowed in an unquoted local part (RFC 5322 `atext`), besides letters and
/// digits.
const ATEXT: &str = "!#$%&'*+-/=?^_`{|}~";

impl SubscriberEmail {
    /// Parses an address for a relay without SMTPUTF8: a non-ASCII local part is refused.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        Self::parse_with(input, false)
    }

    /// Parses an address; `smtputf8` allows a non-ASCII local part (`mail.smtputf8`).
    pub fn parse_with(input: &str, smtputf8: bool) -> Result<Self, EmailError> {
        // Reject control characters before trimming: a CR/LF anywhere is an injection
        // attempt, not whitespace to tidy away.
        if input.chars().any(|c| c.is_control() || invisible(c)) {
            return Err(EmailError::ControlCharacter);
        }
        let normalised: String = input.trim().nfkc().collect();
        if normalised.chars().any(|c| c.is_control() || invisible(c)) {
            return Err(EmailError::ControlCharacter);
        }
        let s = normalised.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = split(s)?;
        if !local.is_ascii() && !smtputf8 {
            return Err(EmailError::NonAsciiLocalPart);
        }
        let domain = ascii_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > 254 {
            return Err(EmailError::TooLong);
        }
        // lettre's parser is what will put the address on the wire; if it refuses, so do we.
        address
            .parse::<lettre::Address>()
            .map_err(|e| EmailError::Invalid(e.to_string()))?;
        Ok(Self(address))
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

/// Characters that show nothing or reorder text: the name's layout controls (bidi, line
/// and paragraph separators), zero-width characters, the soft hyphen and the BOM. NFKC keeps
/// them, so in a non-ASCII local part (`mail.smtputf8`) they would make a second key for a
/// mailbox that looks the same, or disguise the address wherever it is shown.
fn invisible(c: char) -> bool {
    super::name::is_layout_control(c)
        || matches!(
            c,
            '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
        )
}

/// The local part (unquoted) and the domain as typed.
fn split(s: &str) -> Result<(String, &str), EmailError> {
    let (local, domain) = if let Some(rest) = s.strip_prefix('"') {
        let (content, after) = quoted(rest).ok_or(EmailError::Quoted)?;
        // An escape can part a letter from its combining mark (`"\g\◌́"`), so the unquoted
        // text is normalised again, or it would key apart from its composed spelling
        // (found by tests/fuzz.rs).
        let content: String = content.nfkc().collect();
        let domain = after.strip_prefix('@').ok_or(EmailError::MissingAt)?;
        // Only a quoted part that a plain one could say is the same mailbox; anything
        // else ("john smith", "a@b") would be delivered somewhere we can't key safely.
        if !dot_atom(&content) {
            return Err(EmailError::Quoted);
        }
        (content, domain)
    } else {
        let (local, domain) = s.rsplit_once('@').ok_or(EmailError::MissingAt)?;
        if local.contains('"') {
            return Err(EmailError::Quoted);
        }
        (local.to_owned(), domain)
    };
    if local.contains(char::is_whitespace) || domain.contains(char::is_whitespace) {
        return Err(EmailError::Whitespace);
    }
    if local.is_empty() || local.contains('@') {
        return Err(EmailError::MissingAt);
    }
    if !dot_atom(&local) {
        return Err(EmailError::Invalid(
            "the part before the @ has characters an address can't have".into(),
        ));
    }
    Ok((local, domain))
}

/// The content of a quoted string whose opening quote is already consumed, with its
/// backslash escapes undone, and the text after the closing quote.
fn quoted(rest: &str) -> Option<(String, &str)> {
    let mut content = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => content.push(chars.next()?.1),
            '"' => return Some((content, &rest[i + 1..])),
            c => content.push(c),
        }
    }
    None
}

/// RFC 5322 `dot-atom-text` (with any non-ASCII character allowed as RFC 6531 does):
/// atoms of letters, digits and `atext`, joined by single dots.
fn dot_atom(local: &str) -> bool {
    !local.is_empty()
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_alphanumeric() || ATEXT.contains(c) || !c.is_ascii())
        })
}

/// The domain in its ASCII form (IDNA, UTS #46), as DNS and the envelope carry it. A list
/// address is delivered over the public internet: a dotted domain name (no IP literals,
/// no bare hosts), each label well formed.
fn ascii_domain(domain: &str) -> Result<String, EmailError> {
    let ascii = idna::domain_to_ascii(domain).map_err(|_| EmailError::BadDomain)?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let ok = labels.len() >= 2
        && ascii.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(ascii)
    } else {
        Err(EmailError::BadDomain)
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
            Err(EmailError::Whitespace)
        );
        assert_eq!(
            SubscriberEmail::parse("a@b.org\r\nBcc: victim@x.org"),
            Err(EmailError::ControlCharacter)
        );
        // Found by tests/fuzz.rs: with mail.smtputf8 these were kept in the local part.
        for hidden in [
            "jo\u{200E}e@x.test",
            "jo\u{202E}e@x.test",
            "jo\u{200B}e@x.test",
            "\u{FEFF}joe@x.test",
        ] {
            assert_eq!(
                SubscriberEmail::parse_with(hidden, true),
                Err(EmailError::ControlCharacter),
                "{hidden:?}"
            );
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(SubscriberEmail::parse(&long), Err(EmailError::TooLong));
    }

    /// Spellings that reach one mailbox share one key; the rest are refused with a reason.
    #[test]
    fn one_mailbox_one_key() {
        use EmailError::*;
        let same_as_victim: &[&str] = &[
            "victim@x.test",
            "Victim@X.Test",
            "VICTIM@x.test",
            "  victim@x.test ",
            "\"victim\"@x.test",
            "\"\\v\\i\\c\\t\\i\\m\"@x.test",
            "\"Victim\"@x.test",
            "ｖｉｃｔｉｍ@x.test",
            "victim＠x.test",
            "victim@ｘ.ｔｅｓｔ",
            "victim@X.TEST",
        ];
        for spelling in same_as_victim {
            let parsed = SubscriberEmail::parse(spelling);
            assert_eq!(
                parsed.as_ref().map(|e| e.key()),
                Ok("victim@x.test".to_owned()),
                "{spelling:?}"
            );
        }
        let canonical: &[(&str, &str)] = &[
            ("\u{212A}ate@x.test", "kate@x.test"),
            ("kate@x.test", "kate@x.test"),
            ("jane.doe+list@example.org", "jane.doe+list@example.org"),
            ("\"jane.doe\"@example.org", "jane.doe@example.org"),
            ("o'brien@example.ie", "o'brien@example.ie"),
            ("ann@bücher.example", "ann@xn--bcher-kva.example"),
            ("ann@BÜCHER.example", "ann@xn--bcher-kva.example"),
            ("ann@xn--bcher-kva.example", "ann@xn--bcher-kva.example"),
            ("ﬁle@example.org", "file@example.org"),
        ];
        for (spelling, key) in canonical {
            assert_eq!(
                SubscriberEmail::parse(spelling).map(|e| e.key()),
                Ok((*key).to_owned()),
                "{spelling:?}"
            );
        }
        let refused: &[(&str, EmailError)] = &[
            ("\"vic\tim\"@x.test", ControlCharacter),
            ("\"john smith\"@example.org", Quoted),
            ("\"a@b\"@example.org", Quoted),
            ("\"unterminated@example.org", Quoted),
            ("\"\"@example.org", Quoted),
            ("vic\"tim\"@x.test", Quoted),
            ("jöran@example.se", NonAsciiLocalPart),
            ("виктор@example.org", NonAsciiLocalPart),
            (
                "a..b@example.org",
                Invalid("the part before the @ has characters an address can't have".into()),
            ),
            (
                ".a@example.org",
                Invalid("the part before the @ has characters an address can't have".into()),
            ),
            ("a@[127.0.0.1]", BadDomain),
            ("a@exa_mple.org", BadDomain),
            ("a@-x.org", BadDomain),
            ("victim@x.test.", BadDomain),
            ("a\u{2028}@x.org", ControlCharacter),
        ];
        for (spelling, why) in refused {
            assert_eq!(
                SubscriberEmail::parse(spelling).as_ref().map(|e| e.key()),
                Err(why),
                "{spelling:?}"
            );
        }
        // With a relay that carries SMTPUTF8, a non-ASCII local part is an address.
        assert_eq!(
            SubscriberEmail::parse_with("Jöran@Example.se", true).map(|e| e.key()),
            Ok("jöran@example.se".to_owned())
        );
        assert_eq!(
            SubscriberEmail::parse_with("\"\\jo\\\u{308}ran\"@x.se", true).map(|e| e.key()),
            Ok("jöran@x.se".to_owned())
        );
        assert!(same_as_victim.len() + canonical.len() + refused.len() >= 30);
    }

    #[test]
    fn redaction_hides_the_address() {
        assert_eq!(redact("jane.doe@example.org"), "j…@e…org");
        assert!(!redact("jane.doe@example.org").contains("jane"));
    }
}
