//! `harborlist bounces check`: what harborlist would make of messages from the bounce
//! mailbox, read from files, changing nothing.
//!
//! Each file goes through the parser the mailbox reader and the SMTP listener use
//! ([`crate::bounce::parse`]) and through the same pure matching ([`crate::bounce::ingest`]):
//! a VERP tag that verifies under the token keys, or one of harborlist's own Message-IDs
//! in the returned headers. No database is opened and no key file is created, so staff can
//! try saved messages before pointing harborlist at the mailbox, on any machine. Without a
//! token key, Message-IDs still match and a note says what to set for the tags.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use serde_json::{Value, json};

use crate::{
    bounce::{
        RecipientReport, Report,
        ingest::{ours, report_verp},
        parse,
    },
    config::Settings,
    domain::{ReportKind, StatusCode, TokenKey, VerpMatch, terminal_safe},
    runtime::keys::{self, KeyFile, KeyRing},
};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read saved messages from the bounce mailbox and say what harborlist would make of
    /// each, changing nothing.
    ///
    /// Use it before pointing harborlist at a mailbox (bounces.imap_url or bounces.listen):
    /// save a few of its messages as .eml files (in most mail programs: "Save as" or "Show
    /// original") and check that each is read as you expect. For each file it prints the
    /// kind (hard, soft, delayed, complaint, auto-reply or not-a-report), the addresses the
    /// report is about, the status code (such as 5.1.1) and whether it matches a message
    /// harborlist sent: by a VERP tag that verifies under the token key
    /// (security.token_key or security.token_key_file, and security.previous_token_keys),
    /// or by harborlist's own Message-ID in the returned headers. Only a matched report can
    /// change a subscriber.
    ///
    /// It reads no database and writes nothing. A file that cannot be read is named on
    /// standard error and the others are still checked; the exit status is then 1.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print a JSON array of {file, kind, recipients, status, matched, matched_by}.
    #[arg(long)]
    json: bool,
    /// Whole messages, headers and all, as saved from the mailbox.
    #[arg(value_name = "FILE.eml", required = true)]
    files: Vec<PathBuf>,
}

pub fn run(settings: &Settings, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Check(args) => check(settings, &args),
    }
}

fn check(settings: &Settings, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let matcher = Matcher::new(settings);
    if let Err(why) = &matcher.keys {
        eprintln!(
            "note: VERP tags could not be checked, so only Message-IDs match: {}",
            terminal_safe(why)
        );
    }
    let mut unreadable = 0;
    let mut checked = Vec::new();
    for path in &args.files {
        let file = path.display().to_string();
        match std::fs::read(path) {
            Ok(raw) => {
                let report = parse::parse(&raw);
                let (matched, verp) = matcher.check(&report);
                let one = Checked {
                    file,
                    report,
                    matched,
                    verp,
                };
                if args.json {
                    checked.push(one.json());
                } else {
                    print!("{}", one.human());
                }
            }
            Err(e) => {
                eprintln!("error: {}: cannot read it: {e}", terminal_safe(&file));
                unreadable += 1;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checked)?);
    }
    Ok(if unreadable > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What a report is about among the messages harborlist sent, as far as can be told
/// without the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matched {
    /// A VERP tag made with one of our keys: it names the delivery.
    Tag {
        delivery_id: i64,
    },
    /// Our Message-ID in the returned headers: it names the subscriber.
    MessageId {
        subscriber_id: i64,
    },
    Nothing,
}

impl Matched {
    fn by(self) -> Option<&'static str> {
        match self {
            Self::Tag { .. } => Some("verp"),
            Self::MessageId { .. } => Some("message-id"),
            Self::Nothing => None,
        }
    }
}

/// Matches reports the way the ingest does, with the keys if they could be loaded.
struct Matcher {
    return_path: lettre::Address,
    list_id: String,
    /// The current and previous token keys, or why they could not be loaded.
    keys: Result<KeyRing, String>,
}

impl Matcher {
    fn new(settings: &Settings) -> Self {
        Self {
            return_path: settings.mail.return_path(),
            list_id: settings.list.id.clone(),
            keys: load_keys(settings),
        }
    }

