//! The parser on hand-written messages. The table over every format's fixture is in
//! `tests/bounce_formats.rs`.

use super::*;

const POSTFIX_DSN: &str = "Return-Path: <>\r\n\
Delivered-To: bounces+b17-0123456789abcdef@harborlist.example.org\r\n\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
To: bounces+b17-0123456789abcdef@harborlist.example.org\r\n\
Message-Id: <20270120170000.ABC123@mx.example.net>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n\
\r\n\
--B1\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
I'm sorry to have to inform you that your message could not be delivered.\r\n\
\r\n\
--B1\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.net\r\n\
Arrival-Date: Wed, 20 Jan 2027 11:00:00 -0600\r\n\
\r\n\
Final-Recipient: rfc822; pat@example.net\r\n\
Original-Recipient: rfc822;pat@example.net\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mail.example.net\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <pat@example.net>: Recipient address\r\n\
\x20rejected: User unknown in virtual mailbox table\r\n\
\r\n\
--B1\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Return-Path: <bounces+b17-0123456789abcdef@harborlist.example.org>\r\n\
Message-ID: <hl.0123456789abcdef.42@trainings.harborlist.example.org>\r\n\
Subject: Safe Harbor training on January 20\r\n\
\r\n\
--B1--\r\n";

#[test]
fn a_postfix_dsn_names_the_recipient_status_and_returned_ids() {
    let r = parse(POSTFIX_DSN.as_bytes());
    assert_eq!(r.kind, ReportKind::Hard);
    assert_eq!(r.recipients.len(), 1);
    let rr = &r.recipients[0];
    assert_eq!(rr.address.as_deref(), Some("pat@example.net"));
    assert_eq!(rr.status.map(|s| s.to_string()).as_deref(), Some("5.1.1"));
    assert!(
        rr.diagnostic
            .as_deref()
            .is_some_and(|d| d.starts_with("550 5.1.1") && d.contains("User unknown")),
        "{rr:?}"
    );
    assert_eq!(
        r.message_ids,
        ["hl.0123456789abcdef.42@trainings.harborlist.example.org"]
    );
    assert!(
        r.return_addresses
            .contains(&"bounces+b17-0123456789abcdef@harborlist.example.org".to_owned())
    );
    assert_eq!(r.id, "<20270120170000.ABC123@mx.example.net>");
}

#[test]
fn a_delay_warning_is_delayed_and_a_4xx_failure_is_soft() {
    let delayed = POSTFIX_DSN
        .replace("Action: failed", "Action: delayed")
        .replace("Status: 5.1.1", "Status: 4.4.7");
    assert_eq!(parse(delayed.as_bytes()).kind, ReportKind::Delayed);
    let soft = POSTFIX_DSN
        .replace("Status: 5.1.1", "Status: 4.2.2")
        .replace("550 5.1.1", "452 4.2.2");
    assert_eq!(parse(soft.as_bytes()).kind, ReportKind::Soft);
}

#[test]
fn a_plain_message_is_not_a_report() {
    let plain = "From: someone@example.net\r\nTo: bounces@harborlist.example.org\r\nSubject: hello\r\n\r\nJust saying hi.\r\n";
    let r = parse(plain.as_bytes());
    assert_eq!(r.kind, ReportKind::NotAReport);
    assert!(r.id.starts_with("sha256:"));
    assert_eq!(parse(b"").kind, ReportKind::NotAReport);
}
