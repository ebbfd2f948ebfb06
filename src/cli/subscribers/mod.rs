//! `harborlist subscribers …`: the list, for staff.
//!
//! Each subcommand reads what staff typed, validates it at the edge (addresses and names
//! through [`crate::domain`]), calls one [`Store`] operation and prints a one-line result:
//!
//! * `list` and `export` read the list (`export` streams it, so memory stays flat);
//! * `import` reads a CSV file on a blocking thread — parse, validate, drop repeats,
//!   derive unsubscribe links — and hands batches of `IMPORT_BATCH` rows through a
//!   small channel to this task, which writes each batch in one transaction while the
//!   next is being prepared;
//! * `remove` unsubscribes one address, `forget` erases and suppresses it.
//!
//! Addresses appear in full only where staff typed them on the command line; rows of an
//! import file are referred to by line number.

use std::{
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use futures_util::StreamExt;

use super::sheet;
use crate::{
    config::Settings,
    domain::{SubscriberEmail, terminal_safe},
    fsutil,
    store::{
        Store,
        roster::{ExportRow, RemoveOutcome},
        subscriptions::Status,
    },
};

mod import;

use import::ImportOptions;
pub use import::{CheckedRow, Delimiter, ImportFormat, check_import_csv};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everyone who ever asked to join, with their status (pending, active, unsubscribed, bouncing).
    ///
    /// People who registered for a training without joining the list are not on it: see
    /// `harborlist registrations list`.
    ///
    /// With `--status bouncing`, each row also shows the last report about the address
    /// (when it came, its status code and the receiver's words): the reason their mail
    /// stopped.
    List {
        /// Print a JSON array of {email, name, status, source, created_at, confirmed_at};
        /// rows of bouncing people also have last_bounce_at, last_status and
        /// last_diagnostic (null when there is no report).
        #[arg(long)]
        json: bool,
        /// Only the people with this status.
        #[arg(long, value_enum, value_name = "STATUS")]
        status: Option<StatusFilter>,
    },
    /// Save the whole list (everyone, in every state) as CSV or JSON.
    ///
    /// Each subscriber's email, name, status, source (web or import), when they joined,
    /// confirmed and unsubscribed (UTC times), and the trainings they registered for
    /// ("2027-01-20 registered; 2027-03-17 waitlisted"; in JSON with the name and
    /// organisation they gave). People who registered for a training without joining the
    /// list are not in it (`registrations list` shows them). Without --output the data goes to the
    /// screen (standard output), so you can redirect it; the count goes to standard error.
    /// The file holds personal data: keep it safe and delete it when you are done.
    ///
    /// In CSV, a cell that begins with =, +, -, @, a tab or a carriage return gets a
    /// leading ' so that a spreadsheet shows it as text instead of running it as a
    /// formula; `import` takes the ' off again.
    Export {
        /// csv (with a header row, opens in a spreadsheet) or json (an array of objects).
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Write to this file instead of standard output. It is written in full, readable by
        /// you only, then put in place of any file (or link) of that name.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Add people from another list's export (CSV or text), with the status the old list gave them.
    ///
    /// Only import people who agreed to get these emails on the old list. Exports from
    /// Mailchimp, Google Groups, Mailman (`mailman members`) and spreadsheets are read as
    /// they are; save a spreadsheet as "CSV UTF-8".
    ///
    /// CSV: the first line must name the columns. The address is found in a column named
    /// email, e-mail, email address, e-mail address or mail, and the name in name, full
    /// name, display name or nickname, or first name + last name (any capitalisation;
    /// spaces, hyphens and underscores do not matter). Other columns are ignored. Commas,
    /// semicolons or tabs between cells are all recognised. A file made by `export` can be
    /// imported as it is (the ' it puts before cells that look like formulas is taken off).
    ///
    /// Text: one person a line, the address alone or "Name <address>" (what `mailman
    /// members` prints). A file whose first line is like that is read as text by itself;
    /// otherwise say --format text.
    ///
    /// Status: a column named status, email status, member status or group status is
    /// honoured: unsubscribed, suspended and banned people are imported as unsubscribed;
    /// cleaned, bounced and bouncing ones as bouncing. Neither kind gets any mail. A
    /// Mailchimp unsubscribed export (it has an UNSUB_TIME column) comes in unsubscribed,
    /// a cleaned one (CLEAN_TIME) bouncing. Other status words count as active and are
    /// listed in the summary.
    ///
    /// Nobody already on the list is changed, whatever their status: in particular, people
    /// who unsubscribed stay unsubscribed. People erased with `forget` are not added back.
    /// An address that appears twice in the file counts once. Rows with a problem are
    /// skipped and listed as "line N: reason"; the rest are imported. Importing the same
    /// file again is safe.
    ///
    /// Prints how the file was read (format, the columns used and ignored), then: imported
    /// N, already on the list N, suppressed N, bad rows N. Exits 1 only if the file cannot
    /// be read or has no email column; the message says which option fixes it.
    Import {
        /// The file to read (CSV, or a text list with one address per line).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// csv or text; found from the file's first line if not given.
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<ImportFormat>,
        /// The CSV separator: comma, semicolon or tab (or , ;); found from the header line
        /// if not given.
        #[arg(long, value_name = "CHAR")]
        delimiter: Option<Delimiter>,
        /// The header of the column holding the addresses, if it is not one of the usual.
        #[arg(long, value_name = "HEADER")]
        email_column: Option<String>,
        /// The header of the column holding the names (instead of the usual ones).
        #[arg(long, value_name = "HEADER")]
        name_column: Option<String>,
    },
    /// Unsubscribe one address, as if they had clicked their unsubscribe link.
    ///
    /// They get no more mail from the list, and any confirmation link they still hold
    /// stops working. Their record stays (use `forget` to erase it). Running it twice is
    /// harmless. Prints "removed" or "not on the list"; exits 1 only if ADDRESS is not a
    /// valid email address.
    Remove {
        /// The email address (capitalisation does not matter).
        #[arg(value_name = "ADDRESS")]
        address: String,
    },
    /// Erase everything stored about one address, for a person who asks to be forgotten.
    ///
    /// Deletes their subscriber record with their links and the messages addressed to them,
    /// and keeps only a one-way hash of the address so that a later import cannot add them
    /// back. Their training registrations lose their name, organisation, address and links
    /// but stay, unnamed, so `registrations report` still counts them; a place on a waiting
    /// list is given up. If they were not on the list, the address is still suppressed. This cannot be
    /// undone; to come back they subscribe again on the website.
    Forget {
        /// The email address (capitalisation does not matter).
        #[arg(value_name = "ADDRESS")]
        address: String,
    },
}

/// A subscriber status, as `list --status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    Pending,
    Active,
    Unsubscribed,
    Bouncing,
}

