//! RFC 3464 delivery status notifications: `multipart/report;
//! report-type=delivery-status`, whose `message/delivery-status` part holds one group of
//! fields for the message and one per recipient (Final-Recipient, Original-Recipient,
//! Action, Status, Diagnostic-Code).

use mail_parser::Message;

use super::{bare_address, failure_kind, overall, parts};
use crate::{
    bounce::{RecipientReport, Report},
    domain::StatusCode,
};

pub(super) fn parse(message: &Message<'_>) -> Option<Report> {
    let status_part = parts(message).into_iter().find(|(ct, _)| {
        ct == "message/delivery-status" || ct == "message/global-delivery-status"
    })?;
    let text = String::from_utf8_lossy(status_part.1.contents()).into_owned();
    let recipients: Vec<RecipientReport> = groups(&text)
        .into_iter()
        .filter_map(|fields| recipient(&fields))
        .collect();
    Some(Report {
        kind: overall(&recipients),
        recipients,
        message_ids: Vec::new(),
        return_addresses: Vec::new(),
        id: String::new(),
    })
}

/// The groups of `name: value` fields, separated by blank lines, continuation lines
/// unfolded. Names are lower-cased.
pub(crate) fn groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A per-recipient group, or `None` for the per-message one (or a recipient that did not
/// fail).
fn recipient(fields: &[(String, String)]) -> Option<RecipientReport> {
    let final_rcpt = field(fields, "final-recipient");
    let original = field(fields, "original-recipient");
    let address = final_rcpt.or(original).and_then(bare_address)?;
    let diagnostic = field(fields, "diagnostic-code")
        .map(|d| match d.split_once(';') {
            Some((kind, rest)) if !kind.contains(' ') => rest.trim().to_owned(),
            _ => d.to_owned(),
        })
        .map(|d| one_reply(&d));
    let status = field(fields, "status")
        .and_then(StatusCode::parse)
        .or_else(|| diagnostic.as_deref().and_then(StatusCode::find));
    let kind = failure_kind(field(fields, "action"), status)?;
    Some(RecipientReport {
        address: Some(address),
        kind,
        status,
        diagnostic,
    })
}

/// A multiline SMTP reply as one: `550-5.1.1 The email … 550-5.1.1 double-checking … 550
/// 5.1.1 https://…` (Gmail's, unfolded) becomes `550 5.1.1 The email … double-checking …
/// https://…`.
fn one_reply(diagnostic: &str) -> String {
    let words: Vec<&str> = diagnostic.split_whitespace().collect();
    let Some((code, status)) = words.first().and_then(|w| w.split_once('-')) else {
        return words.join(" ");
    };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return words.join(" ");
    }
    let dashed = format!("{code}-{status}");
    let mut out = vec![code, status];
    let mut rest = words[1..].iter().peekable();
    while let Some(word) = rest.next() {
        if *word == dashed {
            continue;
        }
        if *word == code && rest.peek().is_some_and(|next| **next == status) {
            rest.next();
            continue;
        }
        out.push(word);
    }
    out.join(" ")
}
