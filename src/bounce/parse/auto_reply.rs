//! Auto-replies: out-of-office and vacation notices, autoresponders, ticket-system
//! acknowledgements. They say nothing about the address, so they count as nothing; they
//! are reports only in that they go to the done folder, not the unknown one.
//!
//! Known by what the responder says about itself, most reliable first:
//! * RFC 3834 `Auto-Submitted: auto-replied` (Sieve vacation, Exchange), or any other
//!   value but `no` (`auto-generated`, `auto-notified`): the bounce formats were tried
//!   before, so an Exim bounce, which says `auto-replied` too, never gets here;
//! * `X-Autoreply`, `X-Autorespond`, `X-Autoresponse` (cPanel, vacation(1), older
//!   autoresponders), `Precedence: auto_reply` (or `X-Precedence`);
//! * a subject that only responders write: "Out of Office", "Automatic reply:", "Auto:",
//!   "Autoreply", "Vacation", "Abwesenheitsnotiz", "Automatische Antwort", "Réponse
//!   automatique" and the like.

use mail_parser::Message;

use super::{header_value, header_values};
use crate::{bounce::Report, domain::ReportKind};

/// Headers whose mere presence marks an autoresponder.
const MARKERS: [&str; 4] = [
    "X-Autoreply",
    "X-Autorespond",
    "X-Autoresponse",
    "X-Autoreply-From",
];

/// Subject beginnings (lower case) of auto-replies.
const PREFIXES: [&str; 14] = [
    "out of office",
    "out of the office",
    "automatic reply:",
    "auto:",
    "autoreply",
    "auto-reply",
    "auto reply",
    "automatische antwort",
    "abwesenheitsnotiz",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "vacation",
    "on vacation",
];

/// Subject phrases (lower case) of auto-replies wherever they stand.
const PHRASES: [&str; 5] = [
    "out of office",
    "out of the office",
    "abwesenheitsnotiz",
    "vacation reply",
    "away from my mail",
];

pub(super) fn parse(message: &Message<'_>) -> Option<Report> {
    let said = auto_submitted(message)
        || MARKERS
            .iter()
            .any(|h| header_value(message, h).is_some_and(|v| !v.eq_ignore_ascii_case("no")))
        || ["Precedence", "X-Precedence"].iter().any(|h| {
            header_values(message, h)
                .iter()
                .any(|v| v.eq_ignore_ascii_case("auto_reply"))
        });
    (said || by_subject(message.subject().unwrap_or_default())).then(|| Report {
        kind: ReportKind::AutoReply,
        recipients: Vec::new(),
        message_ids: Vec::new(),
        return_addresses: Vec::new(),
        id: String::new(),
    })
}

/// RFC 3834: any value but `no` (the token before a `;` or a comment).
fn auto_submitted(message: &Message<'_>) -> bool {
    header_values(message, "Auto-Submitted").iter().any(|v| {
        let token = v
            .split([';', '(', ' '])
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        !token.is_empty() && token != "no"
    })
}

fn by_subject(subject: &str) -> bool {
    let subject = subject.trim().to_lowercase();
    PREFIXES.iter().any(|p| subject.starts_with(p)) || PHRASES.iter().any(|p| subject.contains(p))
}
