//! Text lists, one person a line: the address alone, or `Name <address>` as `mailman
//! members` prints them.
//!
//! Mailman writes each line with Python's `formataddr`, so a name with a comma or a dot is
//! in double quotes (`"Doe, Jane" <jane@example.org>`, with `\"` inside), and a name that
//! is not ASCII is an RFC 2047 encoded word (`=?utf-8?b?Wm/Dqw==?= <zoe@example.org>`).
//! Blank lines are skipped; a line longer than [`MAX_LINE`] is a bad row, and memory stays
//! at about that much whatever the file holds.

use std::io::{self, BufRead, BufReader, Read};

use mail_parser::{HeaderValue, parsers::MessageStream};

use crate::domain::{EmailError, SubscriberEmail, SubscriberName};

use super::email_error;

/// Longer than any address with a name (an address is at most 254 bytes).
const MAX_LINE: usize = 4096;

/// Reads a text list line by line, numbering lines as an editor does.
pub(super) struct Lines<R> {
    reader: BufReader<R>,
    /// The line just read, without its line end.
    buf: Vec<u8>,
    line: u64,
    offset: u64,
}

impl<R: Read> Lines<R> {
    pub fn new(inner: R) -> Self {
        Self {
            reader: BufReader::with_capacity(1 << 16, inner),
            buf: Vec::new(),
            line: 0,
            offset: 0,
        }
    }

    /// How far into the file the reader is, in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next line that is not blank, with its number, as an address and name or why it
    /// is skipped; `None` at the end of the file.
    pub fn next_row(&mut self) -> io::Result<Option<(u64, super::Checked)>> {
        loop {
            let Some(too_long) = self.read_line()? else {
                return Ok(None);
            };
            self.line += 1;
            if too_long {
                return Ok(Some((
                    self.line,
                    Err(format!("the line is longer than {MAX_LINE} bytes")),
                )));
            }
            let mut bytes = self.buf.as_slice();
            if self.line == 1 {
                bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
            }
            if bytes.trim_ascii().is_empty() {
                continue;
            }
            return Ok(Some((self.line, check_line(bytes).map(super::Row::active))));
        }
    }

    /// Reads up to the next LF into `buf` (at most [`MAX_LINE`] bytes of it, the rest
    /// passed over). `None` at the end of the file; otherwise whether the line was cut.
    fn read_line(&mut self) -> io::Result<Option<bool>> {
        self.buf.clear();
        let mut any = false;
        let mut too_long = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(any.then_some(too_long));
            }
            any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            // The bytes of this chunk before the LF, as many as fit.
            let content = take - usize::from(done);
            let room = MAX_LINE.saturating_sub(self.buf.len());
            too_long |= content > room;
            self.buf.extend_from_slice(&chunk[..content.min(room)]);
            self.reader.consume(take);
            self.offset += take as u64;
            if done {
                return Ok(Some(too_long));
            }
        }
    }
}

/// A line's address and name, or why the line is skipped. Reasons never quote the line.
pub(super) fn check_line(
    bytes: &[u8],
) -> Result<(SubscriberEmail, Option<SubscriberName>), String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "the line is not UTF-8 text (save the file as UTF-8)".to_owned())?;
    let text = text.trim();
    if let Some(inner) = text.strip_suffix('>')
        && let Some(open) = inner.rfind('<')
    {
        let email = SubscriberEmail::parse(&inner[open + 1..]).map_err(|e| match e {
            EmailError::Empty => "no address between < and >".to_owned(),
            e => email_error(e),
        })?;
        let name = display_name(inner[..open].trim())?;
        return Ok((email, name));
    }
    Ok((SubscriberEmail::parse(text).map_err(email_error)?, None))
}

/// The name before `<address>`: unquoted, and decoded if RFC 2047-encoded.
fn display_name(text: &str) -> Result<Option<SubscriberName>, String> {
    let unquoted = match text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => unescape(inner),
        None => text.to_owned(),
    };
    let decoded = if unquoted.contains("=?") {
        decode_words(&unquoted)
    } else {
        unquoted
    };
    SubscriberName::parse(&decoded).map_err(|e| format!("invalid name: {e}"))
}

/// `\x` → `x`, as in an RFC 5322 quoted string.
fn unescape(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Decodes RFC 2047 encoded words as a mail header's text; undecodable text stays as is.
fn decode_words(text: &str) -> String {
    // A header value ends at a line end that is not followed by a space.
    let header = format!("{text}\n");
    match MessageStream::new(header.as_bytes()).parse_unstructured() {
        HeaderValue::Text(decoded) => decoded.into_owned(),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> (String, Option<String>) {
        let (email, name) = check_line(line.as_bytes()).expect(line);
        (
            email.as_str().to_owned(),
            name.map(|n| n.as_str().to_owned()),
        )
    }

    #[test]
    fn lines_as_mailman_prints_them() {
        let cases = [
            ("anne@example.org", ("anne@example.org", None)),
            (
                "  Anne Person <anne@example.org>\r",
                ("anne@example.org", Some("Anne Person")),
            ),
            (
                "\"Doe, Jane\" <jane@example.org>",
                ("jane@example.org", Some("Doe, Jane")),
            ),
            (
                "\"Ann \\\"Annie\\\" Lee\" <ann@example.org>",
                ("ann@example.org", Some("Ann \"Annie\" Lee")),
            ),
            (
                "=?utf-8?b?Wm/DqyDDkQ==?= <zoe@example.org>",
                ("zoe@example.org", Some("Zoë Ñ")),
            ),
            ("<bare@example.org>", ("bare@example.org", None)),
        ];
        for (line, (email, name)) in cases {
            assert_eq!(
                parsed(line),
                (email.to_owned(), name.map(str::to_owned)),
                "{line}"
            );
        }
    }

    #[test]
    fn bad_lines_say_why_without_quoting_them() {
        for (line, reason) in [
            ("Anne Person", "invalid email address"),
            ("Anne <>", "no address between < and >"),
            ("Anne\u{1} <anne@example.org>", "invalid name"),
        ] {
            let e = check_line(line.as_bytes()).unwrap_err();
            assert!(e.starts_with(reason) && !e.contains("Anne"), "{line}: {e}");
        }
        assert!(
            check_line(b"\xff@example.org")
                .unwrap_err()
                .contains("UTF-8")
        );
    }

    #[test]
    fn lines_are_numbered_through_blank_lines_crlf_and_a_bom() {
        let text = "\u{feff}a@example.org\r\n\r\n\nB <b@example.org>\nnope\n";
        let mut lines = Lines::new(text.as_bytes());
        let mut seen = Vec::new();
        while let Some((line, row)) = lines.next_row().expect("read") {
            seen.push((line, row.is_ok()));
        }
        assert_eq!(seen, [(1, true), (4, true), (5, false)]);
        assert_eq!(lines.offset(), text.len() as u64);
    }

    #[test]
    fn a_very_long_line_is_one_bad_row() {
        let text = format!("{}\nc@example.org", "x".repeat(3 * MAX_LINE));
        let mut lines = Lines::new(text.as_bytes());
        let (line, row) = lines.next_row().expect("read").expect("row");
        assert_eq!(line, 1);
        assert!(row.unwrap_err().contains("longer than"));
        let (line, row) = lines.next_row().expect("read").expect("row");
        assert_eq!((line, row.is_ok()), (2, true));
        assert!(lines.next_row().expect("read").is_none());
    }
}
