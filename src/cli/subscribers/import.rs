//! `harborlist subscribers import`: moving an existing list over, from the files other
//! list services export.
//!
//! # What it reads
//!
//! A CSV file with a header row, or a text list, one person a line ([`text`]: the address
//! alone or `Name <address>`, as `mailman members` prints them). Without `--format` the
//! first line that is not blank decides: an address alone or `Name <address>` makes the
//! file a text list, anything else is a header row (`--delimiter`, `--email-column` and
//! `--name-column` mean CSV). The CSV separator is whichever of comma, semicolon and tab
//! the header row has most of outside quotes (comma on a tie), unless `--delimiter` names
//! it. A UTF-8 BOM and CRLF line ends are read as if absent.
//!
//! The columns are found by their headers ([`columns`], compared without case, spaces,
//! hyphens and underscores): the address in `email`, `e-mail`, `email address`, `e-mail
//! address` or `mail`; the name in `name`, `full name`, `display name` or `nickname`, or
//! else `first name` and `last name` joined with a space. `--email-column` and
//! `--name-column` name any other header. Every other column is ignored, and the summary
//! names the columns used and ignored.
//!
//! # Statuses
//!
//! What the old list said about a person is kept, so nobody who left it, or whose mail
//! bounced there, is mailed here. Status columns are those headed `status`, `email status`,
//! `member status` or `group status`, read word by word:
//!
//! * `unsubscribed`, `suspended`, `banned`: imported as unsubscribed;
//! * `cleaned`, `bounced`, `bouncing`: imported as bouncing (Mailchimp "cleans" an address
//!   after a hard bounce);
//! * empty, `subscribed`, `active`, and Google Groups' roles in its "Group status"
//!   (`member`, `manager`, `owner`): active;
//! * any other word: active, and the summary lists the word with its count (Mailchimp's
//!   `pending`, say: people who never confirmed), so staff can `remove` them.
//!
//! A row with several status columns (Google Groups has "Group status" and "Email status")
//! takes the strictest: unsubscribed, then bouncing, then active. Mailchimp's unsubscribed
//! export is known by its `UNSUB_TIME` column and its cleaned export by `CLEAN_TIME`: every
//! row of such a file is unsubscribed (or bouncing), status column or not.
//!
//! Only active people get list mail: the fan-out takes `status = 'active'` only. As
//! before, nobody already known is changed, whatever their status or the file's (people
//! who unsubscribed stay so, people known only from a training registration join only
//! from an active row), and addresses erased with `forget` are never added: see
//! [`Store::import_batch`](crate::store::Store::import_batch). The summary counts each
//! kind.
//!
//! # How
//!
//! A blocking thread reads the file (counting true line numbers through CRLF and blank
//! lines), checks each row and derives its unsubscribe link, and hands batches through a
//! small channel to the async side, which writes each batch in one transaction (two at
//! once on PostgreSQL) and moves the progress bar.

mod columns;
mod text;

use std::{
    cell::{Cell, RefCell},
    collections::{HashSet, VecDeque},
    fs::File,
    io::{self, IsTerminal, Read},
    path::Path,
    process::ExitCode,
    str::FromStr,
};

use anyhow::Context;
use futures_util::{StreamExt, stream::FuturesOrdered};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    config::Settings,
    domain::{
        EmailError, SubscriberEmail, SubscriberName, TokenKey, TokenPurpose, new_nonce,
        terminal_safe,
    },
    store::{
        Backend,
        roster::{IMPORT_BATCH, ImportCandidate, ImportCounts, ImportStatus},
    },
};

use super::now_ms;
use crate::cli::sheet;
use columns::{Columns, UnknownStatuses};

/// How to read the file, as `--format` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// A header row naming the columns, then one row per person.
    Csv,
    /// One person a line: the address alone, or `Name <address>`.
    Text,
}

/// The CSV separator, as `--delimiter` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    Comma,
    Semicolon,
    Tab,
}

impl Delimiter {
    fn byte(self) -> u8 {
        match self {
            Self::Comma => b',',
            Self::Semicolon => b';',
            Self::Tab => b'\t',
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Comma => "commas",
            Self::Semicolon => "semicolons",
            Self::Tab => "tabs",
        }
    }
}

