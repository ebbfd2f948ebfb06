//! What of the mail setup may reach a log line or `harborlist status`.
//!
//! The relay's URL carries its password, and a relay's reply often echoes an address
//! ("554 5.7.1 <jane@example.org>: Relay access denied"). Both are shown, but only in a
//! form that is enough to recognise and not enough to use: the password as `***`, each
//! address shortened as [`crate::domain::redact`] does.

use crate::domain::redact;

/// `mail.smtp_url` with its password hidden: `smtp://user:***@relay:587?tls=required`. A URL
/// that does not parse is shown only by its scheme, as it could hold anything.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have a password, and this one had one.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => {
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            format!("{scheme}://… (unparsable)")
        }
    }
}

/// `text` with every address in it shortened: `<jane.doe@example.org>` →
/// `<j…@e…org>`. A word counts as an address when it has an `@` with something either side.
pub fn redact_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if is_address_char(c) {
            word.push(c);
        } else {
            push_word(&mut out, &mut word);
            out.push(c);
        }
    }
    push_word(&mut out, &mut word);
    out
}

fn is_address_char(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '<' | '>' | '(' | ')' | '[' | ']' | ',' | ';' | '"' | '\''
        )
}

fn push_word(out: &mut String, word: &mut String) {
    let at_inside = word
        .find('@')
        .is_some_and(|at| at > 0 && at + 1 < word.len());
    if at_inside {
        // A trailing full stop or colon ends the sentence, not the address.
        let trimmed = word.trim_end_matches(['.', ':']);
        let tail = &word[trimmed.len()..];
        out.push_str(&redact(trimmed));
        out.push_str(tail);
    } else {
        out.push_str(word);
    }
    word.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let shown = redacted_url("smtp://mailer:s3cr%40t@relay.example.org:587?tls=required");
        assert_eq!(
            shown,
            "smtp://mailer:***@relay.example.org:587?tls=required"
        );
        assert!(!shown.contains("s3cr"));
        assert_eq!(
            redacted_url("smtp://127.0.0.1:2525"),
            "smtp://127.0.0.1:2525"
        );
        assert_eq!(
            redacted_url("smtps://user@relay:465"),
            "smtps://user@relay:465"
        );
        assert!(!redacted_url("smtp://u:pa ss@[bad").contains("pa ss"));
    }

    #[test]
    fn addresses_in_a_reply_are_shortened() {
        assert_eq!(
            redact_addresses("5.7.1 <jane.doe@example.org>: Relay access denied"),
            "5.7.1 <j…@e…org>: Relay access denied"
        );
        assert_eq!(
            redact_addresses("5.1.1 User unknown: bob@mail.example.com."),
            "5.1.1 User unknown: b…@m…com."
        );
        assert_eq!(
            redact_addresses("5.7.8 Authentication credentials invalid"),
            "5.7.8 Authentication credentials invalid"
        );
        assert_eq!(redact_addresses("a @ b, x@, @y"), "a @ b, x@, @y");
    }
}
