//! The parser on hand-written messages, and the table over every format's fixture in
//! `tests/fixtures/bounces/` (each written in the shape that server sends).

use super::*;
use crate::bounce::ingest::ours;

const LIST_ID: &str = "trainings.harborlist.example.org";

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

/// One fixture and what the parser must make of it.
struct Row {
    file: &'static str,
    raw: &'static [u8],
    kind: ReportKind,
    recipients: &'static [&'static str],
    status: Option<&'static str>,
    /// Words the first recipient's diagnostic contains.
    diagnostic: Option<&'static str>,
    /// Whether one of our Message-IDs was found (returned headers, In-Reply-To).
    our_id: bool,
    /// The VERP address the report carries, if any.
    verp: Option<&'static str>,
}

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../../tests/fixtures/bounces/", $name)).as_slice(),
        )
    };
}

fn row(
    (file, raw): (&'static str, &'static [u8]),
    kind: ReportKind,
    recipients: &'static [&'static str],
    status: Option<&'static str>,
    diagnostic: Option<&'static str>,
    our_id: bool,
    verp: Option<&'static str>,
) -> Row {
    Row {
        file,
        raw,
        kind,
        recipients,
        status,
        diagnostic,
        our_id,
        verp,
    }
}

fn table() -> Vec<Row> {
    use ReportKind::*;
    vec![
        row(
            fixture!("postfix-dsn.eml"),
            Hard,
            &["pat@example.net"],
            Some("5.1.1"),
            Some("User unknown in virtual mailbox table"),
            true,
            Some("trainings+b42-0123456789abcdef@harborlist.example.org"),
        ),
        row(
            fixture!("postfix-delayed.eml"),
            Delayed,
            &["sam@example.com"],
            Some("4.4.1"),
            Some("Connection timed out"),
            true,
            Some("trainings+b43-1b2c3d4e5f607182@harborlist.example.org"),
        ),
        row(
            fixture!("exim.eml"),
            Hard,
            &["lee@example.com"],
            Some("5.1.1"),
            Some("550 5.1.1 <lee@example.com>: Recipient address rejected"),
            true,
            Some("trainings+b44-2c3d4e5f60718293@harborlist.example.org"),
        ),
        row(
            fixture!("exim-delayed.eml"),
            Delayed,
            &["jamie@example.org"],
            Some("4.7.1"),
            Some("451 4.7.1 Please try again later"),
            true,
            Some("trainings+b45-3d4e5f6071829304@harborlist.example.org"),
        ),
        row(
            fixture!("qmail.eml"),
            Hard,
            &["robin@example.net"],
            Some("5.1.1"),
            Some("550 5.1.1 <robin@example.net>... User unknown"),
            true,
            Some("trainings+b46-4e5f607182930415@harborlist.example.org"),
        ),
        row(
            fixture!("sendmail-dsn.eml"),
            Hard,
            &["alex@example.edu"],
            Some("5.1.1"),
            Some("User unknown"),
            true,
            Some("trainings+b47-5f60718293041526@harborlist.example.org"),
        ),
        row(
            fixture!("exchange-ndr.eml"),
            Hard,
            &["jordan@contoso.example"],
            Some("5.1.10"),
            Some("550 5.1.10 RESOLVER.ADR.RecipientNotFound"),
            true,
            Some("trainings+b48-60718293a41526b7@harborlist.example.org"),
        ),
        row(
            fixture!("office365-policy-5.7.515.eml"),
            Hard,
            &["casey@fabrikam.example"],
            Some("5.7.515"),
            Some("does not meet the required authentication level"),
            true,
            Some("trainings+b49-718293a41526b7c8@harborlist.example.org"),
        ),
        row(
            fixture!("gmail.eml"),
            Hard,
            &["taylor@gmail.com"],
            Some("5.1.1"),
            Some("The email account that you tried to reach does not exist"),
            true,
            Some("trainings+b50-8293a41526b7c8d9@harborlist.example.org"),
        ),
        row(
            fixture!("yahoo.eml"),
            Hard,
            &["kim@yahoo.com"],
            // `554:` gives no enhanced status, and none is made up.
            None,
            Some("554: delivery error: dd This user doesn't have a yahoo.com account"),
            true,
            Some("trainings+b51-93a41526b7c8d9e0@harborlist.example.org"),
        ),
        row(
            fixture!("arf-complaint.eml"),
            Complaint,
            &["morgan@yahoo.com"],
            None,
            Some("abuse report (Yahoo!-Mail-Feedback/2.0)"),
            true,
            Some("trainings+b52-a41526b7c8d9e0f1@harborlist.example.org"),
        ),
        row(
            fixture!("arf-complaint-headers.eml"),
            Complaint,
            &["quinn@isp.example"],
            None,
            Some("abuse report (ISP-FBL/1.4, from fbl.isp.example)"),
            true,
            Some("trainings+b53-b526b7c8d9e0f102@harborlist.example.org"),
        ),
        row(
            fixture!("auto-reply-ooo.eml"),
            AutoReply,
            &[],
            None,
            None,
            true,
            Some("trainings+b54-c6b7c8d9e0f10213@harborlist.example.org"),
        ),
        row(
            fixture!("exchange-oof.eml"),
            AutoReply,
            &[],
            None,
            None,
            true,
            Some("trainings+b55-d7c8d9e0f1021324@harborlist.example.org"),
        ),
        row(
            fixture!("vacation.eml"),
            AutoReply,
            &[],
            None,
            None,
            false,
            None,
        ),
        row(
            fixture!("abwesenheitsnotiz.eml"),
            AutoReply,
            &[],
            None,
            None,
            false,
            None,
        ),
        row(
            fixture!("not-a-report.eml"),
            NotAReport,
            &[],
            None,
            None,
            false,
            None,
        ),
    ]
}

