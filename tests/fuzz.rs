//! Property and fuzz targets for the parsers that read outsiders' text (issue 16): address
//! and name parsing, the CSV import's row checks and Markdown rendering. Each target draws
//! random and mutated inputs with proptest, a fixed number of cases per run so that
//! `cargo test` stays quick; `PROPTEST_CASES=1000000 cargo test --release --test fuzz`
//! runs every target longer (see docs/testing.md, "Fuzzing"). The form body is fuzzed against a
//! real app in `tests/api/fuzz_form.rs`.

use std::collections::BTreeSet;

use harborlist::{
    cli::check_import_csv,
    domain::{EmailError, SubscriberEmail, SubscriberName, terminal_safe},
    mail::markdown,
};
use proptest::{prelude::*, test_runner::TestRunner};

/// Cases for a target: `PROPTEST_CASES` if set, else the target's own default.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Failures are reported with the shrunk input; nothing is written to the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `test` over `strategy` and prints how many cases ran in how long.
fn run<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = config(default_cases);
    let cases = config.cases;
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    eprintln!("fuzz {name}: {cases} cases in {:.2?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Inputs

/// Characters that make parsers work: confusables, compatibility forms, bidi and layout
/// controls, C0/C1 controls, quotes and escapes, non-ASCII letters.
const TRICKY: &[char] = &[
    '"', '\\', '@', '.', ',', ';', ' ', '\t', '\r', '\n', '\0', '\x1b', '\x07', '\u{7f}', '\u{85}',
    '\u{9b}', '\u{a0}', '\u{ad}', '\u{200b}', '\u{200d}', '\u{200e}', '\u{202a}', '\u{202e}',
    '\u{2066}', '\u{2069}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{212a}', '\u{212b}', '\u{017f}',
    '\u{0130}', '\u{0131}', '\u{1e9e}', 'ß', 'é', 'e', '\u{301}', 'ｅ', 'Ａ', '＠', '．', '。',
    'ﬁ', '①', '²', 'ä', 'а', 'о', 'ı', '\u{fffd}', '😀', '<', '>', '(', ')', '[', ']', ':', '%',
    '+', '-', '_', '=', '\'', '`', '~', '|', '{', '}', '/', '?', '!', '#', '$', '&', '*', '^', 'x',
    'X', '0', '9',
];

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => proptest::sample::select(TRICKY),
        2 => proptest::char::range('a', 'z'),
        1 => any::<char>(),
    ]
}

fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(tricky_char(), 0..max).prop_map(|cs| cs.into_iter().collect())
}

/// One edit of a string: insert, replace or delete a character somewhere.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Replace(usize, char),
    Delete(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), tricky_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<usize>(), tricky_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        any::<usize>().prop_map(Edit::Delete),
    ];
    proptest::collection::vec(edit, 0..4)
}

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let n = chars.len();
        match *edit {
            Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
            Edit::Replace(i, c) if n > 0 => chars[i % n] = c,
            Edit::Delete(i) if n > 0 => {
                chars.remove(i % n);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// A plausible address: a dot-atom or quoted local part, a dotted domain, in any case.
fn plausible_address() -> impl Strategy<Value = String> {
    let atom = "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,8}";
    let local = proptest::collection::vec(atom, 1..4).prop_map(|atoms| atoms.join("."));
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?";
    let domain = proptest::collection::vec(label, 2..4).prop_map(|labels| labels.join("."));
    (local, domain, 0..4u8).prop_map(|(local, domain, style)| match style {
        // Quoted, and quoted with every character escaped: both say the plain address.
        1 => format!("\"{local}\"@{domain}"),
        2 => {
            let escaped: String = local.chars().flat_map(|c| ['\\', c]).collect();
            format!("\"{escaped}\"@{domain}")
        }
        _ => format!("{local}@{domain}"),
    })
}

fn address_input() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => plausible_address(),
        3 => (plausible_address(), edits()).prop_map(|(a, e)| mutate(&a, &e)),
        1 => tricky_string(40),
        1 => any::<String>(),
    ]
}

// ---------------------------------------------------------------------------------------
// Address parsing

