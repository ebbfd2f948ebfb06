//! Untrusted text made safe to print on a staff member's terminal.
//!
//! Names and addresses come from the public form and CSV files, relay replies from a
//! server we don't run. Printed raw, an escape sequence in them (`ESC[2J`, `ESC]0;…BEL`)
//! would clear the screen, retitle the window or fake output, and a bidi control would
//! reorder what follows. [`terminal_safe`] writes every such character as a Rust-style
//! escape (`\u{1b}`) instead; every CLI print of untrusted text goes through it.

use std::borrow::Cow;

use super::name::is_layout_control;

/// `text` with control characters (C0, DEL, C1 — including TAB, CR and LF), the bidi
/// controls and the line and paragraph separators written as `\u{…}`. Text without any
/// is returned as it is.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_layout_control(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert!(matches!(terminal_safe("José <a@b.test>"), Cow::Borrowed(_)));
        assert_eq!(terminal_safe("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(terminal_safe("\x1b]0;title\x07"), "\\u{1b}]0;title\\u{7}");
        assert_eq!(
            terminal_safe("x\r\n\t\u{7f}\u{9b}"),
            "x\\u{d}\\u{a}\\u{9}\\u{7f}\\u{9b}"
        );
        assert_eq!(
            terminal_safe("Ann\u{202E}evil\u{2028}"),
            "Ann\\u{202e}evil\\u{2028}"
        );
    }
}