#[test]
fn every_fixture_parses_to_its_kind_recipients_status_and_our_ids() {
    let mut failures = Vec::new();
    for row in table() {
        let r = parse(row.raw);
        let recipients: Vec<&str> = r
            .recipients
            .iter()
            .filter_map(|x| x.address.as_deref())
            .collect();
        let status = r
            .recipients
            .first()
            .and_then(|x| x.status)
            .map(|s| s.to_string());
        let diagnostic = r.recipients.first().and_then(|x| x.diagnostic.clone());
        let our_id = r.message_ids.iter().any(|id| ours(id, LIST_ID).is_some());
        let verp_ok = row
            .verp
            .is_none_or(|v| r.return_addresses.iter().any(|a| a == v));
        let diag_ok = match (row.diagnostic, &diagnostic) {
            (None, _) => true,
            (Some(want), Some(got)) => got.contains(want),
            (Some(_), None) => false,
        };
        if r.kind != row.kind
            || recipients != row.recipients
            || status.as_deref() != row.status
            || our_id != row.our_id
            || !verp_ok
            || !diag_ok
        {
            failures.push(format!(
                "{}: kind {} (want {}), recipients {recipients:?} (want {:?}), status {status:?} \
                 (want {:?}), diagnostic {diagnostic:?} (want {:?}), our id {our_id} (want {}), \
                 verp {verp_ok}; ids {:?}, return addresses {:?}",
                row.file,
                r.kind,
                row.kind,
                row.recipients,
                row.status,
                row.diagnostic,
                row.our_id,
                r.message_ids,
                r.return_addresses
            ));
        }
        assert!(!r.id.is_empty(), "{}: a report id", row.file);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_fixture_file_is_in_the_table() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bounces");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = table().iter().map(|r| r.file.to_owned()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
}

/// `raw` without its `message/delivery-status` part: what a server that writes only the
/// text sends.
fn without_dsn_part(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).into_owned();
    let at = text.find("Content-Type: message/delivery-status").unwrap();
    let start = text[..at].rfind("\r\n--").unwrap();
    let end = at + text[at..].find("\r\n--").unwrap();
    format!("{}{}", &text[..start], &text[end..]).replace("multipart/report", "multipart/mixed")
}

