//! Reading delivered messages back with a MIME parser.

use mail_parser::{Message, MessageParser, MimeHeaders};

pub fn parse(bytes: &[u8]) -> Message<'_> {
    MessageParser::default()
        .parse(bytes)
        .expect("message parses")
}

pub fn text_of(bytes: &[u8]) -> String {
    parse(bytes).body_text(0).expect("text part").into_owned()
}

pub fn html_of(bytes: &[u8]) -> String {
    parse(bytes).body_html(0).expect("html part").into_owned()
}

/// The first link in the text part whose path contains `marker`.
pub fn link_in(bytes: &[u8], marker: &str) -> String {
    let text = text_of(bytes);
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(marker))
        .unwrap_or_else(|| panic!("no link containing {marker} in:\n{text}"))
        .trim_end_matches(['.', ',', ')', '>'])
        .to_owned()
}

/// The URL inside `List-Unsubscribe: <…>`.
pub fn list_unsubscribe(bytes: &[u8]) -> String {
    let msg = parse(bytes);
    let raw = msg
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe header");
    raw.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

pub fn header(bytes: &[u8], name: &str) -> Option<String> {
    parse(bytes).header_raw(name).map(|v| v.trim().to_owned())
}

/// The text/calendar part, if any.
pub fn calendar_part(bytes: &[u8]) -> Option<String> {
    let msg = parse(bytes);
    msg.attachments()
        .find(|p| p.is_content_type("text", "calendar"))
        .and_then(|p| p.text_contents().map(str::to_owned))
}