impl FromStr for Delimiter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_matches(' ').to_lowercase().as_str() {
            "," | "comma" => Ok(Self::Comma),
            ";" | "semicolon" => Ok(Self::Semicolon),
            "\t" | "\\t" | "tab" => Ok(Self::Tab),
            _ => Err("use comma, semicolon or tab (or the character: ',' ';')".to_owned()),
        }
    }
}

/// The command line's choices; all `None` means "find out from the file".
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub format: Option<ImportFormat>,
    pub delimiter: Option<Delimiter>,
    pub email_column: Option<String>,
    pub name_column: Option<String>,
}

/// Good rows for one transaction, and how far into the file the reader was after them.
type Batch = (Vec<ImportCandidate>, u64);

/// What the reading side found; the database side keeps its own [`ImportCounts`].
#[derive(Debug, Default)]
struct ParseReport {
    bad_rows: u64,
    /// Status words not known, in rows read as active.
    unknown: UnknownStatuses,
    /// Set if reading stopped early (an I/O error part-way through the file).
    read_error: Option<String>,
}

/// A good row: who, and what the old list said about them.
#[derive(Debug)]
struct Row {
    email: SubscriberEmail,
    name: Option<SubscriberName>,
    status: ImportStatus,
    /// The unknown status word that left the row active, if one did.
    unknown_status: Option<String>,
}

impl Row {
    /// A row with no status: a text list's.
    fn active((email, name): (SubscriberEmail, Option<SubscriberName>)) -> Self {
        Self {
            email,
            name,
            status: ImportStatus::Active,
            unknown_status: None,
        }
    }
}

/// A row, or why it is skipped (never quoting its cells).
type Checked = Result<Row, String>;

