//! The bounces that are not RFC 3464 DSNs, or whose DSN part is missing: a text body
//! naming each failed address and the SMTP reply that refused it.
//!
//! Whether a message is a bounce at all is decided first, by who sent it and what it says
//! about itself, never by a "550" somewhere in a person's mail: the sender must be a mail
//! system (`MAILER-DAEMON`, `postmaster`, `mailer-daemon@googlemail.com`, Exchange's
//! `MicrosoftExchange…`, a "Mail Delivery System") or the envelope sender must be null
//! (`Return-Path: <>`), *and* the subject or the text must read as a bounce (a known
//! subject, or one of the openings the MTAs write).
//!
//! Then the text before the returned copy of the message is read line by line. A failed
//! address starts a block: a line that begins with it (Postfix `<a@b>: host … said:`,
//! qmail and Yahoo `<a@b>:`, Exim's indented `  a@b`, Sendmail's `<a@b>`, Exchange's bare
//! `a@b` or `Name (a@b)`), or a sentence that names it (Gmail's "Your message wasn't
//! delivered to a@b because…", Microsoft 365's "Your message to a@b couldn't be
//! delivered."). The block runs to the next such line, and its first SMTP reply (`550 5.1.1
//! …`, Exchange's `#550 5.1.1 … ##` and `Remote Server returned '550 …'`, Yahoo's `554:
//! delivery error: …`, qmail's `(#5.1.1)`) is that address's status and diagnostic. The
//! same address named twice (Exchange names it in the summary and again in the
//! diagnostics) is one recipient.
//!
//! Kinds: a warning ("THIS IS A WARNING ONLY", "will be retried", "Delivery attempts will
//! continue", "Delivery is delayed") is `delayed` for every address, whatever the code.
//! Otherwise the enhanced status decides (5.x.x hard, 4.x.x soft; 5.7.x stays hard with
//! its status, which the store treats as a policy rejection); a reply with only a basic
//! code (Yahoo's `554:`) keeps the status empty, rather than inventing one, and takes its
//! kind from the code (5xx hard, 4xx soft); a block with no code at all is hard where the
//! text says the failure is permanent, soft otherwise.

use mail_parser::Message;

use super::{bare_address, header_value, header_values};
use crate::{
    bounce::{RecipientReport, Report},
    domain::{ReportKind, StatusCode},
};

/// Local parts (lower case) that mail systems send bounces from.
const DAEMONS: [&str; 7] = [
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "maildaemon",
    "postmaster",
    "mdaemon",
];

/// Display names of mail systems.
const DAEMON_NAMES: [&str; 4] = [
    "mail delivery system",
    "mail delivery subsystem",
    "mail administrator",
    "mail delivery service",
];

/// Subjects (lower case, contained) that bounces and warnings carry.
const SUBJECTS: [&str; 18] = [
    "undelivered mail",
    "undeliverable",
    "undelivered",
    "returned mail",
    "mail delivery failed",
    "delivery status notification",
    "failure notice",
    "delivery failure",
    "failed delivery",
    "delivery has failed",
    "could not be delivered",
    "couldn't be delivered",
    "delayed mail",
    "delivery delayed",
    "warning: could not send message",
    "warning: message",
    "mail system error",
    "non-delivery",
];

/// Openings (lower case, contained in the text) of the MTAs' and providers' bounces.
const OPENINGS: [&str; 16] = [
    "this is the mail system at host",
    "your message could not be delivered",
    "message was created automatically by mail delivery software",
    "this is the qmail-send program",
    "addresses had permanent fatal errors",
    "addresses had transient non-fatal errors",
    "delivery has failed to these recipients",
    "delivery is delayed to these recipients",
    "couldn't be delivered",
    "wasn't delivered to",
    "delivery to the following recipient",
    "unable to deliver your message",
    "address not found",
    "could not be delivered to one or more",
    "has not yet been delivered",
    "temporary problem delivering your message",
];

