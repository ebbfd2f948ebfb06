//! Naming an `[[announcements]]` entry in an error the way staff know it: by its `id`,
//! its place counted from 1, and the file it is in.
//!
//! Validation and the `config` crate both speak of entries by 0-based index
//! (`announcements[1].send_at`, or the crate's own `announcements[1]send_at`), which staff
//! read as "the first one" and cannot find when the entries are in one of several layered
//! files. Later files replace an earlier `[[announcements]]` list rather than adding to
//! it, so the entries in force are those of the last file that has the list; that is the
//! file named. If it cannot be told for sure (a file that does not read as TOML, an entry
//! past that file's list), the error says "in the [[announcements]] entries" instead.

use std::{fmt, path::PathBuf};

use super::{AnnouncementSettings, ConfigError, Sources};

/// One entry as an error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its `id`, when it has a non-empty one.
    pub id: Option<String>,
    /// Counted from 0, as the list holds it.
    pub index: usize,
    /// The file its list is in, when that is certain.
    pub file: Option<PathBuf>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nth = ordinal(self.index + 1);
        match (&self.id, &self.file) {
            (Some(id), Some(file)) => write!(
                f,
                "announcement {id:?} (the {nth} [[announcements]] entry, in {})",
                file.display()
            ),
            (Some(id), None) => write!(
                f,
                "announcement {id:?} (the {nth} in the [[announcements]] entries)"
            ),
            (None, Some(file)) => write!(
                f,
                "the {nth} [[announcements]] entry (in {})",
                file.display()
            ),
            (None, None) => write!(f, "the {nth} of the [[announcements]] entries"),
        }
    }
}

/// "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st".
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// An entry's key taken apart: its index, and the field when one is named.
type EntryKey<'a> = (usize, Option<&'a str>);

/// `announcements[1].send_at` and `announcements[1]send_at` → `(1, Some("send_at"))`;
/// `announcements[1]` → `(1, None)`; any other key → `None`.
fn parse_key(key: &str) -> Option<EntryKey<'_>> {
    let rest = key.strip_prefix("announcements[")?;
    let (index, field) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    let field = field.strip_prefix('.').unwrap_or(field);
    Some((index, (!field.is_empty()).then_some(field)))
}

/// `err` with an announcement entry's key put in staff's words (see the module's doc).
/// `entries` are the loaded ones, when loading got that far: their ids are the ones in
/// force; otherwise the id is read from the file.
pub fn name_entries(
    err: ConfigError,
    sources: &Sources,
    entries: Option<&[AnnouncementSettings]>,
) -> ConfigError {
    match err {
        ConfigError::Invalid { key, problem } => match parse_key(&key) {
            Some((index, field)) => {
                let id = entries.and_then(|e| e.get(index)).map(|a| a.id.as_str());
                ConfigError::Invalid {
                    key: entry_key(&sources.entry(index, id), field),
                    problem,
                }
            }
            None => ConfigError::Invalid { key, problem },
        },
        ConfigError::Load(message) => match crate_key(&message) {
            Some((problem, (index, field), rest)) => ConfigError::Invalid {
                key: entry_key(&sources.entry(index, None), field),
                problem: format!("{problem}{rest}"),
            },
            None => ConfigError::Load(message),
        },
    }
}

fn entry_key(entry: &Entry, field: Option<&str>) -> String {
    match field {
        Some(field) => format!("{entry}: {field}"),
        None => entry.to_string(),
    }
}

/// The `config` crate's "PROBLEM for key `announcements[1]send_at`REST": the problem, the
/// entry's key, and whatever followed the key (such as " in FILE").
fn crate_key(message: &str) -> Option<(&str, EntryKey<'_>, &str)> {
    let (problem, after) = message.rsplit_once(" for key `")?;
    let (key, rest) = after.split_once('`')?;
    Some((problem, parse_key(key)?, rest))
}

impl Sources {
    /// The `index`th entry in force, with `id` when the caller knows it (else the file's).
    pub fn entry(&self, index: usize, id: Option<&str>) -> Entry {
        let (file, from_file) = match self.announcements_list() {
            Some((file, list)) => match list.get(index) {
                Some(e) => (
                    Some(file),
                    e.get("id").and_then(toml::Value::as_str).map(str::to_owned),
                ),
                None => (None, None),
            },
            None => (None, None),
        };
        let id = id.map(str::to_owned).or(from_file);
        Entry {
            id: id.filter(|i| !i.trim().is_empty()),
            index,
            file,
        }
    }

    /// The last of [`Sources::files`] with an `[[announcements]]` list, and that list:
    /// the one in force. `None` if none has one, or if a later file cannot be read as
    /// TOML (it might have held the list).
    fn announcements_list(&self) -> Option<(PathBuf, Vec<toml::Value>)> {
        for file in self.files().into_iter().rev() {
            let text = std::fs::read_to_string(&file).ok()?;
            let doc = text.parse::<toml::Table>().ok()?;
            if let Some(toml::Value::Array(list)) = doc.get("announcements") {
                return Some((file, list.clone()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
                "111th"
            ]
        );
    }

    #[test]
    fn both_spellings_of_an_entry_key() {
        assert_eq!(
            parse_key("announcements[1].send_at"),
            Some((1, Some("send_at")))
        );
        assert_eq!(
            parse_key("announcements[1]send_at"),
            Some((1, Some("send_at")))
        );
        assert_eq!(parse_key("announcements[0]"), Some((0, None)));
        assert_eq!(parse_key("announcements.max_late"), None);
        assert_eq!(parse_key("reminders[0].name"), None);
    }

    #[test]
    fn an_entry_reads_by_id_place_and_file() {
        let entry = |id: Option<&str>, file: Option<&str>| Entry {
            id: id.map(str::to_owned),
            index: 1,
            file: file.map(PathBuf::from),
        };
        assert_eq!(
            entry(Some("may-2027-topics"), Some("config/announcements.toml")).to_string(),
            "announcement \"may-2027-topics\" (the 2nd [[announcements]] entry, in config/announcements.toml)"
        );
        assert_eq!(
            entry(Some("may"), None).to_string(),
            "announcement \"may\" (the 2nd in the [[announcements]] entries)"
        );
        assert_eq!(
            entry(None, Some("local.toml")).to_string(),
            "the 2nd [[announcements]] entry (in local.toml)"
        );
    }
}