impl From<StatusFilter> for Status {
    fn from(filter: StatusFilter) -> Self {
        match filter {
            StatusFilter::Pending => Status::Pending,
            StatusFilter::Active => Status::Active,
            StatusFilter::Unsubscribed => Status::Unsubscribed,
            StatusFilter::Bouncing => Status::Bouncing,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

pub async fn run(settings: &Settings, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List { json, status } => list(settings, json, status.map(Status::from)).await,
        Command::Export { format, output } => export(settings, format, output.as_deref()).await,
        Command::Import {
            file,
            format,
            delimiter,
            email_column,
            name_column,
        } => {
            let options = ImportOptions {
                format,
                delimiter,
                email_column,
                name_column,
            };
            import::run(settings, &file, &options).await
        }
        Command::Remove { address } => remove(settings, &address).await,
        Command::Forget { address } => forget(settings, &address).await,
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    super::database::open(settings).await
}

fn now_ms() -> i64 {
    crate::clock::to_millis(chrono::Utc::now())
}

async fn list(settings: &Settings, json: bool, status: Option<Status>) -> anyhow::Result<ExitCode> {
    let store = connect(settings).await?;
    let rows = store.list_subscribers_by(status).await?;
    store.close().await;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bouncing = status == Some(Status::Bouncing);
    let mut tw = tabwriter::TabWriter::new(&mut out);
    write!(tw, "EMAIL\tNAME\tSTATUS\tSOURCE\tJOINED")?;
    if bouncing {
        write!(tw, "\tLAST BOUNCE\tCODE\tDIAGNOSTIC")?;
    }
    writeln!(tw)?;
    for r in &rows {
        write!(
            tw,
            "{}\t{}\t{}\t{}\t{}",
            // From the public form or an import: never raw to a terminal.
            terminal_safe(&r.email),
            terminal_safe(r.name.as_deref().unwrap_or("-")),
            r.status.as_str(),
            r.source,
            r.confirmed_at.as_deref().unwrap_or("-")
        )?;
        if bouncing {
            let last = r.last_bounce.clone().unwrap_or_default();
            write!(
                tw,
                "\t{}\t{}\t{}",
                last.last_bounce_at.as_deref().unwrap_or("-"),
                // A receiving server's words: never raw to a terminal either.
                terminal_safe(last.last_status.as_deref().unwrap_or("-")),
                terminal_safe(last.last_diagnostic.as_deref().unwrap_or("-"))
            )?;
        }
        writeln!(tw)?;
    }
    tw.flush()?;
    drop(tw);
    writeln!(out, "{} subscriber(s)", rows.len())?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// export

const EXPORT_HEADER: [&str; 8] = [
    "email",
    "name",
    "status",
    "source",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "registrations",
];

/// A member's registrations in one CSV cell: "2027-01-20 registered; 2027-03-17 waitlisted".
fn registrations_cell(row: &ExportRow) -> String {
    row.registrations
        .iter()
        .map(|r| format!("{} {}", r.training, r.status.as_str()))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn export(
    settings: &Settings,
    format: Format,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let store = connect(settings).await?;
    let result = match output {
        Some(path) => export_to_file(&store, format, path).await,
        None => write_export(
            &store,
            format,
            BufWriter::with_capacity(1 << 16, io::stdout()),
        )
        .await
        .context("export failed"),
    };
    store.close().await;
    let n = result?;
    match output {
        Some(path) => println!("exported {n} subscriber(s) to {}", path.display()),
        // The data is on standard output; the result line must not end up in it.
        None => eprintln!("exported {n} subscriber(s)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a new private file beside `path` and renames it into place once complete: the
/// result is 0600 whatever was there, a symlink at `path` is replaced rather than written
/// through, and a failed export leaves what was there before.
async fn export_to_file(store: &Store, format: Format, path: &Path) -> anyhow::Result<u64> {
    let mut file = fsutil::Replacement::new(path)
        .with_context(|| format!("cannot create a file beside {}", path.display()))?;
    let n = write_export(store, format, BufWriter::with_capacity(1 << 16, &mut file))
        .await
        .with_context(|| format!("export to {} failed; nothing was changed", path.display()))?;
    file.sync()
        .and_then(|()| file.commit())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(n)
}

/// Writes rows as they arrive from the database cursor; returns how many.
async fn write_export<W: Write + Send>(
    store: &Store,
    format: Format,
    mut out: W,
) -> anyhow::Result<u64> {
    let mut registrations = store.registrations_by_subscriber().await?;
    let mut rows = store.export_subscribers().map(move |row| {
        row.map(|mut r| {
            r.registrations = registrations.remove(&r.id).unwrap_or_default();
            r
        })
    });
    let mut n = 0u64;
    match format {
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            csv.write_record(EXPORT_HEADER)?;
            while let Some(row) = rows.next().await {
                let r: ExportRow = row?;
                let registrations = registrations_cell(&r);
                // Names and addresses come from the public form: no cell may run as a
                // spreadsheet formula.
                csv.write_record(
                    [
                        r.email.as_str(),
                        r.name.as_deref().unwrap_or(""),
                        r.status.as_str(),
                        r.source.as_str(),
                        r.created_at.as_str(),
                        r.confirmed_at.as_deref().unwrap_or(""),
                        r.unsubscribed_at.as_deref().unwrap_or(""),
                        registrations.as_str(),
                    ]
                    .map(sheet::escape)
                    .iter()
                    .map(|cell| cell.as_bytes()),
                )?;
                n += 1;
            }
            csv.flush()?;
        }
        Format::Json => {
            // A JSON array written element by element, so no whole-list value is built.
            out.write_all(b"[")?;
            while let Some(row) = rows.next().await {
                out.write_all(if n == 0 { b"\n  " } else { b",\n  " })?;
                serde_json::to_writer(&mut out, &row?)?;
                n += 1;
            }
            out.write_all(if n == 0 { b"]\n" } else { b"\n]\n" })?;
            out.flush()?;
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// remove and forget

/// Parses an address typed on the command line; `Err` is the exit code after the message.
///
/// Any address that could have been stored is accepted, even one with non-ASCII letters
/// before the @ (from a time when `mail.smtputf8` was on), so staff can always remove it.
fn address_arg(address: &str) -> Result<SubscriberEmail, ExitCode> {
    SubscriberEmail::parse_with(address, true).map_err(|e| {
        eprintln!(
            "error: \"{}\" is not a valid email address: {e}",
            terminal_safe(address)
        );
        ExitCode::FAILURE
    })
}

async fn remove(settings: &Settings, address: &str) -> anyhow::Result<ExitCode> {
    let email = match address_arg(address) {
        Ok(email) => email,
        Err(code) => return Ok(code),
    };
    let store = connect(settings).await?;
    let outcome = store.remove_subscriber(&email.key(), now_ms()).await?;
    store.close().await;
    // Typed by staff, but it may be pasted from anywhere.
    let email = terminal_safe(email.as_str());
    match outcome {
        RemoveOutcome::Removed { was } => {
            println!("removed {email} (was {}; now unsubscribed)", was.as_str());
        }
        RemoveOutcome::AlreadyUnsubscribed { since } => println!(
            "removed {email} (already unsubscribed{})",
            since.map(|s| format!(" since {s}")).unwrap_or_default()
        ),
        RemoveOutcome::NotOnList => println!("not on the list: {email}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn forget(settings: &Settings, address: &str) -> anyhow::Result<ExitCode> {
    let email = match address_arg(address) {
        Ok(email) => email,
        Err(code) => return Ok(code),
    };
    let store = connect(settings).await?;
    let outcome = store.forget_subscriber(&email.key(), now_ms()).await?;
    store.close().await;
    let email = terminal_safe(email.as_str());
    let suppressed = if outcome.was_suppressed {
        "it was already suppressed"
    } else {
        "it is now suppressed"
    };
    match outcome.erased {
        Some(status) => println!(
            "forgot {email}: erased their {} record, links and messages{}; {suppressed}, so an import cannot add it back",
            status.as_str(),
            match outcome.registrations {
                0 => String::new(),
                n => format!(
                    ", and the name on {n} training registration(s) (kept unnamed for the counts)"
                ),
            }
        ),
        None => println!(
            "{email} was not on the list, nothing to erase; {suppressed}, so an import cannot add it"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