#[test]
fn without_their_dsn_part_the_dsn_formats_read_the_same_from_their_text() {
    for (file, raw) in [
        fixture!("postfix-dsn.eml"),
        fixture!("postfix-delayed.eml"),
        fixture!("sendmail-dsn.eml"),
        fixture!("office365-policy-5.7.515.eml"),
        fixture!("gmail.eml"),
    ] {
        let with = parse(raw);
        let stripped = without_dsn_part(raw);
        assert!(!stripped.contains("message/delivery-status"), "{file}");
        let without = parse(stripped.as_bytes());
        assert_eq!(without.kind, with.kind, "{file}: {without:?}");
        let addresses = |r: &Report| -> Vec<Option<String>> {
            r.recipients.iter().map(|x| x.address.clone()).collect()
        };
        assert_eq!(addresses(&without), addresses(&with), "{file}");
        if with.kind != ReportKind::Delayed {
            assert_eq!(
                without.recipients[0].status, with.recipients[0].status,
                "{file}: {without:?}"
            );
        }
        assert_eq!(without.message_ids, with.message_ids, "{file}");
    }
}

/// A message of the given headers and text body, CRLF.
fn message(headers: &str, body: &str) -> Vec<u8> {
    format!("{headers}\n\n{body}")
        .replace('\n', "\r\n")
        .into_bytes()
}

#[test]
fn bounce_words_from_a_person_are_not_a_bounce() {
    // A person forwarding a bounce, with its subject and its words: not from a mail
    // system, so not a report, however much it looks like one.
    let raw = message(
        "From: Pat Rivera <pat.rivera@example.net>\nReturn-Path: <pat.rivera@example.net>\n\
         To: trainings@harborlist.example.org\nSubject: Undeliverable: Safe Harbor training",
        "Delivery has failed to these recipients or groups:\n\npat@example.net\n\
         Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipientNotFound; not found'\n\n\
         Message-ID: <hl.0123456789abcdef.42@trainings.harborlist.example.org>\n",
    );
    let r = parse(&raw);
    assert_eq!(r.kind, ReportKind::NotAReport, "{r:?}");
    assert!(r.recipients.is_empty());

    // The same words from a mail system are one.
    let from_daemon = String::from_utf8(raw).unwrap().replace(
        "Pat Rivera <pat.rivera@example.net>",
        "<postmaster@contoso.example>",
    );
    let r = parse(from_daemon.as_bytes());
    assert_eq!(r.kind, ReportKind::Hard, "{r:?}");
    assert_eq!(r.recipients[0].address.as_deref(), Some("pat@example.net"));

    // A mail system's message that doesn't read as a bounce is not one either.
    let notice = message(
        "From: MAILER-DAEMON@mx.example.net\nTo: trainings@harborlist.example.org\n\
         Subject: Your mailbox quota",
        "Mail to 550 addresses was processed today.\n",
    );
    assert_eq!(parse(&notice).kind, ReportKind::NotAReport);
}

#[test]
fn plain_warnings_are_delayed_never_hard() {
    let exchange = message(
        "From: <postmaster@contoso.example>\nTo: trainings@harborlist.example.org\n\
         Subject: Delivery delayed:Safe Harbor training on January 20",
        "Delivery is delayed to these recipients or groups:\n\njordan@contoso.example\n\n\
         Subject: Safe Harbor training on January 20\n\n\
         This message hasn't been delivered yet. Delivery will continue to be attempted.\n\n\
         The server will keep trying to deliver this message for the next 1 days, 19 hours \
         and 53 minutes. You'll be notified if the message can't be delivered by that time.\n\n\
         Diagnostic information for administrators:\n\nGenerating server: EXCH01.contoso.example\n\
         Receiving server: mx.contoso.example\n\njordan@contoso.example\n\
         Remote Server returned '550 5.4.300 Message expired -> 451 4.4.0 DNS query failed'\n",
    );
    let r = parse(&exchange);
    assert_eq!(r.kind, ReportKind::Delayed, "{r:?}");
    assert_eq!(r.recipients.len(), 1);
    assert_eq!(r.recipients[0].kind, ReportKind::Delayed);

    let gmail = message(
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n\
         To: trainings@harborlist.example.org\nSubject: Delivery Status Notification (Delay)",
        "** Delivery incomplete **\n\nThere was a temporary problem delivering your message to \
         taylor@example.com. Gmail will retry for 46 more hours. You'll be notified if the \
         delivery fails permanently.\n\nThe response from the remote server was:\n\
         421 4.7.0 Try again later, closing connection.\n",
    );
    let r = parse(&gmail);
    assert_eq!(r.kind, ReportKind::Delayed, "{r:?}");
    assert_eq!(
        r.recipients[0].address.as_deref(),
        Some("taylor@example.com")
    );
}

