//! Which column of an import file is which: the email, name and status columns, found by
//! their headers or named by staff, what a row's cells say through them, and the error
//! that tells staff how to point at the right column when none is found.
//!
//! Headers are compared by their [`key`]: lower-cased, without spaces, hyphens and
//! underscores, so "E-mail Address", "email_address" and "EmailAddress" are one header.

use std::{borrow::Cow, collections::BTreeMap};

use crate::{
    domain::{SubscriberName, redact},
    store::roster::ImportStatus,
};

use super::{cell_text, shell_quote};

/// Header keys of the email column, the first one present winning.
const EMAIL_HEADERS: [&str; 3] = ["email", "emailaddress", "mail"];
/// As staff would write them, for the error that lists them.
const EMAIL_HEADERS_SHOWN: &str = "email, e-mail, email address, e-mail address, mail";
/// Header keys of a column with the whole name, the first one present winning.
const NAME_HEADERS: [&str; 4] = ["name", "fullname", "displayname", "nickname"];
/// Header keys of columns whose words say whether the person gets mail.
/// Google Groups' "Email preference" is one too: a member who chose "No email" asked for none.
const STATUS_HEADERS: [&str; 5] = [
    "status",
    "emailstatus",
    "memberstatus",
    "groupstatus",
    "emailpreference",
];
/// Columns only one kind of export has, each making every row of the file one status:
/// Mailchimp's unsubscribed export (`UNSUB_TIME`) and cleaned export (`CLEAN_TIME`).
const EXPORT_KIND_HEADERS: [(&str, ImportStatus); 2] = [
    ("unsubtime", ImportStatus::Unsubscribed),
    ("cleantime", ImportStatus::Bouncing),
];
/// Distinct unknown status values kept for the summary; further ones are only counted.
const UNKNOWN_KEPT: usize = 10;

/// A header as compared: lower-cased, without spaces, hyphens and underscores.
pub(super) fn key(header: &str) -> String {
    header
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// What a status cell's words mean, or `None` for words we do not know (see the parent
/// module's doc for the mapping).
pub(super) fn status_word(value: &str) -> Option<ImportStatus> {
    match value.trim().to_lowercase().as_str() {
        // Google Groups' "Group status" is a role; every role gets mail.
        "" | "subscribed" | "active" | "member" | "manager" | "owner" => Some(ImportStatus::Active),
        // Google Groups' delivery choices: all but one still want mail.
        "all email" | "each email" | "digest" | "abridged" | "daily summary" => {
            Some(ImportStatus::Active)
        }
        "no email" => Some(ImportStatus::Unsubscribed),
        "unsubscribed" | "suspended" | "banned" => Some(ImportStatus::Unsubscribed),
        // Mailchimp "cleans" an address that bounced hard.
        "cleaned" | "bounced" | "bouncing" => Some(ImportStatus::Bouncing),
        _ => None,
    }
}

/// Where a row's name comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NameColumns {
    None,
    One(usize),
    /// First and last name, joined with a space (Mailchimp's "First Name", "Last Name").
    Parts {
        first: Option<usize>,
        last: Option<usize>,
    },
}

impl NameColumns {
    fn uses(&self, i: usize) -> bool {
        match *self {
            Self::None => false,
            Self::One(at) => at == i,
            Self::Parts { first, last } => first == Some(i) || last == Some(i),
        }
    }
}

/// The columns of a CSV import file, from its header row.
#[derive(Debug, Clone)]
pub(super) struct Columns {
    pub email: usize,
    pub name: NameColumns,
    /// Status columns; a row takes the strictest status any of them gives.
    pub statuses: Vec<usize>,
    /// A column that makes every row this status, whatever the status columns say.
    pub every_row: Option<(usize, ImportStatus)>,
    /// How many columns the header row has.
    pub count: usize,
    /// The headers as written (trimmed), for the summary.
    shown: Vec<String>,
}

/// A row's status, and the unknown status word that left it active, if one did.
pub(super) type RowStatus = (ImportStatus, Option<String>);

