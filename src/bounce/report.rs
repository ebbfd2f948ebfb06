//! A parsed report: what the receiving side says happened, before anything is matched or
//! changed.

use crate::domain::{ReportKind, StatusCode};

/// One message read from the return path, as the parser understood it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The report as a whole: the kind of its worst recipient (hard before soft before
    /// delayed), a complaint, an auto-reply, or not a report.
    pub kind: ReportKind,
    /// Each recipient the report is about. A complaint names the one it was sent to (if it
    /// says); a DSN may name several.
    pub recipients: Vec<RecipientReport>,
    /// Message-IDs found in the returned message or headers, without angle brackets. Ours
    /// look like `hl.<mailing hash>.<subscriber id>@<list id>`.
    pub message_ids: Vec<String>,
    /// Addresses the report was sent to, as its headers say (To, Delivered-To,
    /// X-Original-To, Envelope-To) and as the returned message's Return-Path says: where a
    /// VERP tag would be. The SMTP listener adds the envelope recipients.
    pub return_addresses: Vec<String>,
    /// The report's own identity: its Message-ID, or a hash of its bytes. With the
    /// recipient, it keys the stored event, so reading it twice counts once.
    pub id: String,
}

/// What a report says about one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientReport {
    /// The failed address (Final-Recipient, or Original-Recipient where that is ours).
    pub address: Option<String>,
    pub kind: ReportKind,
    pub status: Option<StatusCode>,
    /// The receiver's words (Diagnostic-Code, or the SMTP reply quoted in the text).
    pub diagnostic: Option<String>,
}

impl Report {
    /// A message that is not a report.
    pub fn not_a_report(id: String) -> Self {
        Self {
            kind: ReportKind::NotAReport,
            recipients: Vec::new(),
            message_ids: Vec::new(),
            return_addresses: Vec::new(),
            id,
        }
    }
}
