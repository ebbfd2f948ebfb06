//! `harborlist subscribers import`: moving an existing list over.
//!
//! A blocking thread reads the CSV (counting true line numbers through CRLF and blank
//! lines), checks each row and derives its unsubscribe link, and hands batches through a
//! small channel to the async side, which writes each batch in one transaction (two at
//! once on PostgreSQL) and moves the progress bar.

use std::{
    cell::{Cell, RefCell},
    collections::{HashSet, VecDeque},
    fs::File,
    io::{self, IsTerminal, Read},
    path::Path,
    process::ExitCode,
};

use anyhow::Context;
use futures_util::{StreamExt, stream::FuturesOrdered};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    config::Settings,
    domain::{
        EmailError, SubscriberEmail, SubscriberName, TokenKey, TokenPurpose, new_nonce, redact,
        terminal_safe,
    },
    store::{
        Backend,
        roster::{IMPORT_BATCH, ImportCandidate, ImportCounts},
    },
};

use super::now_ms;
use crate::cli::sheet;

/// Where the columns are, from the header row.
#[derive(Debug, Clone, Copy)]
struct Columns {
    email: usize,
    name: Option<usize>,
    count: usize,
}

/// Good rows for one transaction, and how far into the file the reader was after them.
type Batch = (Vec<ImportCandidate>, u64);

/// What the reading side found; the database side keeps its own [`ImportCounts`].
#[derive(Debug, Default)]
struct ParseReport {
    bad_rows: u64,
    /// Set if reading stopped early (an I/O error part-way through the file).
    read_error: Option<String>,
}

pub(super) async fn run(settings: &Settings, file: &Path) -> anyhow::Result<ExitCode> {
    // Check the file before touching anything else: a wrong file fails fast, changes nothing.
    let (reader, columns, size) = match open_import(file) {
        Ok(opened) => opened,
        Err(problem) => {
            // The header row is the file's text: a crafted one could hold escape sequences.
            eprintln!("error: {}", terminal_safe(&problem));
            return Ok(ExitCode::FAILURE);
        }
    };
    // Unsubscribe links must verify against the key the server uses: the one the
    // database's fingerprint names (pinned here on a fresh install).
    let (store, key) = crate::cli::database::open_to_add(settings, now_ms()).await?;

    let progress = progress_bar(size);
    // The reader prepares the next batch while this task writes one; a single slot keeps
    // the bar (moved here, as batches are written) close to what the reader has read.
    let (batches, mut incoming) = tokio::sync::mpsc::channel::<Batch>(1);
    let reader_progress = progress.clone();
    let parser = tokio::task::spawn_blocking(move || {
        read_rows(reader, columns, &key, &reader_progress, &batches)
    });

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
    let report = parser.await.context("the CSV reader crashed")?;
    if counts.added > 0
        && failure.is_none()
        && let Err(e) = store.refresh_subscriber_statistics().await
    {
        // The rows are in; the statistics catch up by themselves within a minute or so.
        eprintln!("warning: could not update the database's statistics: {e}");
    }
    progress.finish_and_clear();
    store.close().await;

    println!(
        "imported {}, already on the list {}, suppressed {}, bad rows {}",
        counts.added, counts.existing, counts.suppressed, report.bad_rows
    );
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

/// Opens the file and finds the columns; the error is a sentence for staff.
fn open_import(path: &Path) -> Result<(ImportReader, Columns, u64), String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = csv_reader(file);
    let headers = reader
        .byte_headers()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let columns = columns_of(headers, &path.display().to_string())?;
    Ok((reader, columns, size))
}

fn csv_reader<R: Read>(input: R) -> csv::Reader<LineTracker<R>> {
    csv::ReaderBuilder::new()
        // Spreadsheet exports often have ragged rows; a short row is reported on its own.
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(LineTracker::new(input))
}

/// Where the email and name columns are, from the header row of the file named `file`.
fn columns_of(headers: &csv::ByteRecord, file: &str) -> Result<Columns, String> {
    let names: Vec<String> = headers
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .trim()
                .to_lowercase()
        })
        .collect();
    let find = |wanted: &str| names.iter().position(|n| n == wanted);
    let Some(email) = find("email") else {
        let looks_like_data = names.iter().any(|n| n.contains('@'));
        // The first line may be a subscriber rather than a header: never echo an address.
        let found: Vec<String> = names
            .iter()
            .map(|n| {
                if n.contains('@') {
                    redact(n)
                } else {
                    n.clone()
                }
            })
            .collect();
        return Err(format!(
            "{file} has no \"email\" column: the first line must name the columns, e.g. email,name{}{}",
            if names.iter().all(String::is_empty) {
                " (the file is empty)".to_owned()
            } else {
                format!(" (found: {})", found.join(", "))
            },
            if looks_like_data {
                "; the first line looks like a subscriber, so add a header line"
            } else {
                ""
            }
        ));
    };
    Ok(Columns {
        email,
        name: find("name"),
        count: names.len(),
    })
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