impl Columns {
    /// Finds the columns in the header row of `file`; `email_column` and `name_column` are
    /// `--email-column` and `--name-column`. The error is a sentence for staff.
    pub fn find(
        headers: &csv::ByteRecord,
        email_column: Option<&str>,
        name_column: Option<&str>,
        file: &str,
    ) -> Result<Self, String> {
        let shown: Vec<String> = headers
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_owned()
            })
            .collect();
        let keys: Vec<String> = shown.iter().map(|h| key(h)).collect();
        let email = match email_column {
            Some(wanted) => named(&shown, &keys, wanted)
                .ok_or_else(|| not_a_column("--email-column", wanted, &shown, file))?,
            None => first_of(&keys, &EMAIL_HEADERS).ok_or_else(|| no_email_column(&shown, file))?,
        };
        let name = match name_column {
            Some(wanted) => NameColumns::One(
                named(&shown, &keys, wanted)
                    .ok_or_else(|| not_a_column("--name-column", wanted, &shown, file))?,
            ),
            None => name_columns(&keys),
        };
        let free = |i: usize| i != email && !name.uses(i);
        let statuses = (0..keys.len())
            .filter(|&i| free(i) && STATUS_HEADERS.contains(&keys[i].as_str()))
            .collect();
        let every_row = EXPORT_KIND_HEADERS.iter().find_map(|&(header, status)| {
            keys.iter()
                .position(|k| k == header)
                .filter(|&i| free(i))
                .map(|i| (i, status))
        });
        Ok(Self {
            email,
            name,
            statuses,
            every_row,
            count: shown.len(),
            shown,
        })
    }

    /// "columns used: …" and, if any, "columns ignored: …", for the summary.
    pub fn describe(&self) -> Vec<String> {
        let h = |i: usize| quoted(&self.shown[i]);
        let mut used = vec![format!("email {}", h(self.email))];
        match self.name {
            NameColumns::None => {}
            NameColumns::One(i) => used.push(format!("name {}", h(i))),
            NameColumns::Parts { first, last } => used.push(format!(
                "name {}",
                [first, last]
                    .into_iter()
                    .flatten()
                    .map(h)
                    .collect::<Vec<_>>()
                    .join(" + ")
            )),
        }
        if !self.statuses.is_empty() {
            let names: Vec<String> = self.statuses.iter().map(|&i| h(i)).collect();
            used.push(format!("status {}", in_words(&names)));
        }
        if let Some((i, status)) = self.every_row {
            used.push(format!("{} (every row {})", h(i), status.as_str()));
        }
        let mut lines = vec![format!("columns used: {}", used.join(", "))];
        let ignored: Vec<String> = (0..self.shown.len())
            .filter(|&i| !self.is_used(i))
            .map(h)
            .collect();
        if !ignored.is_empty() {
            lines.push(format!("columns ignored: {}", ignored.join(", ")));
        }
        lines
    }

    fn is_used(&self, i: usize) -> bool {
        i == self.email
            || self.name.uses(i)
            || self.statuses.contains(&i)
            || self.every_row.is_some_and(|(at, _)| at == i)
    }

    /// The row's name from its name column, or its first and last name joined.
    pub fn name_of(&self, record: &csv::ByteRecord) -> Result<Option<SubscriberName>, String> {
        let text: Cow<'_, str> = match self.name {
            NameColumns::None => return Ok(None),
            NameColumns::One(i) => match record.get(i) {
                None => return Ok(None),
                Some(cell) => Cow::Borrowed(cell_text(cell, "name")?),
            },
            NameColumns::Parts { first, last } => {
                let mut parts = Vec::new();
                for (at, column) in [(first, "first name"), (last, "last name")] {
                    if let Some(cell) = at.and_then(|i| record.get(i)) {
                        let part = cell_text(cell, column)?.trim();
                        if !part.is_empty() {
                            parts.push(part);
                        }
                    }
                }
                Cow::Owned(parts.join(" "))
            }
        };
        SubscriberName::parse(&text).map_err(|e| format!("invalid name: {e}"))
    }

    /// The row's status: the strictest its status columns give, or the export's.
    pub fn status_of(&self, record: &csv::ByteRecord) -> RowStatus {
        if let Some((_, status)) = self.every_row {
            return (status, None);
        }
        let mut status = ImportStatus::Active;
        let mut unknown = None;
        for cell in self.statuses.iter().filter_map(|&i| record.get(i)) {
            let text = String::from_utf8_lossy(cell);
            match status_word(&text) {
                Some(said) => status = status.max(said),
                None => {
                    unknown.get_or_insert_with(|| text.trim().to_owned());
                }
            }
        }
        // Only a word that left the row active is worth reporting.
        (status, unknown.filter(|_| status == ImportStatus::Active))
    }
}