pub(super) async fn run(
    settings: &Settings,
    file: &Path,
    options: &ImportOptions,
) -> anyhow::Result<ExitCode> {
    // Check the file before touching anything else: a wrong file fails fast, changes nothing.
    let (Opened { rows, layout }, size) = match open_import(file, options) {
        Ok(opened) => opened,
        Err(problem) => {
            // The header row is the file's text: a crafted one could hold escape sequences.
            eprintln!("error: {}", terminal_safe(&problem));
            return Ok(ExitCode::FAILURE);
        }
    };
    for line in layout {
        // Headers are the file's text.
        println!("{}", terminal_safe(&line));
    }
    // Unsubscribe links must verify against the key the server uses: the one the
    // database's fingerprint names (pinned here on a fresh install).
    let (store, key) = crate::cli::database::open_to_add(settings, now_ms()).await?;

    let progress = progress_bar(size);
    // The reader prepares the next batch while this task writes one; a single slot keeps
    // the bar (moved here, as batches are written) close to what the reader has read.
    let (batches, mut incoming) = tokio::sync::mpsc::channel::<Batch>(1);
    let reader_progress = progress.clone();
    let parser =
        tokio::task::spawn_blocking(move || read_rows(rows, &key, &reader_progress, &batches));

    // On PostgreSQL two batches are written at once, each by its own session: one
    // statement keeps one server process busy, and measured alone that process was the
    // bound, with the second core mostly idle. SQLite has one writer, so a second
    // transaction would only wait for the lock. Batches hold different addresses (the
    // reader drops repeats), so concurrent batches never wait on each other's rows.
    let writers = match store.backend() {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    };
    let write = |(batch, read_to): Batch| {
        let store = &store;
        async move { (store.import_batch(&batch, now_ms()).await, read_to) }
    };
    let mut writing = FuturesOrdered::new();
    let mut reading = true;
    let mut counts = ImportCounts::default();
    let mut failure = None;
    loop {
        let done = if reading && failure.is_none() && writing.len() < writers {
            tokio::select! {
                biased;
                Some(done) = writing.next() => done,
                next = incoming.recv() => {
                    match next {
                        Some(batch) => writing.push_back(write(batch)),
                        None => reading = false,
                    }
                    continue;
                }
            }
        } else {
            // After a failure, the batches already sent still finish and are counted, so
            // the summary names every saved row.
            match writing.next().await {
                Some(done) => done,
                None => break,
            }
        };
        match done {
            (Ok(added), read_to) => {
                counts += added;
                progress.set_message(format!("{} imported", counts.added));
                progress.set_position(read_to);
            }
            (Err(e), _) => {
                failure.get_or_insert(e);
            }
        }
    }
    // Closing the channel stops the reader if the database failed.
    drop(incoming);
    let report = parser.await.context("the file reader crashed")?;
    if counts.added > 0
        && failure.is_none()
        && let Err(e) = store.refresh_subscriber_statistics().await
    {
        // The rows are in; the statistics catch up by themselves within a minute or so.
        eprintln!("warning: could not update the database's statistics: {e}");
    }
    progress.finish_and_clear();
    store.close().await;

    if let Some(line) = report.unknown.describe() {
        println!("{}", terminal_safe(&line));
    }
    println!("{}", summary(&counts, report.bad_rows));
    if let Some(e) = failure {
        return Err(anyhow::Error::new(e).context(
            "import stopped: the rows counted above are saved, and importing the file again is safe",
        ));
    }
    if let Some(problem) = report.read_error {
        eprintln!(
            "error: {}; the rows counted above are saved, and importing the file again is safe",
            terminal_safe(&problem)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The last line of the summary: what the database did with the rows, and the bad rows.
/// The kinds are spelled out only when some people came in without mail.
fn summary(counts: &ImportCounts, bad_rows: u64) -> String {
    let kinds = if counts.unsubscribed + counts.bouncing > 0 {
        format!(
            " ({} active, {} unsubscribed, {} bouncing; only the active get mail)",
            counts.active(),
            counts.unsubscribed,
            counts.bouncing
        )
    } else {
        String::new()
    };
    format!(
        "imported {}{kinds}, already on the list {}, suppressed {}, bad rows {}",
        counts.added, counts.existing, counts.suppressed, bad_rows
    )
}

/// The file from its start again: the bytes read to decide how to read it, then the rest.
type Sniffed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// How much of the file's start is read to decide how to read it.
const SNIFF: u64 = 64 * 1024;

const UTF8_BOM: &[u8] = "\u{feff}".as_bytes();

/// A file ready to be read row by row.
struct Opened<R> {
    rows: Rows<Sniffed<R>>,
    /// The summary's first lines: how the file is read (format, columns used and ignored).
    layout: Vec<String>,
}

/// Opens the file and decides how to read it, also returning its size; the error is a
/// sentence for staff.
fn open_import(path: &Path, options: &ImportOptions) -> Result<(Opened<File>, u64), String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((open_rows(file, options, &path.display().to_string())?, size))
}

/// Reads the start of `input` to choose the format (and the CSV separator and columns),
/// and returns the rows.
fn open_rows<R: Read>(
    mut input: R,
    options: &ImportOptions,
    file: &str,
) -> Result<Opened<R>, String> {
    let mut start = Vec::new();
    input
        .by_ref()
        .take(SNIFF)
        .read_to_end(&mut start)
        .map_err(|e| format!("cannot read {file}: {e}"))?;
    let first = first_line(&start);
    let format = choose_format(options, first)?;
    let delimiter = options.delimiter.unwrap_or_else(|| sniff_delimiter(first));
    let source = io::Cursor::new(start).chain(input);
    match format {
        ImportFormat::Text => Ok(Opened {
            rows: Rows::Text(text::Lines::new(source)),
            layout: vec![
                "format: text, one address per line (Name <address> or the address alone)"
                    .to_owned(),
            ],
        }),
        ImportFormat::Csv => {
            let mut reader = csv_reader(source, delimiter);
            let headers = reader
                .byte_headers()
                .map_err(|e| format!("cannot read {file}: {e}"))?;
            let columns = Columns::find(
                headers,
                options.email_column.as_deref(),
                options.name_column.as_deref(),
                file,
            )?;
            let mut layout = vec![format!("format: CSV separated by {}", delimiter.plural())];
            layout.extend(columns.describe());
            let record = csv::ByteRecord::new();
            Ok(Opened {
                rows: Rows::Csv {
                    reader: Box::new(reader),
                    columns,
                    record,
                },
                layout,
            })
        }
    }
}

fn choose_format(options: &ImportOptions, first: &[u8]) -> Result<ImportFormat, String> {
    let csv_only = options.delimiter.is_some()
        || options.email_column.is_some()
        || options.name_column.is_some();
    match options.format {
        Some(ImportFormat::Text) if csv_only => Err(
            "--delimiter, --email-column and --name-column are for CSV files, not --format text"
                .to_owned(),
        ),
        Some(format) => Ok(format),
        None if !csv_only && looks_like_text_list(first) => Ok(ImportFormat::Text),
        None => Ok(ImportFormat::Csv),
    }
}

/// The file's first line that is not blank, without a BOM; a line end inside double quotes
/// does not end it.
fn first_line(start: &[u8]) -> &[u8] {
    let mut rest = start.strip_prefix(UTF8_BOM).unwrap_or(start);
    loop {
        let mut quoted = false;
        let end = rest
            .iter()
            .position(|&b| {
                quoted ^= b == b'"';
                b == b'\n' && !quoted
            })
            .unwrap_or(rest.len());
        let line = &rest[..end];
        if end == rest.len() || !line.trim_ascii().is_empty() {
            return line;
        }
        rest = &rest[end + 1..];
    }
}

/// Whether a first line is a text list's: `Name <address>`, or an address alone (no
/// separator, quote or space, which a CSV row of addresses and names would have).
fn looks_like_text_list(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if let Some(inner) = text.strip_suffix('>')
        && let Some(open) = inner.rfind('<')
    {
        return inner[open + 1..].contains('@');
    }
    text.contains('@') && !text.contains([',', ';', '\t', '"', ' '])
}

/// The separator the header row has most of outside quotes; comma on a tie (and for a
/// one-column file, where it does not matter).
fn sniff_delimiter(header: &[u8]) -> Delimiter {
    let mut quoted = false;
    let mut counts = [0usize; 3];
    for &b in header {
        match b {
            b'"' => quoted = !quoted,
            _ if quoted => {}
            b',' => counts[0] += 1,
            b';' => counts[1] += 1,
            b'\t' => counts[2] += 1,
            _ => {}
        }
    }
    let mut best = (Delimiter::Comma, counts[0]);
    for (delimiter, n) in [
        (Delimiter::Semicolon, counts[1]),
        (Delimiter::Tab, counts[2]),
    ] {
        if n > best.1 {
            best = (delimiter, n);
        }
    }
    best.0
}

fn csv_reader<R: Read>(input: R, delimiter: Delimiter) -> csv::Reader<LineTracker<R>> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter.byte())
        // Spreadsheet exports often have ragged rows; a short row is reported on its own.
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(LineTracker::new(input))
}