/// What every accepted address must satisfy, whichever way it was spelled.
fn check_accepted(email: &SubscriberEmail, smtputf8: bool) -> Result<(), TestCaseError> {
    let text = email.as_str();
    // Idempotent: the canonical spelling parses to itself, with the same key.
    let again = SubscriberEmail::parse_with(text, smtputf8);
    prop_assert_eq!(again, Ok(email.clone()), "re-parsing {:?}", text);
    // The key names the same mailbox: it parses, to the same key.
    let key = email.key();
    let from_key = SubscriberEmail::parse_with(&key, smtputf8)
        .map_err(|e| TestCaseError::fail(format!("key {key:?} of {text:?} refused: {e}")))?;
    prop_assert_eq!(from_key.key(), key.clone());
    // lettre puts it on the wire as we hold it.
    let wire = text
        .parse::<lettre::Address>()
        .map_err(|e| TestCaseError::fail(format!("lettre refuses {text:?}: {e}")))?;
    prop_assert_eq!(AsRef::<str>::as_ref(&wire), text);
    prop_assert_eq!(email.to_address().to_string(), text.to_owned());
    // Nothing a header or a terminal would act on, and no spaces.
    prop_assert!(
        !text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || is_layout(c))
    );
    prop_assert!(text.len() <= 254);
    prop_assert_eq!(terminal_safe(text).into_owned(), text);
    let (local, domain) = text.rsplit_once('@').expect("one @");
    prop_assert!(domain.is_ascii(), "domain of {:?} is not ASCII", text);
    prop_assert!(!local.contains('"'), "quoted local part kept in {:?}", text);
    if !smtputf8 {
        prop_assert!(text.is_ascii(), "{:?} is not ASCII", text);
    }
    Ok(())
}

#[test]
fn address_parsing() {
    run(
        "address parsing",
        10_000,
        (address_input(), any::<bool>()),
        |(input, smtputf8)| {
            let parsed = SubscriberEmail::parse_with(&input, smtputf8);
            if let Ok(email) = &parsed {
                check_accepted(email, smtputf8)?;
            }
            // A relay with SMTPUTF8 accepts at least what one without does, as the same address.
            if !smtputf8 && let Ok(email) = &parsed {
                prop_assert_eq!(SubscriberEmail::parse_with(&input, true), Ok(email.clone()));
            }
            // Text with a control character is never an address.
            if input.chars().any(char::is_control) {
                prop_assert_eq!(parsed, Err(EmailError::ControlCharacter));
            }
            Ok(())
        },
    );
}