/// The column staff named: as written, else by [`key`].
fn named(shown: &[String], keys: &[String], wanted: &str) -> Option<usize> {
    let wanted = wanted.trim();
    shown
        .iter()
        .position(|h| h == wanted)
        .or_else(|| keys.iter().position(|k| *k == key(wanted)))
}

fn first_of(keys: &[String], wanted: &[&str]) -> Option<usize> {
    wanted.iter().find_map(|w| keys.iter().position(|k| k == w))
}

fn name_columns(keys: &[String]) -> NameColumns {
    if let Some(i) = first_of(keys, &NAME_HEADERS) {
        return NameColumns::One(i);
    }
    let first = first_of(keys, &["firstname"]);
    let last = first_of(keys, &["lastname"]);
    if first.is_none() && last.is_none() {
        NameColumns::None
    } else {
        NameColumns::Parts { first, last }
    }
}

/// A header in double quotes, an address-like one shortened: the first line may be a
/// subscriber rather than headers, and the terminal never gets an address from the file.
fn quoted(header: &str) -> String {
    format!("\"{}\"", private(header))
}

fn private(header: &str) -> String {
    if header.contains('@') {
        redact(header)
    } else {
        header.to_owned()
    }
}

/// "A", "A and B", "A, B and C".
fn in_words(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn found(shown: &[String]) -> String {
    shown
        .iter()
        .map(|h| private(h))
        .collect::<Vec<_>>()
        .join(", ")
}

fn not_a_column(option: &str, wanted: &str, shown: &[String], file: &str) -> String {
    format!(
        "{option} {} names no column of {file}; found: {}",
        shell_quote(wanted),
        found(shown)
    )
}

/// The error for a header row without an email column, with how to fix it.
fn no_email_column(shown: &[String], file: &str) -> String {
    if shown.iter().all(String::is_empty) {
        return format!(
            "{file} has no email column (the file is empty): the first line must name the columns, e.g. email,name"
        );
    }
    let list = found(shown);
    if shown.iter().any(|h| h.contains('@')) {
        return format!(
            "{file} has no email column; found: {list}; the first line looks like a subscriber, so add a header line naming the columns, e.g. email,name"
        );
    }
    // A header that says it holds addresses in other words ("Primary Email", "address").
    let guess = shown.iter().find(|h| {
        let k = key(h);
        k.contains("mail") || k.contains("address") || k.contains("adress")
    });
    let fix = match guess {
        Some(header) => format!(
            "use --email-column {} if that column holds the addresses",
            shell_quote(header)
        ),
        None => "say which column holds the addresses with --email-column 'COLUMN'".to_owned(),
    };
    format!(
        "{file} has no email column; found: {list} — {fix} (headers recognised by themselves: {EMAIL_HEADERS_SHOWN})"
    )
}

/// Status words the import did not know, with how many rows had each; those rows were
/// read as active.
#[derive(Debug, Default)]
pub(super) struct UnknownStatuses {
    rows: BTreeMap<String, u64>,
    /// Rows whose word was not kept, once [`UNKNOWN_KEPT`] words were.
    others: u64,
}

impl UnknownStatuses {
    pub fn note(&mut self, word: String) {
        if let Some(n) = self.rows.get_mut(&word) {
            *n += 1;
        } else if self.rows.len() < UNKNOWN_KEPT {
            self.rows.insert(word, 1);
        } else {
            self.others += 1;
        }
    }

    /// The summary line, if there were any.
    pub fn describe(&self) -> Option<String> {
        if self.rows.is_empty() {
            return None;
        }
        let rows = |n: u64| if n == 1 { "row" } else { "rows" };
        let mut words: Vec<String> = self
            .rows
            .iter()
            .map(|(word, &n)| format!("{} ({n} {})", quoted(word), rows(n)))
            .collect();
        if self.others > 0 {
            words.push(format!(
                "other words ({} {})",
                self.others,
                rows(self.others)
            ));
        }
        Some(format!(
            "status words not known, so read as active: {}",
            words.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(line: &str) -> csv::ByteRecord {
        csv::ByteRecord::from(line.split(',').collect::<Vec<_>>())
    }

    fn find(line: &str) -> Result<Columns, String> {
        Columns::find(&header(line), None, None, "f.csv")
    }

    #[test]
    fn headers_are_compared_without_case_spaces_hyphens_and_underscores() {
        for email in [
            "email",
            "E-mail",
            "Email Address",
            "E-Mail Address",
            "email_address",
            "MAIL",
        ] {
            let columns = find(&format!("x,{email}")).expect(email);
            assert_eq!(columns.email, 1, "{email}");
        }
        for name in ["Name", "Full Name", "display_name", "Nickname"] {
            let columns = find(&format!("Email,{name}")).expect(name);
            assert_eq!(columns.name, NameColumns::One(1), "{name}");
        }
        let columns = find("Last Name,Email Address,First Name").expect("parts");
        assert_eq!(
            columns.name,
            NameColumns::Parts {
                first: Some(2),
                last: Some(0)
            }
        );
    }

    #[test]
    fn the_first_spelling_in_the_list_wins() {
        let columns = find("Mail,E-mail address,Email,Nickname,Name").expect("columns");
        assert_eq!(columns.email, 2);
        assert_eq!(columns.name, NameColumns::One(4));
        assert_eq!(
            columns.describe(),
            [
                "columns used: email \"Email\", name \"Name\"",
                "columns ignored: \"Mail\", \"E-mail address\", \"Nickname\""
            ]
        );
    }

    #[test]
    fn status_words_map_as_documented() {
        use ImportStatus::*;
        for (word, status) in [
            ("unsubscribed", Some(Unsubscribed)),
            ("Suspended", Some(Unsubscribed)),
            ("BANNED", Some(Unsubscribed)),
            ("cleaned", Some(Bouncing)),
            ("bounced", Some(Bouncing)),
            (" bouncing ", Some(Bouncing)),
            ("subscribed", Some(Active)),
            ("member", Some(Active)),
            ("", Some(Active)),
            ("pending", None),
        ] {
            assert_eq!(status_word(word), status, "{word:?}");
        }
    }

    #[test]
    fn a_row_takes_the_strictest_status_and_reports_unknown_words_only_if_active() {
        let columns = find("Email,Group status,Email status").expect("columns");
        let row = |cells: &str| columns.status_of(&header(cells));
        assert_eq!(row("a@x.org,member,"), (ImportStatus::Active, None));
        assert_eq!(
            row("a@x.org,manager,bouncing"),
            (ImportStatus::Bouncing, None)
        );
        assert_eq!(
            row("a@x.org,invited,"),
            (ImportStatus::Active, Some("invited".into()))
        );
        assert_eq!(
            row("a@x.org,invited,banned"),
            (ImportStatus::Unsubscribed, None)
        );
        let export = find("Email Address,UNSUB_TIME,status").expect("unsubscribed export");
        assert_eq!(
            export.status_of(&header("a@x.org,2024-01-01,subscribed")),
            (ImportStatus::Unsubscribed, None)
        );
    }

    #[test]
    fn errors_say_how_to_fix_the_file() {
        let e = find("Nickname,Primary Email,Notes").unwrap_err();
        assert!(
            e.contains(
                "found: Nickname, Primary Email, Notes — use --email-column 'Primary Email'"
            ),
            "{e}"
        );
        let e = find("who,what").unwrap_err();
        assert!(e.contains("--email-column 'COLUMN'"), "{e}");
        let e = find("jane@example.org,Jane").unwrap_err();
        assert!(
            e.contains("add a header line") && !e.contains("jane@"),
            "{e}"
        );
        let e = Columns::find(&header("Email,Who"), None, Some("Name"), "f.csv").unwrap_err();
        assert_eq!(
            e,
            "--name-column 'Name' names no column of f.csv; found: Email, Who"
        );
    }

    #[test]
    fn unknown_words_are_counted_and_kept_up_to_a_limit() {
        let mut unknown = UnknownStatuses::default();
        for i in 0..12 {
            unknown.note(format!("w{i:02}"));
        }
        unknown.note("w00".into());
        let line = unknown.describe().expect("line");
        assert!(
            line.starts_with(
                "status words not known, so read as active: \"w00\" (2 rows), \"w01\" (1 row)"
            ),
            "{line}"
        );
        assert!(
            line.ends_with("\"w09\" (1 row), other words (2 rows)"),
            "{line}"
        );
    }
}