type ImportReader = csv::Reader<LineTracker<File>>;

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
fn read_rows(
    mut reader: ImportReader,
    columns: Columns,
    key: &TokenKey,
    // Only to print bad rows without tearing the bar; the writing side moves it.
    progress: &ProgressBar,
    batches: &tokio::sync::mpsc::Sender<Batch>,
) -> ParseReport {
    let mut report = ParseReport::default();
    // Keys seen in this file, so a repeat counts once whichever way it is capitalised.
    let mut seen: HashSet<String> = HashSet::new();
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut record = csv::ByteRecord::new();
    let bad = |report: &mut ParseReport, line: u64, reason: &str| {
        report.bad_rows += 1;
        progress.suspend(|| eprintln!("line {line}: {}", terminal_safe(reason)));
    };
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                if let csv::ErrorKind::Io(io) = e.kind() {
                    report.read_error = Some(format!("reading stopped: {io}"));
                    break;
                }
                let line = e
                    .position()
                    .map_or(0, |p| reader.get_ref().line_of(p.byte()));
                bad(&mut report, line, &e.to_string());
                continue;
            }
        }
        // Asked for every row, good or bad, so the tracker forgets what it has passed.
        let line = record
            .position()
            .map_or(0, |p| reader.get_ref().line_of(p.byte()));
        let (email, name) = match check_row(&record, columns) {
            Ok(parsed) => parsed,
            Err(reason) => {
                bad(&mut report, line, &reason);
                continue;
            }
        };
        let email_key = email.key();
        if seen.contains(&email_key) {
            continue;
        }
        seen.insert(email_key.clone());
        let unsub_nonce = new_nonce();
        let unsub_hash = key.derive(TokenPurpose::Unsubscribe, &unsub_nonce).hash();
        batch.push(ImportCandidate::new(
            email.as_str().to_owned(),
            email_key,
            name.map(|n| n.as_str().to_owned()),
            unsub_nonce,
            unsub_hash,
        ));
        if batch.len() == IMPORT_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH));
            if batches
                .blocking_send((full, reader.position().byte()))
                .is_err()
            {
                return report;
            }
        }
    }
    // Sent even if empty, so the progress bar reaches the end. If the receiver is gone, it
    // already knows why.
    let _ = batches.blocking_send((batch, reader.position().byte()));
    report
}

/// One data row of an import file as [`check_import_csv`] saw it.
pub type CheckedRow = Result<(SubscriberEmail, Option<SubscriberName>), String>;

/// Reads CSV text exactly as `import` does (header, then every row through the same
/// checks and line numbering), without a database; for the property tests. `Err` is the
/// message for a file `import` refuses; otherwise each row's line and outcome, in order.
/// Repeats are not dropped here.
pub fn check_import_csv(input: &[u8]) -> Result<Vec<(u64, CheckedRow)>, String> {
    let mut reader = csv_reader(input);
    let headers = reader
        .byte_headers()
        .map_err(|e| format!("cannot read the file: {e}"))?;
    let columns = columns_of(headers, "the file")?;
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e
                    .position()
                    .map_or(0, |p| reader.get_ref().line_of(p.byte()));
                rows.push((line, Err(e.to_string())));
                continue;
            }
        }
        let line = record
            .position()
            .map_or(0, |p| reader.get_ref().line_of(p.byte()));
        rows.push((line, check_row(&record, columns)));
    }
    Ok(rows)
}

/// The row's address and name, or why the row is skipped. Reasons never quote the cells.
fn check_row(
    record: &csv::ByteRecord,
    columns: Columns,
) -> Result<(SubscriberEmail, Option<SubscriberName>), String> {
    let Some(cell) = record.get(columns.email) else {
        return Err(format!(
            "no email cell (the row has {} of the {} columns)",
            record.len(),
            columns.count
        ));
    };
    // Cells are read as `export` wrote them: a formula-like one without its leading `'`.
    let text = std::str::from_utf8(cell).map_err(|_| not_utf8("email"))?;
    let text = sheet::unescape(text);
    let email = SubscriberEmail::parse(text).map_err(|e| match e {
        EmailError::Empty => "the email cell is empty".to_owned(),
        e => format!("invalid email address: {e}"),
    })?;
    let name = match columns.name.and_then(|i| record.get(i)) {
        None => None,
        Some(cell) => {
            let text = std::str::from_utf8(cell).map_err(|_| not_utf8("name"))?;
            SubscriberName::parse(sheet::unescape(text))
                .map_err(|e| format!("invalid name: {e}"))?
        }
    };
    Ok((email, name))
}

fn not_utf8(column: &str) -> String {
    format!("the {column} cell is not UTF-8 text (save the file as \"CSV UTF-8\")")
}