/// Words of a warning: the MTA is still trying.
const WARNINGS: [&str; 12] = [
    "this is a warning only",
    "will be retried",
    "will keep trying",
    "will continue trying",
    "will retry",
    "delivery attempts will continue",
    "has not yet been delivered",
    "delivery is delayed",
    "delivery has been delayed",
    "delivery delayed",
    "delayed mail",
    "transient non-fatal errors",
];

/// Words of a permanent failure, for a block that quotes no reply code.
const PERMANENT: [&str; 9] = [
    "permanent",
    "given up",
    "giving up",
    "user unknown",
    "unknown user",
    "no mailbox",
    "does not exist",
    "couldn't be found",
    "delivery has failed",
];

/// Lines (lower case, contained) where the returned copy of the message begins.
const COPY_MARKERS: [&str; 8] = [
    "this is a copy of the message",
    "below this line is a copy of the message",
    "original message headers",
    "----- original message",
    "-----original message",
    "message header follows",
    "unsent message below",
    "the header of the original message",
];

/// Sentences that name the failed address after these words (lower case).
const NAMING: [&str; 9] = [
    "wasn't delivered to ",
    "wasn\u{2019}t delivered to ",
    "couldn\u{2019}t be delivered to ",
    "was not delivered to ",
    "couldn't be delivered to ",
    "could not be delivered to ",
    "your message to ",
    "delivering your message to ",
    "deliver your message to ",
];

pub(super) fn parse(message: &Message<'_>) -> Option<Report> {
    let subject = message.subject().unwrap_or_default().to_lowercase();
    let text = message.body_text(0).unwrap_or_default();
    let section = before_copy(&text);
    let lower = section.to_lowercase();
    let reads_as_bounce = SUBJECTS.iter().any(|s| subject.contains(s))
        || OPENINGS.iter().any(|o| lower.contains(o))
        || header_value(message, "X-Failed-Recipients").is_some();
    if !(from_mail_system(message) && reads_as_bounce) {
        return None;
    }
    let warning = WARNINGS
        .iter()
        .any(|w| lower.contains(w) || subject.contains(w));
    let permanent = PERMANENT.iter().any(|p| lower.contains(p));
    let ours = own_addresses(message);
    let mut blocks = blocks(section, &ours);
    for failed in header_values(message, "X-Failed-Recipients") {
        for a in failed.split(',').filter_map(bare_address) {
            if !blocks.iter().any(|b| same(b.address.as_deref(), &a)) {
                blocks.push(Block::new(Some(a), String::new()));
            }
        }
    }
    if blocks.is_empty() {
        // A bounce whose address we can't read: still a bounce (the VERP tag may say
        // whose), with what the whole text says.
        blocks.push(Block::new(None, section.to_owned()));
    }
    let recipients: Vec<RecipientReport> = blocks
        .into_iter()
        .map(|b| b.into_recipient(warning, permanent))
        .collect();
    let kind = super::overall(&recipients);
    (kind != ReportKind::NotAReport).then(|| Report {
        kind,
        recipients,
        message_ids: Vec::new(),
        return_addresses: Vec::new(),
        id: String::new(),
    })
}

/// Whether the message comes from a mail system rather than a person.
fn from_mail_system(message: &Message<'_>) -> bool {
    let null_sender = header_values(message, "Return-Path")
        .iter()
        .any(|v| v.trim().trim_matches(['<', '>']).trim().is_empty());
    let from = message.from().and_then(|f| f.first());
    let by_address = from
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(local, _)| local.to_ascii_lowercase())
        .is_some_and(|local| {
            DAEMONS.contains(&local.as_str()) || local.starts_with("microsoftexchange")
        });
    let by_name = from
        .and_then(|a| a.name())
        .is_some_and(|n| DAEMON_NAMES.contains(&n.trim().to_lowercase().as_str()));
    null_sender || by_address || by_name
}