/// The rows of a file being imported, CSV or text.
enum Rows<R> {
    Csv {
        // Boxed: the CSV reader's buffers make it several times the size of the other.
        reader: Box<csv::Reader<LineTracker<R>>>,
        columns: Columns,
        record: csv::ByteRecord,
    },
    Text(text::Lines<R>),
}

impl<R: Read> Rows<R> {
    /// The next row with the line it starts on; `None` at the end of the file, `Err` if
    /// reading failed.
    fn next_row(&mut self) -> io::Result<Option<(u64, Checked)>> {
        match self {
            Self::Text(lines) => lines.next_row(),
            Self::Csv {
                reader,
                columns,
                record,
            } => next_csv_row(reader, columns, record),
        }
    }

    /// How far into the file the reader is, in bytes.
    fn position(&self) -> u64 {
        match self {
            Self::Csv { reader, .. } => reader.position().byte(),
            Self::Text(lines) => lines.offset(),
        }
    }
}

fn next_csv_row<R: Read>(
    reader: &mut csv::Reader<LineTracker<R>>,
    columns: &Columns,
    record: &mut csv::ByteRecord,
) -> io::Result<Option<(u64, Checked)>> {
    match reader.read_byte_record(record) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => {
            if let csv::ErrorKind::Io(_) = e.kind() {
                return Err(io::Error::from(e));
            }
            let line = e
                .position()
                .map_or(0, |p| reader.get_ref().line_of(p.byte()));
            return Ok(Some((line, Err(e.to_string()))));
        }
    }
    // Asked for every row, good or bad, so the tracker forgets what it has passed.
    let line = record
        .position()
        .map_or(0, |p| reader.get_ref().line_of(p.byte()));
    Ok(Some((line, check_row(record, columns))))
}

