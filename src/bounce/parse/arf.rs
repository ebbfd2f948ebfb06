//! RFC 5965 feedback reports (the "feedback loops" of Yahoo, AOL, Microsoft's JMRP and
//! others): `multipart/report; report-type=feedback-report`, whose `message/feedback-report`
//! part says what the person did (Feedback-Type) and to whom the message went
//! (Original-Rcpt-To), and whose third part returns the message (`message/rfc822`) or its
//! headers (`text/rfc822-headers`).
//!
//! The fields are read by `mail-auth`'s parser. A report of abuse, fraud, a virus or
//! "other" is a person's complaint about our mail: kind `complaint`. `not-spam` (the
//! person took it *out* of the spam folder) and `auth-failure` (RFC 6591, a DKIM/SPF
//! failure report with no person behind it) complain about nobody: they are left as not a
//! report, so they go to the unknown folder for staff to read, changing no one.
//!
//! The recipient is Original-Rcpt-To if the report gives it, else the To of the returned
//! message. Some loops (AOL's) redact the address (`redacted@…`): then the report names
//! nobody, and only the VERP tag of the returned Return-Path can match it.

use mail_auth::report::{Feedback, FeedbackType};
use mail_parser::{Message, MessageParser, PartType};

use super::{bare_address, parts};
use crate::{
    bounce::{RecipientReport, Report},
    domain::ReportKind,
};

pub(super) fn parse(message: &Message<'_>) -> Option<Report> {
    let all = parts(message);
    let feedback = all
        .iter()
        .find(|(ct, _)| ct == "message/feedback-report")
        .and_then(|(_, part)| Feedback::parse_arf(part.contents()))?;
    if !is_complaint(feedback.feedback_type()) {
        return None;
    }
    let address = feedback
        .original_rcpt_to()
        .and_then(bare_address)
        .or_else(|| returned_to(&all))
        .filter(|a| !is_redacted(a));
    let diagnostic = diagnostic(&feedback);
    Some(Report {
        kind: ReportKind::Complaint,
        recipients: vec![RecipientReport {
            address,
            kind: ReportKind::Complaint,
            status: None,
            diagnostic: Some(diagnostic),
        }],
        message_ids: Vec::new(),
        return_addresses: Vec::new(),
        id: String::new(),
    })
}

fn is_complaint(kind: FeedbackType) -> bool {
    match kind {
        FeedbackType::Abuse | FeedbackType::Fraud | FeedbackType::Virus | FeedbackType::Other => {
            true
        }
        FeedbackType::NotSpam | FeedbackType::AuthFailure => false,
    }
}

/// The To of the returned message (a `message/rfc822` part) or of its returned headers.
fn returned_to(all: &[(String, &mail_parser::MessagePart<'_>)]) -> Option<String> {
    all.iter().skip(1).find_map(|(ct, part)| match &part.body {
        PartType::Message(inner) => first_to(inner),
        _ if ct == "text/rfc822-headers" => {
            // Headers alone parse as a message without a body.
            let headers = MessageParser::default().parse_headers(part.contents())?;
            first_to(&headers)
        }
        _ => None,
    })
}

fn first_to(message: &Message<'_>) -> Option<String> {
    message
        .to()
        .and_then(|to| to.first())
        .and_then(|a| a.address())
        .and_then(bare_address)
}

/// A loop that hides who complained writes `redacted` (or a row of x's) for them.
fn is_redacted(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or_default();
    local.eq_ignore_ascii_case("redacted")
        || (!local.is_empty() && local.bytes().all(|b| b == b'x' || b == b'X'))
}

/// What staff see: who reported it and how, e.g. `abuse report (Yahoo!-Mail-Feedback/2.0,
/// from mta1.feedback.yahoo.com)`.
fn diagnostic(feedback: &Feedback<'_>) -> String {
    let kind = match feedback.feedback_type() {
        FeedbackType::Abuse => "abuse",
        FeedbackType::Fraud => "fraud",
        FeedbackType::Virus => "virus",
        _ => "other",
    };
    let by: Vec<String> = [
        feedback.user_agent().map(str::to_owned),
        feedback.reporting_mta().map(|m| format!("from {m}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if by.is_empty() {
        format!("{kind} report")
    } else {
        format!("{kind} report ({})", by.join(", "))
    }
}
