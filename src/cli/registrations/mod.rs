//! `harborlist registrations …`: who registered for a training, for staff.
//!
//! Each subcommand finds the training by its id in the configured calendar first (an
//! unknown id is an error that lists the upcoming ones, before any database is opened),
//! validates addresses and names at the edge, opens the database as `subscribers`
//! commands do (the token key checked against the database), and calls one
//! [`Store`] operation:
//!
//! * `list`: [`Store::registrations_for`], as a table, JSON, or the CSV sign-in sheet;
//! * `add`: [`Store::register_directly`] with [`RegSource::Staff`] (a phone
//!   registration); the store queues the "You're registered" or waiting-list mail in the
//!   same transaction, and the running daemon sends it;
//! * `cancel`: [`Store::give_up`], so the seat passes on as if they had given it up;
//! * `attended` ([`attended`]): [`Store::mark_attended`] after the training started;
//! * `report` ([`report`]): per training, for funders.
//!
//! Names, organisations and addresses come from the public form: they reach a terminal
//! only through [`terminal_safe`], and a CSV only through [`sheet::escape`].

mod attended;
mod report;

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};

use super::{seats::SeatView, sheet};
use crate::{
    calendar::{Calendar, Session, human},
    clock::{from_millis, to_millis},
    config::{RegistrationMode, Settings},
    domain::{
        Organisation, SubscriberEmail, SubscriberName, TokenPurpose, new_nonce, terminal_safe,
    },
    fsutil,
    schedule::content,
    store::{
        Store,
        registrations::{
            Evidence, GiveUpOutcome, NewLink, RegSource, RegStatus, Registrant, RegistrationRow,
            SeatOutcome, SessionSeats,
        },
    },
};

const AFTER_HELP: &str = "\
A training's ID is its date, like 2027-01-20 (for an extra session, the id in its
[[trainings.extra]] entry). `harborlist trainings` shows the IDs and the seats.

Examples:
  harborlist registrations list --training 2027-01-20
  harborlist registrations list --training 2027-01-20 -o sign-in.csv     the sign-in sheet
  harborlist registrations add --training 2027-01-20 ann@example.org --name \"Ann Lee\"
  harborlist registrations cancel --training 2027-01-20 ann@example.org
  harborlist registrations attended --training 2027-01-20 --file sign-in.csv
  harborlist registrations report --from 2027-01-01 --to 2027-06-30 --format csv -o report.csv";