/// Addresses that are the report's own (where it was sent, who sent it): never a failed
/// recipient, even where the text names them.
fn own_addresses(message: &Message<'_>) -> Vec<String> {
    ["To", "Delivered-To", "X-Original-To", "Envelope-To", "From"]
        .into_iter()
        .flat_map(|h| header_values(message, h))
        .flat_map(|v| {
            v.split(',')
                .filter_map(bare_address)
                .map(|a| a.to_lowercase())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The text up to the returned copy of the message (or its quoted headers).
fn before_copy(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let lower = line.to_lowercase();
        let quoted_header = ["return-path:", "received: from"]
            .iter()
            .any(|h| lower.starts_with(h));
        if quoted_header || COPY_MARKERS.iter().any(|m| lower.contains(m)) {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

/// One failed address and the text about it.
#[derive(Debug)]
struct Block {
    address: Option<String>,
    text: String,
}

impl Block {
    fn new(address: Option<String>, text: String) -> Self {
        Self { address, text }
    }

    fn into_recipient(self, warning: bool, permanent: bool) -> RecipientReport {
        let reply = Reply::find(&self.text);
        let status = reply
            .as_ref()
            .map_or_else(|| StatusCode::find(&self.text), |r| r.status);
        let kind = if warning {
            ReportKind::Delayed
        } else {
            match (status, reply.as_ref().map(|r| r.code)) {
                (Some(s), _) if s.is_permanent() => ReportKind::Hard,
                (Some(s), _) if s.is_transient() => ReportKind::Soft,
                (_, Some(code)) if code >= 500 => ReportKind::Hard,
                (_, Some(_)) => ReportKind::Soft,
                _ if permanent => ReportKind::Hard,
                _ => ReportKind::Soft,
            }
        };
        let diagnostic = reply
            .map(|r| r.text)
            .or_else(|| first_paragraph(&self.text))
            .map(|d| clip(&d));
        RecipientReport {
            address: self.address,
            kind,
            status,
            diagnostic,
        }
    }
}

/// The blocks of `section`, one per failed address (see the module doc).
fn blocks(section: &str, ours: &[String]) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    // The open block's index and the indentation of the line that opened it.
    let mut open: Option<(usize, usize)> = None;
    let mut previous_blank = true;
    for line in section.lines() {
        let indent = line.len() - line.trim_start().len();
        let may_open = previous_blank || open.is_none_or(|(_, i)| indent <= i);
        let named = may_open
            .then(|| naming(line))
            .flatten()
            .filter(|(a, _)| !ours.contains(&a.to_lowercase()));
        previous_blank = line.trim().is_empty();
        if let Some((address, rest)) = named {
            let at = match blocks
                .iter()
                .position(|b| same(b.address.as_deref(), &address))
            {
                Some(at) => at,
                None => {
                    blocks.push(Block::new(Some(address), String::new()));
                    blocks.len() - 1
                }
            };
            push_line(&mut blocks[at].text, rest);
            open = Some((at, indent));
        } else if let Some((at, _)) = open {
            push_line(&mut blocks[at].text, line);
        }
    }
    blocks
}

fn push_line(text: &mut String, line: &str) {
    text.push_str(line);
    text.push('\n');
}

fn same(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.eq_ignore_ascii_case(b))
}

/// The failed address a line opens a block with, and the rest of the line.
fn naming(line: &str) -> Option<(String, &str)> {
    let trimmed = line.trim();
    if let Some(found) = leading_address(trimmed) {
        return Some(found);
    }
    // `Pat Doe (pat@example.net)` or `Pat Doe <pat@example.net>` alone on a line.
    if let Some(open) = trimmed.rfind(['(', '<']) {
        let close = if trimmed[open..].starts_with('(') {
            ')'
        } else {
            '>'
        };
        let name = &trimmed[..open];
        if trimmed.ends_with(close)
            && !name.contains(':')
            && name.split_whitespace().count() <= 5
            && !name.trim().is_empty()
        {
            let address = bare_address(&trimmed[open + 1..trimmed.len() - 1])?;
            return Some((address, ""));
        }
    }
    // ASCII lower case keeps byte offsets, so `at` indexes `trimmed` too.
    let lower = trimmed.to_ascii_lowercase();
    NAMING.iter().find_map(|phrase| {
        let at = lower.find(phrase)? + phrase.len();
        let after = trimmed.get(at..)?;
        let word = after.split_whitespace().next()?;
        let address = bare_address(word)?;
        Some((address, &after[word.len().min(after.len())..]))
    })
}

/// An address the line begins with: `<a@b>…`, or `a@b` followed by nothing, `:` or space.
fn leading_address(trimmed: &str) -> Option<(String, &str)> {
    if let Some(rest) = trimmed.strip_prefix('<') {
        let close = rest.find('>')?;
        let address = bare_address(&rest[..close])?;
        let tail = rest[close + 1..].trim_start_matches([':', '.']);
        return Some((address, tail));
    }
    let end = trimmed
        .find(|c: char| c.is_whitespace() || c == ':' || c == ',')
        .unwrap_or(trimmed.len());
    let word = &trimmed[..end];
    if !word.contains('@') || word.starts_with('@') || word.ends_with('@') {
        return None;
    }
    let address = bare_address(word)?;
    Some((address, trimmed[end..].trim_start_matches([':', ','])))
}

/// An SMTP reply quoted in text: its basic code, its enhanced status (if it gives one of
/// the same class), and the reply's words.
#[derive(Debug)]
struct Reply {
    code: u16,
    status: Option<StatusCode>,
    text: String,
}

impl Reply {
    /// The first 4xx or 5xx reply in `text`.
    fn find(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        (0..bytes.len().saturating_sub(2)).find_map(|i| {
            let code = reply_code(text, i)?;
            let after = &text[i + 3..];
            let status = after
                .trim_start_matches([' ', '-', '#', ':'])
                .split(|c: char| c.is_whitespace() || c == ';' || c == '\'')
                .next()
                .map(|t| t.trim_end_matches(['.', ',', ':', ')']))
                .and_then(StatusCode::parse)
                .filter(|s| u16::from(s.class) == code / 100);
            Some(Self {
                code,
                status,
                text: reply_words(&text[i..]),
            })
        })
    }
}

/// The code at byte `i`, if three digits stand there alone as an SMTP reply does (`550 `,
/// `550-`, `554:`, `#550`, `'550`), not inside a number, an address or a version.
fn reply_code(text: &str, i: usize) -> Option<u16> {
    let bytes = text.as_bytes();
    let digits = bytes.get(i..i + 3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !matches!(digits[0], b'4' | b'5') {
        return None;
    }
    let before_ok = i == 0 || {
        let b = bytes[i - 1];
        !(b.is_ascii_alphanumeric() || b".-_/:@+=[".contains(&b))
    };
    let after_ok = bytes
        .get(i + 3)
        .is_none_or(|b| matches!(b, b' ' | b'-' | b':' | b'\r' | b'\n' | b'\t'));
    // `port 465 `: a port, not a reply.
    let port = text[..i].trim_end().to_ascii_lowercase().ends_with("port");
    (before_ok && after_ok && !port)
        .then(|| text[i..i + 3].parse().ok())
        .flatten()
}

/// The reply from its code to the end of its paragraph, on one line, without the
/// quoting Exchange puts around it.
fn reply_words(from_code: &str) -> String {
    let paragraph = from_code.split("\n\n").next().unwrap_or(from_code);
    let paragraph = paragraph.split("\r\n\r\n").next().unwrap_or(paragraph);
    let words = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    words
        .trim_end_matches(['#', ' '])
        .trim_end_matches('\'')
        .trim()
        .to_owned()
}

fn first_paragraph(text: &str) -> Option<String> {
    let mut paragraph = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !paragraph.is_empty() {
                break;
            }
        } else {
            paragraph.extend(line.split_whitespace());
        }
    }
    (!paragraph.is_empty()).then(|| paragraph.join(" "))
}

/// Diagnostics are for people: a few hundred characters say what went wrong.
fn clip(text: &str) -> String {
    const MAX: usize = 400;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
