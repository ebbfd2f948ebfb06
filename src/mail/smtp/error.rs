//! What went wrong with one message, and whose fault it was.
//!
//! Every failure is tagged with the SMTP [`Stage`] it happened at and sorted into a
//! [`Class`] that says what the sender does about it. The stage decides the most: anything
//! that fails before `RCPT` (connecting, the greeting, EHLO, STARTTLS, AUTH, `MAIL FROM`)
//! says nothing about the recipient. It is the relay's fault, or the operator's (a wrong
//! password, a TLS setting), so it must never count against a subscriber.

use std::fmt;

/// Where in the SMTP dialogue a failure happened, in the order they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Before the wire: the message itself cannot go this way (for example it needs
    /// SMTPUTF8 and the relay does not offer it), or the sender is shutting down.
    Local,
    Connect,
    Greeting,
    Ehlo,
    Starttls,
    Auth,
    Mail,
    Rcpt,
    /// The reply to the `DATA` command.
    Data,
    /// The reply after the message's terminating dot.
    EndOfData,
}

impl Stage {
    /// Whether a failure here is the relay's (or the operator's), not the recipient's.
    pub fn before_rcpt(self) -> bool {
        matches!(
            self,
            Self::Connect | Self::Greeting | Self::Ehlo | Self::Starttls | Self::Auth | Self::Mail
        )
    }

    /// The stage as staff read it in logs and `status`: `AUTH`, `MAIL FROM`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "before sending",
            Self::Connect => "connect",
            Self::Greeting => "greeting",
            Self::Ehlo => "EHLO",
            Self::Starttls => "STARTTLS",
            Self::Auth => "AUTH",
            Self::Mail => "MAIL FROM",
            Self::Rcpt => "RCPT TO",
            Self::Data => "DATA",
            Self::EndOfData => "end of data",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the sender does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The relay could not take any mail (a failure before `RCPT`, or no answer there).
    /// The delivery stays queued, no attempt is counted, and the whole sender backs off.
    RelayFault,
    /// Worth trying this message again later (a 4xx at or after `RCPT`, a lost session
    /// mid-message). Counts one attempt against `mail.max_attempts`.
    Transient,
    /// The recipient's address does not work: a 5xx at `RCPT`, or a 5.1.x / 5.2.x after
    /// `DATA`. The message fails and the subscriber's bounce score rises.
    Bounce,
    /// This message was refused for good, but not because of the address: a policy
    /// rejection (5.7.x), another 5xx after `DATA`, or a message the relay cannot carry
    /// (SMTPUTF8). The message fails; the subscriber is not held responsible.
    Rejected,
}

/// One failed attempt to hand a message to the relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SendError {
    pub stage: Stage,
    pub class: Class,
    /// The relay's reply code (`535`), if it replied.
    pub code: Option<u16>,
    /// The RFC 3463 enhanced status code (`"5.7.8"`), if the reply carried one.
    pub enhanced: Option<String>,
    /// The relay's reply text, or what happened instead (a timeout, a refused connection).
    pub text: String,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.class {
            Class::RelayFault => "relay fault",
            Class::Transient => "temporary failure",
            Class::Bounce | Class::Rejected => "permanent failure",
        };
        write!(f, "{kind} at {}: ", self.stage)?;
        if let Some(code) = self.code {
            write!(f, "{code} ")?;
        }
        f.write_str(&self.text)
    }
}

impl SendError {
    /// A failure with no reply from the relay: a timeout, a refused or broken connection.
    /// Before `RCPT` that is a relay fault; later the message may be tried again.
    pub fn no_reply(stage: Stage, text: impl Into<String>) -> Self {
        let class = if stage.before_rcpt() {
            Class::RelayFault
        } else {
            Class::Transient
        };
        Self {
            stage,
            class,
            code: None,
            enhanced: None,
            text: text.into(),
        }
    }

    /// A reply from the relay, sorted by [`classify`].
    pub fn reply(stage: Stage, code: u16, text: impl Into<String>) -> Self {
        let text = text.into();
        let enhanced = enhanced_status(&text);
        Self {
            stage,
            class: classify(stage, code, enhanced.as_deref()),
            code: Some(code),
            enhanced,
            text,
        }
    }

    /// A message that cannot go this way at all, for a reason of its own (not the
    /// recipient's address, not the relay's health).
    pub fn rejected_locally(text: impl Into<String>) -> Self {
        Self {
            stage: Stage::Local,
            class: Class::Rejected,
            code: None,
            enhanced: None,
            text: text.into(),
        }
    }

    /// Nothing went wrong with the message: the sender is stopping, or gave up waiting.
    /// It is tried again later, without counting against the relay.
    pub fn interrupted(text: impl Into<String>) -> Self {
        Self {
            stage: Stage::Local,
            class: Class::Transient,
            code: None,
            enhanced: None,
            text: text.into(),
        }
    }