fn progress_bar(size: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    if let Ok(style) =
        ProgressStyle::with_template("importing [{bar:25}] {percent:>3}%  {msg} ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Numbers lines the way an editor does, for "line N:" messages.
///
/// The CSV parser positions a record where the previous one ended, so after a CRLF line
/// end (the `\n` is still unread) or blank lines its own line count is too low. This
/// wrapper notes every CR and LF as the parser reads them, and [`LineTracker::line_of`]
/// skips the line ends a record's start offset points at. Only line ends not yet passed
/// are kept, so memory stays at about one read buffer.
struct LineTracker<R> {
    inner: R,
    offset: u64,
    /// Offsets of CR/LF bytes read and not yet passed, and whether each is an LF.
    breaks: RefCell<VecDeque<(u64, bool)>>,
    /// LFs already passed.
    passed: Cell<u64>,
}

impl<R> LineTracker<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            breaks: RefCell::new(VecDeque::new()),
            passed: Cell::new(0),
        }
    }

    /// The 1-based line on which the record that the parser placed at byte `start` really
    /// begins. Calls must come in order of `start`.
    fn line_of(&self, start: u64) -> u64 {
        let mut breaks = self.breaks.borrow_mut();
        let mut passed = self.passed.get();
        while let Some(&(at, lf)) = breaks.front() {
            if at >= start {
                break;
            }
            passed += u64::from(lf);
            breaks.pop_front();
        }
        self.passed.set(passed);
        // Line ends right at `start` are the ones the parser skipped before the record.
        let mut leading = 0;
        for (expected, &(at, lf)) in (start..).zip(breaks.iter()) {
            if at != expected {
                break;
            }
            leading += u64::from(lf);
        }
        1 + passed + leading
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let breaks = self.breaks.get_mut();
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                breaks.push_back((self.offset + i as u64, b == b'\n'));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The blocking half of an import: reads every row, reports bad ones on stderr, and sends
/// good ones in batches. Stops early if the receiving side has gone away.
fn read_rows<R: Read>(
    mut rows: Rows<R>,
    key: &TokenKey,
    // Only to print bad rows without tearing the bar; the writing side moves it.
    progress: &ProgressBar,
    batches: &tokio::sync::mpsc::Sender<Batch>,
) -> ParseReport {
    let mut report = ParseReport::default();
    // Keys seen in this file, so a repeat counts once whichever way it is capitalised.
    let mut seen: HashSet<String> = HashSet::new();
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    loop {
        let (line, checked) = match rows.next_row() {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(io) => {
                report.read_error = Some(format!("reading stopped: {io}"));
                break;
            }
        };
        let row = match checked {
            Ok(row) => row,
            Err(reason) => {
                report.bad_rows += 1;
                progress.suspend(|| eprintln!("line {line}: {}", terminal_safe(&reason)));
                continue;
            }
        };
        let email_key = row.email.key();
        if seen.contains(&email_key) {
            continue;
        }
        seen.insert(email_key.clone());
        if let Some(word) = row.unknown_status {
            report.unknown.note(word);
        }
        let unsub_nonce = new_nonce();
        let unsub_hash = key.derive(TokenPurpose::Unsubscribe, &unsub_nonce).hash();
        batch.push(ImportCandidate::new(
            row.email.as_str().to_owned(),
            email_key,
            row.name.map(|n| n.as_str().to_owned()),
            row.status,
            unsub_nonce,
            unsub_hash,
        ));
        if batch.len() == IMPORT_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH));
            if batches.blocking_send((full, rows.position())).is_err() {
                return report;
            }
        }
    }
    // Sent even if empty, so the progress bar reaches the end. If the receiver is gone, it
    // already knows why.
    let _ = batches.blocking_send((batch, rows.position()));
    report
}

/// One data row of an import file as [`check_import_csv`] saw it.
pub type CheckedRow = Result<(SubscriberEmail, Option<SubscriberName>), String>;

