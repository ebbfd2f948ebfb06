//! What a report returns of the original message: its Message-ID and its Return-Path,
//! wherever the format puts them (a `message/rfc822` part, `text/rfc822-headers`, or
//! headers quoted in a plain-text body, such as Exim's and qmail's copy of the message or
//! the third part of an RFC 5965 feedback report), the Message-IDs the report itself says it
//! answers (In-Reply-To, References: Gmail's bounces and most auto-replies carry them), and
//! the addresses the report itself was sent to.

use mail_parser::{Message, PartType};

use super::{bare_address, header_values, parts};
use crate::bounce::Report;

/// Headers of the report that say where it was delivered: a VERP tag is there.
const DELIVERED_TO: [&str; 5] = [
    "To",
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
];

pub(super) fn collect(message: &Message<'_>, report: &mut Report) {
    for name in DELIVERED_TO {
        for value in header_values(message, name) {
            push_addresses(&value, &mut report.return_addresses);
        }
    }
    for name in ["In-Reply-To", "References"] {
        for value in header_values(message, name) {
            for id in value.split('>').filter_map(|p| p.split_once('<')) {
                push_unique(&mut report.message_ids, id.1.trim().to_owned());
            }
        }
    }
    let own_id = message.message_id().map(str::to_owned);
    // The root too: a single-part bounce (Exim, qmail, Yahoo) quotes the returned
    // message in its one text body. A multipart root has no body of its own.
    for (ct, part) in parts(message) {
        match &part.body {
            PartType::Message(inner) => {
                if let Some(id) = inner.message_id() {
                    push_unique(&mut report.message_ids, id.trim().to_owned());
                }
                for value in header_values(inner, "Return-Path") {
                    push_addresses(&value, &mut report.return_addresses);
                }
            }
            PartType::Text(text) if ct.starts_with("text/") => scan_quoted(text, report),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes)
                if ct.contains("rfc822") || ct.starts_with("text/") =>
            {
                scan_quoted(&String::from_utf8_lossy(bytes), report)
            }
            _ => {}
        }
    }
    if let Some(own) = own_id {
        report.message_ids.retain(|id| *id != own);
    }
}

/// Headers quoted as text: `Message-ID: <…>` and `Return-Path: <…>` lines.
fn scan_quoted(text: &str, report: &mut Report) {
    for line in text.lines() {
        let line = line.trim_start_matches(['>', ' ', '\t']);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Message-ID") {
            if let Some(id) = angle(value) {
                push_unique(&mut report.message_ids, id);
            }
        } else if name.eq_ignore_ascii_case("Return-Path") {
            push_addresses(value, &mut report.return_addresses);
        }
    }
}

fn angle(value: &str) -> Option<String> {
    let (a, b) = (value.find('<')?, value.rfind('>')?);
    (a < b).then(|| value[a + 1..b].trim().to_owned())
}

fn push_addresses(value: &str, into: &mut Vec<String>) {
    for piece in value.split(',') {
        if let Some(a) = bare_address(piece) {
            push_unique(into, a);
        }
    }
}

fn push_unique(into: &mut Vec<String>, value: String) {
    if !value.is_empty() && !into.contains(&value) {
        into.push(value);
    }
}