/// Spellings that reach one mailbox give one key: case, quoting, escaping.
#[test]
fn address_spellings_share_a_key() {
    run("address spellings", 5_000, plausible_address(), |input| {
        let Ok(email) = SubscriberEmail::parse(&input) else {
            return Ok(());
        };
        let (local, domain) = email.as_str().rsplit_once('@').expect("one @");
        let escaped: String = local.chars().flat_map(|c| ['\\', c]).collect();
        for spelling in [
            email.as_str().to_uppercase(),
            email.as_str().to_lowercase(),
            format!("\"{local}\"@{domain}"),
            format!("\"{escaped}\"@{}", domain.to_uppercase()),
            format!("  {local}@{domain}  "),
        ] {
            let other = SubscriberEmail::parse(&spelling).map_err(|e| {
                TestCaseError::fail(format!("{spelling:?} (of {input:?}) refused: {e}"))
            })?;
            prop_assert_eq!(other.key(), email.key(), "{:?}", spelling);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Name parsing

fn is_layout(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

#[test]
fn name_parsing() {
    let input = prop_oneof![
        3 => tricky_string(120),
        1 => ("[A-Za-z ]{0,30}", edits()).prop_map(|(n, e)| mutate(&n, &e)),
        1 => any::<String>(),
    ];
    run("name parsing", 10_000, input, |input| {
        let parsed = SubscriberName::parse(&input);
        let forbidden = input.chars().any(|c| c.is_control() || is_layout(c));
        if forbidden {
            prop_assert!(parsed.is_err(), "accepted {:?}", input);
        }
        if let Ok(Some(name)) = &parsed {
            let text = name.as_str();
            prop_assert!(!text.chars().any(|c| c.is_control() || is_layout(c)));
            prop_assert!(text.chars().count() <= 100);
            prop_assert_eq!(text, text.trim());
            prop_assert!(!text.is_empty());
            prop_assert_eq!(SubscriberName::parse(text), Ok(Some(name.clone())));
            prop_assert_eq!(terminal_safe(text).into_owned(), text);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// CSV import rows

/// How a generated file is written.
#[derive(Debug, Clone)]
struct Style {
    bom: bool,
    crlf: bool,
    quote_all: bool,
    /// Header spellings of the email and name columns, and whether there is a name column.
    email_header: &'static str,
    name_header: Option<&'static str>,
    /// Where the email column goes among the others.
    email_first: bool,
    /// A blank line after the row with this index, if any.
    blank_after: Option<usize>,
}

fn style() -> impl Strategy<Value = Style> {
    (
        any::<(bool, bool, bool, bool)>(),
        proptest::sample::select(&["email", "Email", " EMAIL ", "eMail"][..]),
        proptest::option::of(proptest::sample::select(&["name", "Name", " NAME"][..])),
        proptest::option::of(0..8usize),
    )
        .prop_map(
            |((bom, crlf, quote_all, email_first), email_header, name_header, blank_after)| Style {
                bom,
                crlf,
                quote_all,
                email_header,
                name_header,
                email_first,
                blank_after,
            },
        )
}

/// A cell: an address-like or name-like string, never starting with `'` (the export's
/// spreadsheet guard, which the import may undo).
fn cell(inner: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    inner.prop_map(|s| s.trim_start_matches('\'').to_owned())
}

/// A file written from rows of (email, name) cells, with the line each row starts on.
fn write_csv(rows: &[(String, String)], style: &Style) -> (Vec<u8>, Vec<u64>) {
    let mut header = vec!["notes"];
    let at = if style.email_first { 0 } else { 1 };
    header.insert(at, style.email_header);
    if let Some(name) = style.name_header {
        header.insert(at, name);
    }
    let email_at = header
        .iter()
        .position(|h| *h == style.email_header)
        .expect("email column");
    let name_at = style
        .name_header
        .and_then(|n| header.iter().position(|h| *h == n));
    let newline: &[u8] = if style.crlf { b"\r\n" } else { b"\n" };
    let record = |cells: &[&str]| {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .quote_style(if style.quote_all {
                csv::QuoteStyle::Always
            } else {
                csv::QuoteStyle::Necessary
            })
            .from_writer(Vec::new());
        w.write_record(cells).expect("write to memory");
        let mut bytes = w.into_inner().expect("written");
        bytes.pop();
        bytes.extend_from_slice(newline);
        bytes
    };
    let mut bytes = if style.bom {
        "\u{feff}".as_bytes().to_vec()
    } else {
        Vec::new()
    };
    bytes.extend(record(&header));
    let mut starts = Vec::new();
    for (i, (email, name)) in rows.iter().enumerate() {
        starts.push(1 + bytes.iter().filter(|&&b| b == b'\n').count() as u64);
        let mut cells = vec!["x, \"y\""; header.len()];
        cells[email_at] = email;
        if let Some(n) = name_at {
            cells[n] = name;
        }
        bytes.extend(record(&cells));
        if style.blank_after == Some(i) {
            bytes.extend_from_slice(newline);
        }
    }
    (bytes, starts)
}

/// Line numbers the importer reports: from 1, in order, within the file.
fn check_lines(bytes: &[u8], lines: &[u64]) -> Result<(), TestCaseError> {
    let max = 1 + bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count() as u64;
    prop_assert!(lines.iter().all(|&l| (1..=max).contains(&l)), "{:?}", lines);
    prop_assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{:?}", lines);
    Ok(())
}

#[test]
fn csv_import_rows_written_by_a_spreadsheet() {
    let row = (
        cell(address_input()),
        cell(prop_oneof![tricky_string(30), "[A-Za-z ]{0,20}"]),
    );
    let input = (proptest::collection::vec(row, 0..8), style());
    run("CSV import rows", 3_000, input, |(rows, style)| {
        let (bytes, starts) = write_csv(&rows, &style);
        let checked = check_import_csv(&bytes)
            .map_err(|e| TestCaseError::fail(format!("file refused: {e}")))?;
        prop_assert_eq!(
            checked.len(),
            rows.len(),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
        for (((line, outcome), (email, name)), start) in checked.iter().zip(&rows).zip(&starts) {
            // Each row is judged exactly as the parsers judge its cells, on its own line.
            prop_assert_eq!(line, start);
            let expected = SubscriberEmail::parse(email).is_ok()
                && (style.name_header.is_none() || SubscriberName::parse(name).is_ok());
            prop_assert_eq!(
                outcome.is_ok(),
                expected,
                "{:?} {:?} {:?}",
                email,
                name,
                outcome
            );
            if let Ok((parsed, _)) = outcome {
                prop_assert_eq!(Ok(parsed.clone()), SubscriberEmail::parse(email));
            }
            if let Err(reason) = outcome {
                // Reasons never quote the cells: no address reaches the terminal.
                if email.contains('@') && email.len() > 4 {
                    prop_assert!(!reason.contains(email.as_str()), "{:?}", reason);
                }
            }
        }
        Ok(())
    });
}

/// Byte-level damage to a generated file: never a panic, lines stay within the file.
#[test]
fn csv_import_rows_mutated_bytes() {
    let row = (cell(address_input()), cell(tricky_string(20)));
    let damage = proptest::collection::vec(
        (
            any::<usize>(),
            prop_oneof![
                proptest::sample::select(
                    &[
                        b'"', b',', b';', b'\t', b'\r', b'\n', 0xef, 0xbb, 0xbf, 0xff, 0x00, 0x1b
                    ][..]
                ),
                any::<u8>()
            ],
            0..3u8,
        ),
        0..8,
    );
    let input = (proptest::collection::vec(row, 0..6), style(), damage);
    run(
        "CSV import mutated bytes",
        3_000,
        input,
        |(rows, style, damage)| {
            let (mut bytes, _) = write_csv(&rows, &style);
            for (at, byte, how) in damage {
                let n = bytes.len();
                match how {
                    0 => bytes.insert(at % (n + 1), byte),
                    1 if n > 0 => bytes[at % n] = byte,
                    _ if n > 0 => {
                        bytes.remove(at % n);
                    }
                    _ => {}
                }
            }
            if let Ok(checked) = check_import_csv(&bytes) {
                let lines: Vec<u64> = checked.iter().map(|(l, _)| *l).collect();
                check_lines(&bytes, &lines)?;
            }
            Ok(())
        },
    );
}

/// Arbitrary bytes, half of them behind a valid header.
#[test]
fn csv_import_rows_random_bytes() {
    let input = (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    run("CSV import random bytes", 5_000, input, |(header, body)| {
        let mut bytes = if header {
            b"email,name\n".to_vec()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(&body);
        match check_import_csv(&bytes) {
            Ok(checked) => {
                let lines: Vec<u64> = checked.iter().map(|(l, _)| *l).collect();
                check_lines(&bytes, &lines)?;
            }
            Err(message) => prop_assert!(!header, "a good header refused: {}", message),
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Markdown rendering

const MARKDOWN_PIECES: &[&str] = &[
    "# ",
    "## ",
    "**",
    "*",
    "_",
    "~~",
    "`",
    "```",
    "```html\n",
    "~~~",
    "[",
    "]",
    "](",
    ")",
    "![",
    "<",
    ">",
    "</",
    "<script>",
    "<SCRIPT ",
    "<script",
    "</script>",
    "<scr",
    "ipt>",
    "<img src=x onerror=alert(1)>",
    "<a href=\"javascript:x\">",
    "<!--",
    "-->",
    "<?php ",
    "<![CDATA[",
    "]]>",
    "<div>\n",
    "&lt;script&gt;",
    "&#60;script",
    "&#x3C;",
    "&amp;",
    "\\<",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "  \n",
    "\\\n",
    "- ",
    "* ",
    "1. ",
    "2) ",
    "> ",
    "    ",
    "\t",
    "| a | b |\n",
    "|---|---|\n",
    "---\n",
    "***",
    "===\n",
    "http://x.test/",
    "<http://x.test>",
    "<a@b.test>",
    "javascript:alert(1)",
    "\"",
    "'",
    "\u{0}",
    "\u{1b}",
    "\u{2028}",
    "\u{202e}",
    "text",
    "Hello ",
    "é",
];

fn markdown_input() -> impl Strategy<Value = String> {
    let pieces = proptest::collection::vec(proptest::sample::select(MARKDOWN_PIECES), 0..40)
        .prop_map(|p| p.concat());
    prop_oneof![
        3 => pieces.clone(),
        2 => (pieces, edits()).prop_map(|(m, e)| mutate(&m, &e)),
        1 => tricky_string(200),
        1 => any::<String>(),
    ]
}

/// The tags pulldown-cmark writes itself; anything else after a `<` is raw HTML.
const ALLOWED_TAGS: &[&str] = &[
    "p",
    "strong",
    "em",
    "del",
    "a",
    "img",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "code",
    "pre",
    "blockquote",
    "hr",
    "br",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
];

fn tags_in(html: &str) -> BTreeSet<String> {
    html.split('<')
        .skip(1)
        .map(|rest| {
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect()
        })
        .collect()
}

fn has_bare_cr(text: &str) -> bool {
    text.char_indices()
        .any(|(i, c)| c == '\r' && !text[i + 1..].starts_with('\n'))
}

#[test]
fn markdown_rendering() {
    run("Markdown rendering", 5_000, markdown_input(), |source| {
        let html = markdown::to_html(&source);
        prop_assert!(
            !html.to_lowercase().contains("<script"),
            "{:?} -> {:?}",
            source,
            html
        );
        for tag in tags_in(&html) {
            prop_assert!(
                ALLOWED_TAGS.contains(&tag.as_str()),
                "raw <{}> from {:?}: {:?}",
                tag,
                source,
                html
            );
        }
        let text = markdown::to_text(&source);
        prop_assert!(
            !has_bare_cr(&text),
            "bare CR in text of {:?}: {:?}",
            source,
            text
        );
        prop_assert!(
            !has_bare_cr(&html),
            "bare CR in HTML of {:?}: {:?}",
            source,
            html
        );
        prop_assert!(text.ends_with('\n'));
        Ok(())
    });
}