#[derive(Debug, Subcommand)]
#[command(after_help = AFTER_HELP)]
pub enum Command {
    /// Everyone who registered for one training: name, organisation, email, status, place
    /// on the waiting list and when.
    ///
    /// Status is one of: pending (asked on the website, has not clicked the link in the
    /// confirmation email yet), registered, waitlisted, offered (a seat came free and is
    /// held for them until they claim it), cancelled (gave up the seat or left the waiting
    /// list), expired (did not claim an offered seat in time) or attended. Registered people
    /// come first, then open offers, then the waiting list in order (position 1 is next in
    /// line), then the rest.
    ///
    /// With --format csv (or -o FILE) it is the sign-in sheet: the people with a seat, with
    /// an empty "attended" column to tick (--all puts everyone in). The file opens in a
    /// spreadsheet; a cell that begins with =, +, -, @, a tab or a carriage return gets a
    /// leading ' so that it shows as text instead of running as a formula. It holds personal
    /// data: it is written readable by you only; delete it when you are done.
    #[command(after_help = AFTER_HELP)]
    List {
        /// The training's ID (its date, like 2027-01-20).
        #[arg(long, value_name = "ID")]
        training: String,
        /// Print a JSON array of {email, name, organisation, status, position,
        /// registered_at, source} (the same as --format json).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// table (the default on screen), csv (the sign-in sheet) or json.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Write to this file instead of the screen (CSV unless --json or --format says
        /// otherwise). It is written in full, readable by you only, then put in place of any
        /// file of that name.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// In the CSV, everyone (waiting list, cancelled, …), not only those with a seat.
        #[arg(long)]
        all: bool,
    },
    /// Register someone yourself, for example when they call: they get a seat if one is
    /// free, otherwise a place on the waiting list.
    ///
    /// They get the same email as if they had registered on the website ("You're
    /// registered", with the calendar file and a link to give up the seat, or "You're on the
    /// waiting list"). The email is queued in the database and the running `harborlist
    /// serve` sends it. Registering does not add them to the mailing list.
    ///
    /// With --over-capacity they get a seat even if the training is full (someone already on
    /// the waiting list is moved to a seat), and even after registration has closed (a
    /// walk-in on the day). Running it again for someone already registered changes nothing.
    #[command(after_help = AFTER_HELP)]
    Add {
        /// The training's ID (its date, like 2027-01-20).
        #[arg(long, value_name = "ID")]
        training: String,
        /// Their email address.
        #[arg(value_name = "ADDRESS")]
        address: String,
        /// Their name, as it should appear on the sign-in sheet.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The organisation they work for (counted in `registrations report`).
        #[arg(long, value_name = "ORGANISATION")]
        organisation: Option<String>,
        /// Give them a seat even if the training is full or registration has closed.
        #[arg(long)]
        over_capacity: bool,
    },
    /// Cancel someone's registration (or take them off the waiting list), as if they had
    /// clicked "Give up your seat".
    ///
    /// A seat that comes free is offered at once to the next person on the waiting list,
    /// who gets an email to claim it (until registration closes). The person cancelled gets
    /// no email. Prints what it did; running it twice is harmless.
    #[command(after_help = AFTER_HELP)]
    Cancel {
        /// The training's ID (its date, like 2027-01-20).
        #[arg(long, value_name = "ID")]
        training: String,
        /// Their email address.
        #[arg(value_name = "ADDRESS")]
        address: String,
    },
    /// After the training: mark who came, by email address or from the sign-in sheet.
    ///
    /// Give the addresses on the command line, or --file with a CSV that has an "email"
    /// column (the sign-in sheet from `list -o`). If the file has an "attended" column, only
    /// rows with something in it (x, yes, …) are marked. Only people registered for the
    /// training can be marked; the others are listed (a walk-in: `add --over-capacity`
    /// first). Marking someone twice is harmless. Exits 1 if any address was not marked.
    #[command(after_help = AFTER_HELP)]
    Attended {
        /// The training's ID (its date, like 2027-01-20).
        #[arg(long, value_name = "ID")]
        training: String,
        /// The email addresses of those who came.
        #[arg(
            value_name = "ADDRESS",
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        addresses: Vec<String>,
        /// A CSV file with an "email" column (and optionally an "attended" column).
        #[arg(long, value_name = "FILE.csv")]
        file: Option<PathBuf>,
    },
    /// Numbers for funders: for each training, how many registered, were still on the
    /// waiting list, attended, did not come, and how many different organisations.
    ///
    /// registered: people who had a seat (including those who attended). waitlisted: still
    /// waiting when the report was made. attended: marked with `attended`. no_shows:
    /// registered but not marked attended (only for trainings that have taken place).
    /// organisations: different organisations among those registered, however they were
    /// typed ("Youthlink" and "YouthLink" count once); people who gave none are not
    /// counted. The total line counts an organisation once across all the trainings. People
    /// who asked to be forgotten are still counted, without their names.
    #[command(after_help = AFTER_HELP)]
    Report {
        /// First day (YYYY-MM-DD). Default: 1 January of this year.
        #[arg(long, value_name = "DATE")]
        from: Option<chrono::NaiveDate>,
        /// Last day, included (YYYY-MM-DD). Default: today.
        #[arg(long, value_name = "DATE")]
        to: Option<chrono::NaiveDate>,
        /// Print JSON (the same as --format json).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// table (the default on screen), csv or json.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Write to this file instead of the screen (CSV unless --json or --format says
        /// otherwise), readable by you only.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl Format {
    /// What `--json`, `--format` and `-o` together ask for.
    fn resolve(json: bool, format: Option<Format>, output: Option<&Path>) -> Format {
        match (json, format, output) {
            (true, _, _) => Format::Json,
            (false, Some(f), _) => f,
            (false, None, Some(_)) => Format::Csv,
            (false, None, None) => Format::Table,
        }
    }
}

pub async fn run(settings: &Settings, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List {
            training,
            json,
            format,
            output,
            all,
        } => {
            let format = Format::resolve(json, format, output.as_deref());
            list(settings, &training, format, output.as_deref(), all).await
        }
        Command::Add {
            training,
            address,
            name,
            organisation,
            over_capacity,
        } => {
            let person =
                Person::parse(settings, &address, name.as_deref(), organisation.as_deref())?;
            add(settings, &training, &person, over_capacity).await
        }
        Command::Cancel { training, address } => cancel(settings, &training, &address).await,
        Command::Attended {
            training,
            addresses,
            file,
        } => attended::run(settings, &training, &addresses, file.as_deref()).await,
        Command::Report {
            from,
            to,
            json,
            format,
            output,
        } => {
            let format = Format::resolve(json, format, output.as_deref());
            report::run(settings, from, to, format, output.as_deref()).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// shared

fn now_ms() -> i64 {
    to_millis(Utc::now())
}

/// The training with this id, or an error naming it and the upcoming ids.
fn find_session(calendar: &Calendar, id: &str) -> anyhow::Result<Session> {
    if let Some(session) = calendar.session_by_id(id) {
        return Ok(session);
    }
    let upcoming: Vec<String> = calendar
        .upcoming(Utc::now(), 6)
        .into_iter()
        .map(|s| s.id)
        .collect();
    bail!(
        "no training with the ID \"{}\". Upcoming: {} (`harborlist trainings` shows them with their dates)",
        terminal_safe(id),
        if upcoming.is_empty() {
            "none".to_owned()
        } else {
            upcoming.join(", ")
        }
    )
}

/// The session's seats as the store needs them (its `.ics` at the sequence last announced).
async fn session_seats(
    settings: &Settings,
    store: &Store,
    session: &Session,
) -> anyhow::Result<SessionSeats> {
    let sequence = store
        .training(&session.uid)
        .await?
        .map_or(0, |t| u32::try_from(t.sequence).unwrap_or(0));
    Ok(content::seats(settings, session, sequence, Utc::now()))
}

/// An address typed on the command line (any address that could have been stored).
fn parse_address(address: &str) -> anyhow::Result<SubscriberEmail> {
    SubscriberEmail::parse_with(address, true).map_err(|e| {
        anyhow::anyhow!(
            "\"{}\" is not a valid email address: {e}",
            terminal_safe(address)
        )
    })
}

/// "Wed Jan 20 2027, 11:00 AM" in the calendar's zone.
fn local_time(calendar: &Calendar, ms: i64) -> String {
    from_millis(ms)
        .with_timezone(&calendar.timezone())
        .format("%a %b %-d %Y, %-I:%M %p")
        .to_string()
}

/// Writes `bytes` to `output` (0600, by replacement) or to standard output.
fn emit(output: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            fsutil::replace(path, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut out = io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()?;
            Ok(())
        }
    }
}

/// The seat counts of one session, from the store.
async fn view_of(
    settings: &Settings,
    store: &Store,
    session: &Session,
    now: DateTime<Utc>,
) -> anyhow::Result<SeatView> {
    let counts = store
        .seat_counts()
        .await?
        .get(&session.id)
        .copied()
        .unwrap_or_default();
    Ok(SeatView::of(settings, session, Some(counts), now))
}

// ---------------------------------------------------------------------------------------
// list

/// A row as shown: the stored row, and for the waiting list the place in line (1 = next).
fn places(rows: &[RegistrationRow]) -> Vec<Option<i64>> {
    let mut next = 0;
    rows.iter()
        .map(|r| {
            (r.status == RegStatus::Waitlisted).then(|| {
                next += 1;
                next
            })
        })
        .collect()
}

async fn list(
    settings: &Settings,
    training: &str,
    format: Format,
    output: Option<&Path>,
    all: bool,
) -> anyhow::Result<ExitCode> {
    let calendar = settings.calendar()?;
    let session = find_session(&calendar, training)?;
    let store = super::database::open(settings).await?;
    let rows = store.registrations_for(&session.id).await;
    let view = view_of(settings, &store, &session, Utc::now()).await;
    store.close().await;
    let (rows, view) = (rows?, view?);
    let places = places(&rows);
    let bytes = match format {
        Format::Json => list_json(&rows, &places)?,
        Format::Csv => list_csv(&rows, &places, all)?,
        Format::Table => list_table(&calendar, &session, &view, &rows, &places)?,
    };
    emit(output, &bytes)?;
    if let Some(path) = output {
        let n = match format {
            Format::Csv if !all => rows.iter().filter(|r| r.status.holds_seat()).count(),
            _ => rows.len(),
        };
        println!("wrote {n} registration(s) to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn list_json(rows: &[RegistrationRow], places: &[Option<i64>]) -> anyhow::Result<Vec<u8>> {
    let docs: Vec<_> = rows
        .iter()
        .zip(places)
        .map(|(r, place)| {
            serde_json::json!({
                "email": r.email,
                "name": r.name,
                "organisation": r.organisation,
                "status": r.status,
                "position": place,
                "registered_at": r.registered_at,
                "source": r.source,
            })
        })
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&docs)?;
    bytes.push(b'\n');
    Ok(bytes)
}

const SHEET_HEADER: [&str; 7] = [
    "name",
    "organisation",
    "email",
    "status",
    "position",
    "registered_at",
    "attended",
];

fn list_csv(
    rows: &[RegistrationRow],
    places: &[Option<i64>],
    all: bool,
) -> anyhow::Result<Vec<u8>> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(SHEET_HEADER)?;
    for (r, place) in rows.iter().zip(places) {
        if !all && !r.status.holds_seat() {
            continue;
        }
        let place = place.map(|p| p.to_string()).unwrap_or_default();
        let attended = if r.status == RegStatus::Attended {
            "yes"
        } else {
            ""
        };
        let cells = [
            r.name.as_deref().unwrap_or(""),
            r.organisation.as_deref().unwrap_or(""),
            r.email.as_deref().unwrap_or(""),
            r.status.as_str(),
            place.as_str(),
            r.registered_at.as_deref().unwrap_or(""),
            attended,
        ];
        // From the public form: no cell may run as a spreadsheet formula.
        csv.write_record(cells.map(sheet::escape).iter().map(|c| c.as_bytes()))?;
    }
    csv.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

fn list_table(
    calendar: &Calendar,
    session: &Session,
    view: &SeatView,
    rows: &[RegistrationRow],
    places: &[Option<i64>],
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    writeln!(
        out,
        "{} ({}): {}",
        human::when(session),
        terminal_safe(&session.id),
        view.human()
    )?;
    let mut tw = tabwriter::TabWriter::new(&mut out);
    writeln!(tw, "NAME\tORGANISATION\tEMAIL\tSTATUS\tPOSITION\tSINCE")?;
    for (r, place) in rows.iter().zip(places) {
        writeln!(
            tw,
            "{}\t{}\t{}\t{}\t{}\t{}",
            terminal_safe(r.name.as_deref().unwrap_or("-")),
            terminal_safe(r.organisation.as_deref().unwrap_or("-")),
            r.email
                .as_deref()
                .map_or("(forgotten)".into(), terminal_safe),
            r.status.as_str(),
            place.map_or("-".into(), |p| p.to_string()),
            r.registered_ms
                .map_or("-".into(), |ms| local_time(calendar, ms)),
        )?;
    }
    tw.flush()?;
    drop(tw);
    writeln!(out, "{} registration(s)", rows.len())?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// add

/// The person `add` registers, checked before anything is opened.
struct Person {
    email: SubscriberEmail,
    name: Option<SubscriberName>,
    organisation: Option<Organisation>,
}

impl Person {
    fn parse(
        settings: &Settings,
        address: &str,
        name: Option<&str>,
        organisation: Option<&str>,
    ) -> anyhow::Result<Self> {
        // A new address must be one the relay can be given, as on the website.
        let email = SubscriberEmail::parse_with(address, settings.mail.smtputf8).map_err(|e| {
            anyhow::anyhow!(
                "\"{}\" is not a valid email address: {e}",
                terminal_safe(address)
            )
        })?;
        let name = match name {
            Some(n) => SubscriberName::parse(n).map_err(|e| anyhow::anyhow!("--name: {e}"))?,
            None => None,
        };
        let organisation = match organisation {
            Some(o) => {
                Organisation::parse(o).map_err(|e| anyhow::anyhow!("--organisation: {e}"))?
            }
            None => None,
        };
        Ok(Self {
            email,
            name,
            organisation,
        })
    }

    /// "Ann Lee <ann@example.org>", safe for a terminal.
    fn shown(&self) -> String {
        match &self.name {
            Some(n) => format!(
                "{} <{}>",
                terminal_safe(n.as_str()),
                terminal_safe(self.email.as_str())
            ),
            None => terminal_safe(self.email.as_str()).into_owned(),
        }
    }
}

async fn add(
    settings: &Settings,
    training: &str,
    person: &Person,
    over_capacity: bool,
) -> anyhow::Result<ExitCode> {
    if settings.registration.mode == RegistrationMode::External {
        bail!(
            "registration.mode is \"external\": people register at the training's registration_url, not with harborlist"
        );
    }
    let calendar = settings.calendar()?;
    let session = find_session(&calendar, training)?;
    if session.cancelled {
        bail!("the training {} is cancelled", terminal_safe(&session.id));
    }
    let now = now_ms();
    let (store, key) = super::database::open_to_add(settings, now).await?;
    let result = add_in(settings, &store, &key, &session, person, over_capacity, now).await;
    let view = view_of(settings, &store, &session, Utc::now()).await;
    store.close().await;
    let outcome = result?;
    let seats = view.map(|v| v.human()).unwrap_or_default();
    let who = person.shown();
    let when = human::when(&session);
    let queued = "is queued; the running `harborlist serve` sends it";
    Ok(match outcome {
        SeatOutcome::Registered => {
            println!("registered {who} for {when} (seats: {seats}).");
            println!(
                "The \"You're registered\" email (with the calendar file and a give-up link) {queued}."
            );
            ExitCode::SUCCESS
        }
        SeatOutcome::Waitlisted { rank } => {
            println!(
                "the training is full: {who} is on the waiting list, number {rank} (seats: {seats})."
            );
            println!("The \"You're on the waiting list\" email {queued}.");
            println!("To give them a seat anyway: run this again with --over-capacity.");
            ExitCode::SUCCESS
        }
        SeatOutcome::Already(status) => {
            println!(
                "{who} is already {} for {when}; nothing changed.",
                status.as_str()
            );
            ExitCode::SUCCESS
        }
        SeatOutcome::Closed => {
            eprintln!(
                "registration for {when} has closed; nothing changed. To add {who} anyway (a walk-in, say), use --over-capacity."
            );
            ExitCode::FAILURE
        }
    })
}

async fn add_in(
    settings: &Settings,
    store: &Store,
    key: &crate::domain::TokenKey,
    session: &Session,
    person: &Person,
    over_capacity: bool,
    now: i64,
) -> anyhow::Result<SeatOutcome> {
    let seats = session_seats(settings, store, session).await?;
    let email_key = person.email.key();
    let org_key = person.organisation.as_ref().map(Organisation::key);
    let (unsub_nonce, link_nonce) = (new_nonce(), new_nonce());
    let unsub_hash = key.derive(TokenPurpose::Unsubscribe, &unsub_nonce).hash();
    let link_hash = key.derive(TokenPurpose::Registration, &link_nonce).hash();
    let who = Registrant {
        email: person.email.as_str(),
        email_key: &email_key,
        name: person.name.as_ref().map(SubscriberName::as_str),
        organisation: person.organisation.as_ref().map(Organisation::as_str),
        org_key: org_key.as_deref(),
        unsub_nonce: &unsub_nonce,
        unsub_hash: &unsub_hash,
    };
    let link = NewLink {
        nonce: &link_nonce,
        hash: &link_hash,
    };
    Ok(store
        .register_directly(
            &seats,
            &who,
            link,
            RegSource::Staff,
            over_capacity,
            Evidence::default(),
            now,
        )
        .await?)
}

// ---------------------------------------------------------------------------------------
// cancel

async fn cancel(settings: &Settings, training: &str, address: &str) -> anyhow::Result<ExitCode> {
    let email = parse_address(address)?;
    let calendar = settings.calendar()?;
    let session = find_session(&calendar, training)?;
    let store = super::database::open(settings).await?;
    let result = cancel_in(settings, &store, &session, &email).await;
    store.close().await;
    let who = terminal_safe(email.as_str());
    let when = human::when(&session);
    match result? {
        None => println!("{who} has no registration for {when}; nothing changed."),
        Some((GiveUpOutcome::Nothing(status), _)) => println!(
            "nothing to cancel: {who} is {} for {when}.",
            status.as_str()
        ),
        Some((GiveUpOutcome::Done(was), offers)) => {
            println!("cancelled: {who} (was {}) for {when}.", was.as_str());
            if was.holds_seat() {
                println!("{}", passed_on(&calendar, offers));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What became of a seat given back: the offers now open and their deadline.
struct Offers {
    made: i64,
    deadline_ms: i64,
    closed: bool,
}

fn passed_on(calendar: &Calendar, offers: Offers) -> String {
    if offers.closed {
        "Registration has closed, so the seat is not offered to anyone.".into()
    } else if offers.made > 0 {
        format!(
            "The seat was offered to the next person on the waiting list (an email is queued); the offer holds until {}.",
            local_time(calendar, offers.deadline_ms)
        )
    } else {
        "Nobody is waiting: the seat is free for the next person who registers.".into()
    }
}

async fn cancel_in(
    settings: &Settings,
    store: &Store,
    session: &Session,
    email: &SubscriberEmail,
) -> anyhow::Result<Option<(GiveUpOutcome, Offers)>> {
    let Some(reg) = store.registration_of(&session.id, &email.key()).await? else {
        return Ok(None);
    };
    let seats = session_seats(settings, store, session).await?;
    let offered_before = store
        .seat_counts()
        .await?
        .get(&session.id)
        .map_or(0, |c| c.offered);
    let now = now_ms();
    let outcome = store.give_up(&seats, reg.id, now).await?;
    let offered_after = store
        .seat_counts()
        .await?
        .get(&session.id)
        .map_or(0, |c| c.offered);
    let offers = Offers {
        made: (offered_after - offered_before).max(0),
        deadline_ms: now
            .saturating_add(seats.offer_ttl_ms)
            .min(seats.closes_at_ms),
        closed: now >= seats.closes_at_ms,
    };
    Ok(Some((outcome, offers)))
}