/// Reads a file exactly as `import` does without options (choosing the format, then every
/// row through the same checks and line numbering), without a database; for the property
/// tests. `Err` is the message for a file `import` refuses; otherwise each row's line and
/// outcome, in order. Repeats are not dropped here.
pub fn check_import_csv(input: &[u8]) -> Result<Vec<(u64, CheckedRow)>, String> {
    let mut rows = open_rows(input, &ImportOptions::default(), "the file")?.rows;
    let mut out = Vec::new();
    while let Some((line, checked)) = rows
        .next_row()
        .map_err(|e| format!("cannot read the file: {e}"))?
    {
        out.push((line, checked.map(|row| (row.email, row.name))));
    }
    Ok(out)
}

/// The row's address, name and status, or why the row is skipped. Reasons never quote the
/// cells.
fn check_row(record: &csv::ByteRecord, columns: &Columns) -> Checked {
    let Some(cell) = record.get(columns.email) else {
        return Err(format!(
            "no email cell (the row has {} of the {} columns)",
            record.len(),
            columns.count
        ));
    };
    let email = SubscriberEmail::parse(cell_text(cell, "email")?).map_err(email_error)?;
    let name = columns.name_of(record)?;
    let (status, unknown_status) = columns.status_of(record);
    Ok(Row {
        email,
        name,
        status,
        unknown_status,
    })
}

/// A cell's text as `export` wrote it: a formula-like one without its leading `'`.
fn cell_text<'a>(cell: &'a [u8], column: &str) -> Result<&'a str, String> {
    let text = std::str::from_utf8(cell).map_err(|_| not_utf8(column))?;
    Ok(sheet::unescape(text))
}

fn not_utf8(column: &str) -> String {
    format!("the {column} cell is not UTF-8 text (save the file as \"CSV UTF-8\")")
}

fn email_error(e: EmailError) -> String {
    match e {
        EmailError::Empty => "the email cell is empty".to_owned(),
        e => format!("invalid email address: {e}"),
    }
}

/// `text` as one shell word, for a command staff can paste.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_separator_is_the_one_the_header_has_most_of_outside_quotes() {
        for (header, expected) in [
            ("email,name", Delimiter::Comma),
            ("Name;E-mail address;Phone", Delimiter::Semicolon),
            ("\"Doe, Jane\";email", Delimiter::Semicolon),
            ("email\tname\tnotes, more", Delimiter::Tab),
            ("email", Delimiter::Comma),
            ("a;b,c", Delimiter::Comma),
        ] {
            assert_eq!(sniff_delimiter(header.as_bytes()), expected, "{header}");
        }
    }

    #[test]
    fn the_first_line_that_is_not_blank_decides_the_format() {
        let format = |start: &str| {
            choose_format(&ImportOptions::default(), first_line(start.as_bytes())).expect("format")
        };
        for text in [
            "anne@example.org\n",
            "\u{feff}\r\n\nAnne Person <anne@example.org>\r\n",
            "\"Doe, Jane\" <jane@example.org>\nb@example.org",
        ] {
            assert_eq!(format(text), ImportFormat::Text, "{text:?}");
        }
        for csv in [
            "email\nanne@example.org\n",
            "anne@example.org,Anne\n",
            "\"Email Address\",\"First Name\"\n",
            "\"Notes\non two lines\",email\n",
            "",
        ] {
            assert_eq!(format(csv), ImportFormat::Csv, "{csv:?}");
        }
        let options = ImportOptions {
            email_column: Some("Who".into()),
            ..Default::default()
        };
        assert_eq!(
            choose_format(&options, b"anne@example.org"),
            Ok(ImportFormat::Csv),
            "a CSV option means CSV"
        );
        let both = ImportOptions {
            format: Some(ImportFormat::Text),
            ..options
        };
        assert!(choose_format(&both, b"x").is_err());
    }

    #[test]
    fn delimiters_are_named_or_typed() {
        for (arg, expected) in [
            (",", Delimiter::Comma),
            ("comma", Delimiter::Comma),
            (";", Delimiter::Semicolon),
            ("Semicolon", Delimiter::Semicolon),
            ("\t", Delimiter::Tab),
            ("\\t", Delimiter::Tab),
            ("tab", Delimiter::Tab),
        ] {
            assert_eq!(arg.parse::<Delimiter>(), Ok(expected), "{arg:?}");
        }
        assert!("|".parse::<Delimiter>().is_err());
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("Email Address"), "'Email Address'");
        assert_eq!(shell_quote("Bob's mail"), "'Bob'\\''s mail'");
    }
}