    /// lettre's error for `stage`: a reply if the relay gave one, else no reply.
    pub fn from_lettre(stage: Stage, e: &lettre::transport::smtp::Error) -> Self {
        let code = e.status().and_then(|c| c.to_string().parse::<u16>().ok());
        match code {
            Some(code) => {
                // lettre's text is "permanent error (535): 5.7.8 …"; keep the relay's part.
                let text = e.to_string();
                let relay_part = text.split_once("): ").map(|(_, t)| t).unwrap_or(&text);
                Self::reply(stage, code, relay_part)
            }
            None => Self::no_reply(stage, e.to_string()),
        }
    }

    pub fn is_relay_fault(&self) -> bool {
        self.class == Class::RelayFault
    }

    /// Whether the failure is final for this message.
    pub fn is_permanent(&self) -> bool {
        matches!(self.class, Class::Bounce | Class::Rejected)
    }

    /// Whether it counts towards the subscriber becoming `bouncing`.
    pub fn counts_as_bounce(&self) -> bool {
        self.class == Class::Bounce
    }
}

/// The rules of issue 15, in one place:
/// * any failure before `RCPT` is a relay fault;
/// * a 4xx later is transient;
/// * a 5.7.x anywhere is a policy rejection, which does not count against the address;
/// * a 5xx at `RCPT` is a bounce, and so is a 5.1.x or 5.2.x after `DATA`;
/// * any other 5xx after `DATA` is a rejection of that message.
pub fn classify(stage: Stage, code: u16, enhanced: Option<&str>) -> Class {
    if stage.before_rcpt() {
        return Class::RelayFault;
    }
    if !(500..600).contains(&code) {
        return Class::Transient;
    }
    let subject = enhanced.and_then(|e| e.split('.').nth(1));
    match (stage, subject) {
        (_, Some("7")) => Class::Rejected,
        (Stage::Rcpt, _) => Class::Bounce,
        (_, Some("1" | "2")) => Class::Bounce,
        _ => Class::Rejected,
    }
}

/// The RFC 3463 enhanced status code at the start of a reply's text (`5.1.1 User unknown`),
/// if there is one: `class.subject.detail`, class 2, 4 or 5, each part 1–3 digits.
pub fn enhanced_status(text: &str) -> Option<String> {
    let first = text.split_whitespace().next()?;
    let mut parts = first.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    let numeric = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    (parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && numeric(subject, 3)
        && numeric(detail, 3))
    .then(|| first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_before_rcpt_are_the_relays_whatever_the_code() {
        for stage in [
            Stage::Connect,
            Stage::Greeting,
            Stage::Ehlo,
            Stage::Starttls,
            Stage::Auth,
            Stage::Mail,
        ] {
            assert_eq!(classify(stage, 535, Some("5.7.8")), Class::RelayFault);
            assert_eq!(classify(stage, 554, None), Class::RelayFault);
            assert_eq!(classify(stage, 421, None), Class::RelayFault);
            assert_eq!(
                SendError::no_reply(stage, "timed out").class,
                Class::RelayFault
            );
        }
    }

    #[test]
    fn recipients_are_held_responsible_only_for_their_address() {
        assert_eq!(classify(Stage::Rcpt, 550, Some("5.1.1")), Class::Bounce);
        assert_eq!(classify(Stage::Rcpt, 550, None), Class::Bounce);
        assert_eq!(classify(Stage::Rcpt, 550, Some("5.7.1")), Class::Rejected);
        assert_eq!(classify(Stage::Rcpt, 450, Some("4.2.0")), Class::Transient);
        assert_eq!(
            classify(Stage::EndOfData, 552, Some("5.2.2")),
            Class::Bounce
        );
        assert_eq!(
            classify(Stage::EndOfData, 550, Some("5.1.1")),
            Class::Bounce
        );
        assert_eq!(
            classify(Stage::EndOfData, 554, Some("5.7.1")),
            Class::Rejected
        );
        assert_eq!(
            classify(Stage::EndOfData, 554, Some("5.6.0")),
            Class::Rejected
        );
        assert_eq!(classify(Stage::EndOfData, 554, None), Class::Rejected);
        assert_eq!(classify(Stage::Data, 451, None), Class::Transient);
        assert_eq!(
            SendError::no_reply(Stage::EndOfData, "reset").class,
            Class::Transient
        );
    }

    #[test]
    fn enhanced_codes_are_read_only_where_rfc_3463_puts_them() {
        assert_eq!(
            enhanced_status("5.7.8 Authentication failed").as_deref(),
            Some("5.7.8")
        );
        assert_eq!(enhanced_status("4.2.0 try later").as_deref(), Some("4.2.0"));
        assert_eq!(enhanced_status("Authentication failed 5.7.8"), None);
        assert_eq!(enhanced_status("3.1.1 nope"), None);
        assert_eq!(enhanced_status("5.1 short"), None);
        assert_eq!(enhanced_status("5.1.1.1 long"), None);
        assert_eq!(enhanced_status(""), None);
        let e = SendError::reply(Stage::Auth, 535, "5.7.8 Authentication credentials invalid");
        assert_eq!(e.enhanced.as_deref(), Some("5.7.8"));
        assert_eq!(
            e.to_string(),
            "relay fault at AUTH: 535 5.7.8 Authentication credentials invalid"
        );
    }
}
