//! RFC 5322 message assembly with RFC 2369/2919/8058 list headers.
//!
//! Structure of every message:
//!
//! ```text
//! multipart/alternative            (no invite)
//!   text/plain; charset=utf-8
//!   text/html; charset=utf-8
//!
//! multipart/mixed                  (with an invite)
//!   multipart/alternative (as above)
//!   text/calendar; method=…; charset=utf-8   (attachment "training.ics")
//! ```

use std::time::SystemTime;

use lettre::{
    Message,
    address::Envelope,
    message::{
        Attachment, Mailbox, MultiPart, SinglePart,
        header::{ContentType, HeaderName, HeaderValue},
    },
};

use super::MailError;
use crate::templates::RenderedEmail;

/// Headers that make a message list mail.
#[derive(Debug, Clone)]
pub struct ListHeaders {
    /// `List-Id` value, e.g. `Safe Harbor Trainings <trainings.example.org>`.
    pub list_id: String,
    pub unsubscribe_url: String,
    pub subscribe_url: String,
    pub help_url: String,
}

/// An iCalendar object to attach.
#[derive(Debug, Clone)]
pub struct CalendarPart {
    pub method: String,
    pub body: String,
}

pub struct Parts<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    pub to: Mailbox,
    /// Given, so that lettre does not work it out again by parsing the From and To
    /// headers it has just written.
    pub envelope: Envelope,
    pub message_id: &'a str,
    pub date: SystemTime,
    pub rendered: RenderedEmail,
    pub list: Option<ListHeaders>,
    pub calendar: Option<CalendarPart>,
}

pub fn build(parts: Parts<'_>) -> Result<Message, MailError> {
    let mut builder = Message::builder()
        .from(parts.from.clone())
        .to(parts.to)
        .envelope(parts.envelope)
        .subject(parts.rendered.subject)
        .date(parts.date)
        .message_id(Some(format!("<{}>", parts.message_id)));
    if let Some(reply_to) = parts.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    let alternative = MultiPart::alternative()
        .singlepart(SinglePart::plain(normalize_newlines(&parts.rendered.text)))
        .singlepart(SinglePart::html(normalize_newlines(&parts.rendered.html)));
    let body = match parts.calendar {
        None => alternative,
        Some(cal) => {
            let content_type = ContentType::parse(&format!(
                "text/calendar; charset=utf-8; method={}",
                cal.method
            ))
            .map_err(|e| MailError::Build(format!("calendar content type: {e}")))?;
            MultiPart::mixed()
                .multipart(alternative)
                .singlepart(Attachment::new("training.ics".into()).body(cal.body, content_type))
        }
    };
    let mut message = builder
        .multipart(body)
        .map_err(|e| MailError::Build(e.to_string()))?;
    if let Some(list) = parts.list {
        let headers = message.headers_mut();
        for (name, value) in [
            ("List-Id", list.list_id),
            ("List-Unsubscribe", format!("<{}>", list.unsubscribe_url)),
            (
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".to_owned(),
            ),
            ("List-Subscribe", format!("<{}>", list.subscribe_url)),
            ("List-Help", format!("<{}>", list.help_url)),
        ] {
            if value.contains(['\r', '\n']) {
                return Err(MailError::Build(format!(
                    "{name} would contain a line break"
                )));
            }
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value,
            ));
        }
    }
    Ok(message)
}

/// Template files may be saved with CRLF or LF; parts are built from LF text and lettre
/// encodes line ends as CRLF on the wire.
fn normalize_newlines(s: &str) -> String {
    // Rendered text is usually LF already, and looking for a CR is far cheaper than
    // searching for "\r\n" through every message.
    if s.contains('\r') {
        s.replace("\r\n", "\n")
    } else {
        s.to_owned()
    }
}

/// `List-Id` in RFC 2919 form: a quoted description and the id in angle brackets.
pub fn list_id_header(name: &str, id: &str) -> String {
    let description: String = name
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    format!("\"{description}\" <{id}>")
}

#[cfg(test)]
mod tests {
    use super::normalize_newlines;

    #[test]
    fn crlf_becomes_lf_and_everything_else_is_kept() {
        assert_eq!(normalize_newlines("a\r\nb\r\n"), "a\nb\n");
        assert_eq!(normalize_newlines("a\nb\n"), "a\nb\n");
        // A lone CR is not a line end here; lettre encodes it as it is.
        assert_eq!(normalize_newlines("a\rb\r\nc"), "a\rb\nc");
        assert_eq!(normalize_newlines(""), "");
    }
}
