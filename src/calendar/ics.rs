//! RFC 5545 iCalendar output for sessions (the feed and email invites).
//!
//! Flow: callers pair each `Session` with the SEQUENCE number they track for
//! its UID and pick a METHOD; `render` writes one VCALENDAR. Times are written
//! in UTC (`...Z`), which every client understands without a VTIMEZONE block;
//! the wall-clock correctness already happened when sessions were built.
//! Every content line goes through `escape_text` (for TEXT values) and `fold`,
//! so no caller can produce an invalid file from odd config text.

use chrono::{DateTime, Utc};

use super::session::Session;

/// The iTIP method of the calendar object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A feed or an invitation/update: events carry their own status.
    Publish,
    /// A cancellation notice: every event in it is marked cancelled.
    Cancel,
}

/// One session as it goes into a calendar object.
#[derive(Debug, Clone, Copy)]
pub struct IcsEvent<'a> {
    pub session: &'a Session,
    /// RFC 5545 SEQUENCE; callers bump it whenever the fingerprint changes so
    /// clients accept the update instead of ignoring it as stale.
    pub sequence: u32,
}

/// RFC 5545 §3.1: lines SHOULD NOT be longer than 75 octets, excluding CRLF.
const MAX_LINE_OCTETS: usize = 75;

/// A whole VCALENDAR, CRLF line endings, lines folded at 75 octets (never
/// splitting a UTF-8 char), TEXT values escaped (backslash, semicolon, comma,
/// newline).
pub fn render(
    events: &[IcsEvent<'_>],
    method: Method,
    dtstamp: DateTime<Utc>,
    prodid: &str,
) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: &str| {
        out.push_str(&fold(&format!("{name}:{value}")));
        out.push_str("\r\n");
    };
    line("BEGIN", "VCALENDAR");
    line("VERSION", "2.0");
    line("PRODID", &escape_text(prodid));
    line("CALSCALE", "GREGORIAN");
    line(
        "METHOD",
        match method {
            Method::Publish => "PUBLISH",
            Method::Cancel => "CANCEL",
        },
    );
    for event in events {
        let s = event.session;
        line("BEGIN", "VEVENT");
        line("UID", &escape_text(&s.uid));
        line("DTSTAMP", &utc_stamp(dtstamp));
        line("SEQUENCE", &event.sequence.to_string());
        line("DTSTART", &utc_stamp(s.start.to_utc()));
        line("DTEND", &utc_stamp(s.end.to_utc()));
        line("SUMMARY", &escape_text(&summary(s)));
        if !s.location.is_empty() {
            line("LOCATION", &escape_text(&s.location));
        }
        if !s.description.is_empty() {
            line("DESCRIPTION", &escape_text(&s.description));
        }
        if let Some(url) = &s.registration_url {
            // URI values are not TEXT-escaped; config parsing already refused
            // whitespace, so only guard against hand-built sessions here.
            let url: String = url.chars().filter(|c| !c.is_control()).collect();
            line("URL", &url);
        }
        let cancelled = s.cancelled || method == Method::Cancel;
        line("STATUS", if cancelled { "CANCELLED" } else { "CONFIRMED" });
        line("END", "VEVENT");
    }
    line("END", "VCALENDAR");
    out
}

/// The event title as calendar apps show it.
pub fn summary(session: &Session) -> String {
    match &session.topic {
        Some(topic) => format!("{} — {}", session.title, topic),
        None => session.title.clone(),
    }
}

fn utc_stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Escapes a TEXT value (RFC 5545 §3.3.11). Any line break style becomes
/// `\n`; other control characters are not allowed in TEXT and are dropped.
pub fn escape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Folds one logical line into CRLF + space continued physical lines of at
/// most 75 octets each (the leading space counts), splitting only at char
/// boundaries so multi-byte characters such as "—" survive intact.
pub fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 60 * 3);
    let mut used = 0;
    for c in line.chars() {
        if used + c.len_utf8() > MAX_LINE_OCTETS {
            out.push_str("\r\n ");
            used = 1;
        }
        out.push(c);
        used += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_specials_and_line_breaks() {
        assert_eq!(escape_text(r"a\b;c,d"), r"a\\b\;c\,d");
        assert_eq!(escape_text("x\r\ny\nz\rw"), r"x\ny\nz\nw");
        assert_eq!(escape_text("bell\u{7}tab\t"), "belltab\t");
    }

    #[test]
    fn fold_respects_octets_and_chars() {
        let long = format!("DESCRIPTION:{}", "é—x".repeat(40));
        let folded = fold(&long);
        for physical in folded.split("\r\n") {
            assert!(physical.len() <= MAX_LINE_OCTETS, "{physical:?}");
        }
        assert_eq!(folded.replace("\r\n ", ""), long);
        assert_eq!(fold("SHORT:x"), "SHORT:x");
        let exact = "A".repeat(75);
        assert_eq!(fold(&exact), exact);
        assert_eq!(fold(&"A".repeat(76)), format!("{}\r\n A", "A".repeat(75)));
    }
}