#[test]
fn plain_codes_decide_hard_and_soft_and_policy_stays_hard() {
    let bounce = |reply: &str| {
        message(
            "From: MAILER-DAEMON@mx.example.net\nReturn-Path: <>\n\
             To: trainings@harborlist.example.org\nSubject: failure notice",
            &format!(
                "Hi. This is the qmail-send program at mx.example.net.\n\
                 I'm afraid I wasn't able to deliver your message to the following addresses.\n\n\
                 <pat@example.net>:\n{reply}\n\n--- Below this line is a copy of the message.\n"
            ),
        )
    };
    let r = parse(&bounce("Remote host said: 452 4.2.2 Mailbox full"));
    assert_eq!(r.kind, ReportKind::Soft, "{r:?}");
    let r = parse(&bounce(
        "Remote host said: 554 5.7.1 Message rejected as spam",
    ));
    assert_eq!(r.kind, ReportKind::Hard);
    assert!(r.recipients[0].status.unwrap().is_policy());
    // No enhanced status: the basic code gives the kind, the status stays empty.
    let r = parse(&bounce("Remote host said: 450 mailbox unavailable"));
    assert_eq!((r.kind, r.recipients[0].status), (ReportKind::Soft, None));
    // qmail's own `(#5.1.1)`.
    let r = parse(&bounce("Sorry, no mailbox here by that name. (#5.1.1)"));
    assert_eq!(r.kind, ReportKind::Hard);
    assert_eq!(
        r.recipients[0].status.map(|s| s.to_string()).as_deref(),
        Some("5.1.1")
    );
    // A port is not a reply.
    let r = parse(&bounce(
        "connect to mx.example.net port 465 failed: timed out",
    ));
    assert_eq!(r.recipients[0].status, None);
}

#[test]
fn a_feedback_report_that_is_no_complaint_is_not_one() {
    let raw = String::from_utf8_lossy(include_bytes!(
        "../../../tests/fixtures/bounces/arf-complaint.eml"
    ))
    .into_owned();
    for not_a_complaint in ["not-spam", "auth-failure"] {
        let other = raw.replace(
            "Feedback-Type: abuse",
            &format!("Feedback-Type: {not_a_complaint}"),
        );
        assert_eq!(
            parse(other.as_bytes()).kind,
            ReportKind::NotAReport,
            "{not_a_complaint}"
        );
    }
    // AOL-style loops hide the address: the complaint names nobody, the VERP tag remains.
    let redacted = raw
        .replace("Original-Rcpt-To: <morgan@yahoo.com>\r\n", "")
        .replace("To: morgan@yahoo.com", "To: redacted@yahoo.com");
    let r = parse(redacted.as_bytes());
    assert_eq!(r.kind, ReportKind::Complaint);
    assert_eq!(r.recipients[0].address, None);
    assert!(
        r.return_addresses
            .contains(&"trainings+b52-a41526b7c8d9e0f1@harborlist.example.org".to_owned())
    );
}

#[test]
fn auto_submitted_no_is_not_an_auto_reply() {
    let raw = message(
        "From: Riley <riley@example.org>\nTo: trainings@harborlist.example.org\n\
         Auto-Submitted: no\nSubject: Question about the training",
        "Hello!\n",
    );
    assert_eq!(parse(&raw).kind, ReportKind::NotAReport);
    let raw = message(
        "From: tickets@example.org\nTo: trainings@harborlist.example.org\n\
         Auto-Submitted: auto-generated\nSubject: [#4711] We got your message",
        "A person will answer soon.\n",
    );
    assert_eq!(parse(&raw).kind, ReportKind::AutoReply);
}