    /// The match, and what the VERP tags said (`Other` when there are no keys to ask).
    fn check(&self, report: &Report) -> (Matched, VerpMatch) {
        let verp = match &self.keys {
            Ok(ring) => {
                let keys: Vec<&TokenKey> = std::iter::once(&ring.current)
                    .chain(&ring.previous)
                    .collect();
                report_verp(report, &self.return_path, &keys)
            }
            Err(_) => VerpMatch::Other,
        };
        if let VerpMatch::Valid(tag) = verp {
            let delivery_id = tag.delivery_id;
            return (Matched::Tag { delivery_id }, verp);
        }
        let by_id = report
            .message_ids
            .iter()
            .find_map(|id| ours(id, &self.list_id))
            .map_or(Matched::Nothing, |(_, subscriber_id)| Matched::MessageId {
                subscriber_id,
            });
        (by_id, verp)
    }
}

/// The token keys, read-only: a missing key file is reported, never created, and a
/// throwaway key would make every genuine tag look forged.
fn load_keys(settings: &Settings) -> Result<KeyRing, String> {
    if settings.security.token_key.is_none() {
        let path = keys::key_path(settings);
        if !path.exists() {
            return Err(format!(
                "security.token_key_file: {} does not exist. Set security.token_key, or \
                 security.token_key_file to the key file harborlist sends with.",
                path.display()
            ));
        }
    }
    keys::load(settings, KeyFile::MustExist).map_err(|e| e.to_string())
}

/// One file's report and its match.
struct Checked {
    file: String,
    report: Report,
    matched: Matched,
    verp: VerpMatch,
}

impl Checked {
    /// The report's status: its worst recipient's (the one that gave the report its kind).
    fn status(&self) -> Option<StatusCode> {
        let rs = &self.report.recipients;
        rs.iter()
            .find(|r| r.kind == self.report.kind && r.status.is_some())
            .or_else(|| rs.iter().find(|r| r.status.is_some()))
            .and_then(|r| r.status)
    }

    fn json(&self) -> Value {
        let recipients: Vec<&str> = self
            .report
            .recipients
            .iter()
            .filter_map(|r| r.address.as_deref())
            .collect();
        json!({
            "file": self.file,
            "kind": self.report.kind.as_str(),
            "recipients": recipients,
            "status": self.status().map(|s| s.to_string()),
            "matched": self.matched != Matched::Nothing,
            "matched_by": self.matched.by(),
        })
    }

    /// The block for people: a headline, then a line per recipient.
    fn human(&self) -> String {
        let mut head = vec![kind_words(self.report.kind).to_owned()];
        head.extend(self.status().map(|s| s.to_string()));
        head.push(match_words(self.matched));
        let mut out = format!("{}: {}\n", terminal_safe(&self.file), head.join(", "));
        let several = self.report.recipients.len() > 1;
        for r in &self.report.recipients {
            out.push_str(&recipient_lines(r, several));
        }
        if self.verp == VerpMatch::Forged {
            out.push_str(
                "  VERP tag: does not verify under the token key (forged, altered on the \
                 way, or made with a key that is not configured)\n",
            );
        }
        out
    }
}

fn kind_words(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::Hard => "hard bounce",
        ReportKind::Soft => "soft bounce",
        ReportKind::Delayed => "delayed (still being tried; counts nothing)",
        ReportKind::Complaint => "complaint (marked as spam)",
        ReportKind::AutoReply => "auto-reply (ignored)",
        ReportKind::NotAReport => "not a report",
    }
}

fn match_words(matched: Matched) -> String {
    match matched {
        Matched::Tag { delivery_id } => {
            format!("matches a message harborlist sent (VERP tag of delivery {delivery_id})")
        }
        Matched::MessageId { subscriber_id } => {
            format!("matches a message harborlist sent (Message-ID, subscriber {subscriber_id})")
        }
        Matched::Nothing => "does not match anything harborlist sent".to_owned(),
    }
}

/// `  to: ADDRESS`, with its own kind and status when the report names several, and what
/// the receiver said.
fn recipient_lines(r: &RecipientReport, several: bool) -> String {
    let address = r
        .address
        .as_deref()
        .map_or_else(|| "(no address given)".into(), terminal_safe);
    let mut out = format!("  to: {address}");
    if several {
        let status = r.status.map(|s| format!(", {s}")).unwrap_or_default();
        out.push_str(&format!(" ({}{status})", r.kind));
    }
    out.push('\n');
    if let Some(d) = &r.diagnostic {
        out.push_str(&format!("  said: {}\n", terminal_safe(d)));
    }
    out
}
