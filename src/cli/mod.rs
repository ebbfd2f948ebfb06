//! The command line: what staff type, and what each command does.
//!
//! Parsing is clap's; each subcommand lives in its own module and returns an exit code.
//! Errors leave through `anyhow` here, at the edge, with their causes attached.

mod bounces;
mod check;
mod database;
mod preview;
mod registrations;
mod seats;
mod serve;
mod sheet;
mod status;
mod subscribers;
mod trainings;

/// The import's row checks without a database, for the property tests (`tests/fuzz.rs`).
pub use subscribers::{CheckedRow, check_import_csv};

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::config::{Settings, Sources};

const AFTER_HELP: &str = "\
Configuration is read from config/default.toml, then the file given with --config (or
HARBORLIST_CONFIG), then environment variables such as HARBORLIST__MAIL__SMTP_URL
(two underscores between levels).

Examples:
  harborlist serve                          run the listserv (http://127.0.0.1:8080 by default)
  harborlist check                          validate config, calendar and every template
  harborlist check --relay                  log in to the mail relay and log out (password, TLS)
  harborlist check --mailbox                log in to the bounce mailbox (bounces.imap_url), change nothing
  harborlist trainings --count 6            the next six trainings
  harborlist status                         upcoming and recent mailings, with counts
  harborlist preview --template reminder --to you@example.org --out /tmp/r.eml
  harborlist preview --announcement may-topics --to you@example.org --out /tmp/a.eml
  harborlist send-test --announcement may-topics --to you@example.org
  harborlist subscribers list --json        everyone on the list, as JSON
  harborlist subscribers import old-list.csv  move an existing list over (columns: email, name)
  harborlist registrations list --training 2027-01-20 -o sign-in.csv   the sign-in sheet
  harborlist registrations report --format csv -o report.csv          numbers for funders
  harborlist bounces check saved/*.eml      what harborlist would make of saved bounces";

const SERVE_HELP: &str = "\
The daemon: the web pages and links (server.bind, http://127.0.0.1:8080 by default), the
planner that turns the calendar, reminders and announcements into mailings, the sender, and
the bounce mailbox reader or listener when [bounces] is set up.

Signals:
  SIGTERM, Ctrl-C   stop taking requests, let mail in flight finish and be recorded, exit 0
  SIGHUP            reload the configuration and templates (saving a file does it too, every
                    schedule.watch); a reload that fails keeps the running one and logs why

Logs go to stderr (under systemd: journalctl -u harborlist), one line per event, as text or
as JSON with log.format = \"json\"; RUST_LOG or log.level sets how much. Addresses in them are
shortened. /metrics is on server.metrics_bind (127.0.0.1:9464), /healthz on server.bind.

--threads N: 1 runs all of the work on one thread. On a small server that also runs the
database and the mail relay, that uses less CPU per message than 2 threads and sends faster
(nothing is handed between threads, and delivery outcomes are stored in larger groups; see
docs/performance.md). More help only when the database and relay are on other machines and
harborlist itself is the busy part.";

#[derive(Debug, Parser)]
#[command(
    name = "harborlist",
    version,
    about = "The Safe Harbor trainings listserv: subscriptions, announcements and training reminders.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// A TOML file layered over config/default.toml.
    #[arg(
        long,
        short,
        global = true,
        env = "HARBORLIST_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Threads for harborlist's work; leave it at 1 unless `serve --help` says otherwise.
    #[arg(
        long,
        global = true,
        env = "HARBORLIST_THREADS",
        value_name = "N",
        default_value = "1"
    )]
    pub threads: std::num::NonZeroUsize,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server, the planner and the sender until SIGTERM or Ctrl-C.
    #[command(after_long_help = SERVE_HELP)]
    Serve,
    /// Check the configuration, the calendar and every template; exit 1 on any problem.
    /// With --relay, log in to the mail relay instead.
    Check(check::Args),
    /// Show upcoming trainings as the calendar computes them, with their IDs and seats.
    Trainings(trainings::Args),
    /// Show the next trainings, upcoming mailings and how recent mailings went.
    Status(status::Args),
    /// Write the exact bytes of a message to a file, without sending it.
    Preview(preview::PreviewArgs),
    /// Send one real message now to one address (not recorded, not sent to the list).
    SendTest(preview::SendTestArgs),
    /// Look at and manage the subscriber list: list, export, import, remove, forget.
    #[command(subcommand)]
    Subscribers(subscribers::Command),
    /// Who registered for a training: list (and the sign-in sheet), add a phone
    /// registration, cancel, mark attendance, and the report for funders.
    #[command(subcommand)]
    Registrations(registrations::Command),
    /// Bounces and complaints: check saved messages from the bounce mailbox, changing
    /// nothing and without the database.
    #[command(subcommand)]
    Bounces(bounces::Command),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let sources = Sources::new(cli.config.clone());
    match cli.command {
        Command::Serve => serve::run(sources).await,
        Command::Check(args) => check::run(&sources, &args).await,
        Command::Trainings(args) => trainings::run(&load(&sources)?, &args).await,
        Command::Status(args) => status::run(&load(&sources)?, &args).await,
        Command::Preview(args) => preview::preview(load(&sources)?, &args).await,
        Command::SendTest(args) => preview::send_test(load(&sources)?, &args).await,
        Command::Subscribers(cmd) => subscribers::run(&load(&sources)?, cmd).await,
        Command::Registrations(cmd) => registrations::run(&load(&sources)?, cmd).await,
        Command::Bounces(cmd) => bounces::run(&load(&sources)?, cmd),
    }
}

/// Loads settings or fails with the key and the problem.
fn load(sources: &Sources) -> anyhow::Result<Settings> {
    sources
        .load()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))
}
