//! Markdown bodies (announcements) rendered to both parts of a message.
//!
//! The HTML part uses pulldown-cmark with raw HTML dropped: an announcement is text with
//! links and emphasis, and refusing embedded HTML keeps a config typo from becoming markup
//! in 2,000 inboxes. The text part is rendered from the same events, so the two parts say
//! the same thing (spam filters notice when they don't).

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd, html};

fn parser(source: &str) -> Parser<'_> {
    Parser::new_ext(
        source,
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TABLES,
    )
}

/// Markdown → HTML fragment, raw HTML shown as text.
pub fn to_html(source: &str) -> String {
    let events = parser(source).map(|e| match e {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut out = String::with_capacity(source.len() * 3 / 2);
    html::push_html(&mut out, events);
    lf_only(out)
}

/// Line ends as `\n` only. pulldown-cmark passes a lone CR inside raw HTML and code through
/// (found by tests/fuzz.rs); the message builder sets the line ends of the wire itself.
fn lf_only(text: String) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    }
}

/// Markdown → readable plain text: paragraphs separated by blank lines, `- ` bullets,
/// numbered lists, headings on their own line, and links as `text (url)`.
pub fn to_text(source: &str) -> String {
    let mut out = String::new();
    let mut lists: Vec<Option<u64>> = Vec::new();
    let mut link: Vec<String> = Vec::new();
    for event in parser(source) {
        match event {
            Event::Start(Tag::Paragraph) => {}
            Event::End(TagEnd::Paragraph) | Event::End(TagEnd::Heading(_)) => {
                if lists.is_empty() {
                    out.push_str("\n\n");
                } else {
                    out.push('\n');
                }
            }
            Event::Start(Tag::Heading {
                level: HeadingLevel::H1,
                ..
            }) => out.push_str("## "),
            Event::Start(Tag::List(start)) => lists.push(start),
            Event::End(TagEnd::List(_)) => {
                lists.pop();
                if lists.is_empty() {
                    out.push('\n');
                }
            }
            Event::Start(Tag::Item) => {
                let depth = lists.len().saturating_sub(1);
                out.push_str(&"  ".repeat(depth));
                match lists.last_mut() {
                    Some(Some(n)) => {
                        out.push_str(&format!("{n}. "));
                        *n += 1;
                    }
                    _ => out.push_str("- "),
                }
            }
            Event::End(TagEnd::Item) if !out.ends_with('\n') => out.push('\n'),
            Event::Start(Tag::Link { dest_url, .. }) => link.push(dest_url.to_string()),
            Event::End(TagEnd::Link) => {
                if let Some(url) = link.pop() {
                    out.push_str(&format!(" ({url})"));
                }
            }
            Event::Text(t) | Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => {
                out.push_str(&t)
            }
            Event::SoftBreak => out.push(' '),
            Event::HardBreak => out.push('\n'),
            Event::Rule => out.push_str("----\n\n"),
            _ => {}
        }
    }
    lf_only(out.trim_end().to_owned() + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "Hello **all**,\n\nThe [May training](https://example.org/r) has *two* topics:\n\n- Safe Harbor basics\n- No Wrong Door\n\n<script>alert(1)</script>\n";

    #[test]
    fn html_keeps_markup_and_drops_raw_html() {
        let html = to_html(SOURCE);
        assert!(html.contains("<strong>all</strong>"));
        assert!(html.contains("<a href=\"https://example.org/r\">May training</a>"));
        assert!(html.contains("<li>No Wrong Door</li>"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn no_bare_cr_in_either_part() {
        let source = "<script>\r```\r\n\n```\ncode\rmore\n```\n";
        assert!(!to_text(source).contains('\r'), "{:?}", to_text(source));
        assert!(!to_html(source).contains('\r'), "{:?}", to_html(source));
    }

    #[test]
    fn text_reads_like_the_html() {
        let text = to_text(SOURCE);
        assert!(text.starts_with("Hello all,\n\nThe May training (https://example.org/r) has two topics:\n\n- Safe Harbor basics\n- No Wrong Door\n"), "{text}");
    }
}
