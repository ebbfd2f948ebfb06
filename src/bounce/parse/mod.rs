//! Reading a message from the return path into a [`Report`], touching nothing.
//!
//! The formats are tried from the most to the least specific: an RFC 5965 feedback report
//! (`arf.rs`), an RFC 3464 DSN (`dsn.rs`), the plain-text bounces MTAs and providers still
//! send (`plain.rs`), then auto-replies (`auto_reply.rs`: some MTAs mark their bounces
//! `Auto-Submitted: auto-replied` too, so the bounce formats go first). Whatever matches
//! none is not a report. Separately, every format's returned message is searched for
//! Message-IDs and return paths (`returned.rs`), which is how a report is matched to what
//! harborlist sent.

mod arf;
mod auto_reply;
mod dsn;
mod plain;
mod returned;

use mail_parser::{Message, MessageParser};
use sha2::{Digest, Sha256};

use super::{RecipientReport, Report};
use crate::domain::{ReportKind, StatusCode};

/// Reads `raw` (a whole message, headers and body). Never fails: what can't be read is
/// not a report.
pub fn parse(raw: &[u8]) -> Report {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Report::not_a_report(bytes_id(raw));
    };
    let mut report = arf::parse(&message)
        // A DSN that names no failure (every recipient delivered) may still be a
        // plain-text bounce or an auto-reply underneath.
        .or_else(|| dsn::parse(&message).filter(|r| r.kind != ReportKind::NotAReport))
        .or_else(|| plain::parse(&message))
        .or_else(|| auto_reply::parse(&message))
        .unwrap_or_else(|| Report::not_a_report(String::new()));
    report.id = message
        .message_id()
        .filter(|id| !id.trim().is_empty())
        .map_or_else(|| bytes_id(raw), |id| format!("<{}>", id.trim()));
    if report.kind != ReportKind::NotAReport {
        returned::collect(&message, &mut report);
    }
    report
}

/// A report without a Message-ID is known by its bytes.
fn bytes_id(raw: &[u8]) -> String {
    format!("sha256:{}", crate::domain::hex(&Sha256::digest(raw)))
}

/// The kind of one recipient's failure, by its DSN action and status.
pub(crate) fn failure_kind(action: Option<&str>, status: Option<StatusCode>) -> Option<ReportKind> {
    let action = action.map(|a| a.trim().to_ascii_lowercase());
    match action.as_deref() {
        Some("delayed") => return Some(ReportKind::Delayed),
        // Delivered, relayed or expanded: nothing failed.
        Some("delivered" | "relayed" | "expanded") => return None,
        _ => {}
    }
    match status {
        Some(s) if s.is_permanent() => Some(ReportKind::Hard),
        Some(s) if s.is_transient() => Some(ReportKind::Soft),
        Some(_) => None,
        // "failed" without a status: the receiver gave up, permanently.
        None if action.as_deref() == Some("failed") => Some(ReportKind::Hard),
        None => None,
    }
}

/// The report's overall kind: its worst recipient's.
pub(crate) fn overall(recipients: &[RecipientReport]) -> ReportKind {
    [ReportKind::Hard, ReportKind::Soft, ReportKind::Delayed]
        .into_iter()
        .find(|k| recipients.iter().any(|r| r.kind == *k))
        .unwrap_or(ReportKind::NotAReport)
}

/// An address as reports write it: `rfc822; a@b`, `<a@b>`, `"Name" <a@b>` become `a@b`.
pub(crate) fn bare_address(text: &str) -> Option<String> {
    let text = text.trim();
    let text = match text.split_once(';') {
        Some((kind, rest)) if !kind.contains('@') => rest,
        _ => text,
    };
    let text = match (text.find('<'), text.rfind('>')) {
        (Some(a), Some(b)) if a < b => &text[a + 1..b],
        _ => text,
    };
    let text = text.trim().trim_matches(['"', '\'', ',', '.', ':']);
    (text.contains('@') && !text.contains(char::is_whitespace) && text.len() <= 320)
        .then(|| text.to_owned())
}

/// The unfolded, trimmed values of header `name` in `message`'s own headers.
pub(crate) fn header_values(message: &Message<'_>, name: &str) -> Vec<String> {
    message
        .headers_raw()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The first value of header `name`, if any.
pub(crate) fn header_value(message: &Message<'_>, name: &str) -> Option<String> {
    header_values(message, name).into_iter().next()
}

/// Message parts as a flat list, nested messages included, each with its content type
/// (`type/subtype`, lower case).
pub(crate) fn parts<'m>(
    message: &'m Message<'m>,
) -> Vec<(String, &'m mail_parser::MessagePart<'m>)> {
    use mail_parser::MimeHeaders;
    message
        .parts
        .iter()
        .map(|p| {
            let ct = p.content_type().map_or_else(
                || "text/plain".to_owned(),
                |c| match c.subtype() {
                    Some(sub) => format!("{}/{}", c.ctype(), sub).to_ascii_lowercase(),
                    None => c.ctype().to_ascii_lowercase(),
                },
            );
            (ct, p)
        })
        .collect()
}

#[cfg(test)]
mod tests;
