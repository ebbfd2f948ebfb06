//! One message's dialogue over an open session: the envelope, the replies, the body.
//!
//! [`offer_envelope`] gets the session inside DATA for a message: where the relay offers
//! PIPELINING (RFC 2920), `MAIL`, each `RCPT` and `DATA` go in one write and their replies
//! are read together, each under the timeout and tagged with the command it answers;
//! elsewhere the commands go one at a time. [`mail_parameters`] decides `SMTPUTF8` and
//! `BODY=8BITMIME`, or refuses a message the relay cannot carry. [`send_message`] writes
//! the dot-stuffed body, and behind its terminating dot the next message's envelope when
//! one is given, and reads the reply after the dot.

use std::time::Duration;

use lettre::{
    address::Envelope,
    transport::smtp::{
        commands::{Data, Mail, Rcpt},
        extension::{Extension, MailBodyParameter, MailParameter},
    },
};

use super::{
    error::{SendError, Stage},
    session::{Session, silent, timed},
};

/// Text written as it is: several pipelined commands, or a dot-stuffed body.
struct Raw<'a>(&'a str);

impl std::fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The `MAIL FROM` parameters `envelope` and `bytes` need on this session, or why the
/// relay cannot carry them: such a message fails for good (trying again changes nothing).
pub(super) fn mail_parameters(
    session: &Session,
    envelope: &Envelope,
    bytes: &[u8],
) -> Result<Vec<MailParameter>, SendError> {
    let mut params = Vec::new();
    let non_ascii = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !session.offers(Extension::SmtpUtfEight) {
            return Err(SendError::rejected_locally(
                "the address is not ASCII and needs SMTPUTF8, which the relay does not offer",
            ));
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() {
        if !session.offers(Extension::EightBitMime) {
            return Err(SendError::rejected_locally(
                "the message is not ASCII and needs 8BITMIME, which the relay does not offer",
            ));
        }
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(params)
}

/// `MAIL`, one `RCPT` per recipient and `DATA`, to go in one write.
pub(super) fn envelope_commands(envelope: &Envelope, params: Vec<MailParameter>) -> String {
    let mut commands = Mail::new(envelope.from().cloned(), params).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), Vec::new()).to_string());
    }
    commands.push_str(&Data.to_string());
    commands
}

/// Takes the session into DATA for `envelope`; on an error the session must be dropped.
pub(super) async fn offer_envelope(
    session: &mut Session,
    envelope: &Envelope,
    params: Vec<MailParameter>,
) -> Result<(), SendError> {
    let timeout = session.timeout;
    let smtp = &mut session.smtp;
    if session.pipelining {
        let commands = envelope_commands(envelope, params);
        return read_replies(session, envelope.to().len(), Some(&commands)).await;
    }
    let mail = Mail::new(envelope.from().cloned(), params);
    timed(timeout, Stage::Mail, smtp.command(mail)).await?;
    for to in envelope.to() {
        let rcpt = Rcpt::new(to.clone(), Vec::new());
        timed(timeout, Stage::Rcpt, smtp.command(rcpt)).await?;
    }
    timed(timeout, Stage::Data, smtp.command(Data)).await?;
    Ok(())
}

/// Reads the replies to a pipelined `MAIL`, `rcpts` × `RCPT` and `DATA`, in order, all
/// within one timeout (they come together), after writing `commands` if given (else they
/// went behind the last message's dot). All of them are read even after a refusal, so the
/// first refusal is the one reported (what follows it is only "bad sequence"), with the
/// stage of the command it answered; only a broken or silent session stops the reading,
/// silence tagged with the stage of the reply that did not come.
pub(super) async fn read_replies(
    session: &mut Session,
    rcpts: usize,
    commands: Option<&str>,
) -> Result<(), SendError> {
    let stage = |i: usize| match i {
        0 => Stage::Mail,
        i if i <= rcpts => Stage::Rcpt,
        _ => Stage::Data,
    };
    let mut first_error = None;
    let mut waiting_for = 0;
    let smtp = &mut session.smtp;
    let reading = tokio::time::timeout(session.timeout, async {
        for i in 0..rcpts + 2 {
            waiting_for = i;
            let reply = match commands {
                // `command` writes them all and reads the first reply (MAIL's).
                Some(commands) if i == 0 => smtp.command(Raw(commands)).await,
                _ => smtp.read_response().await,
            };
            if let Err(e) = reply {
                let broken = e.is_timeout() || !(e.is_transient() || e.is_permanent());
                first_error.get_or_insert((stage(i), e));
                if broken {
                    break;
                }
            }
        }
    })
    .await;
    match (first_error, reading) {
        (Some((stage, e)), _) => Err(SendError::from_lettre(stage, &e)),
        (None, Err(_)) => Err(silent(stage(waiting_for), session.timeout)),
        (None, Ok(())) => Ok(()),
    }
}

/// Sends the message of a session inside DATA, with `behind` (the next envelope's
/// commands) written after the terminating dot in the same write, and reads the reply to
/// the dot. Bytes that are not UTF-8 go through lettre's own encoder, with nothing behind.
pub(super) async fn send_message(
    session: &mut Session,
    bytes: &[u8],
    behind: Option<&str>,
) -> Result<(), SendError> {
    let timeout: Duration = session.timeout;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return timed(timeout, Stage::EndOfData, session.smtp.message(bytes))
            .await
            .map(drop);
    };
    let mut out = dot_stuffed(text);
    if let Some(commands) = behind {
        out.push_str(commands);
    }
    timed(timeout, Stage::EndOfData, session.smtp.command(Raw(&out)))
        .await
        .map(drop)
}

/// The DATA section for `text`: a dot doubled at the start of every line (RFC 5321
/// 4.5.2), then the terminating `.` line.
pub(super) fn dot_stuffed(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    if rest.starts_with('.') {
        out.push('.');
    }
    while let Some(at) = rest.find("\n.") {
        out.push_str(&rest[..=at]);
        out.push('.');
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}
