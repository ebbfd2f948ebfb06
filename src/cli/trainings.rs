//! `harborlist trainings`: the next sessions, as the calendar computes them, with their
//! seats.
//!
//! The counts come from the database, read without changing it (as `check` does): no
//! migration, no file created, no key needed, since counts name nobody. With no database
//! yet (a fresh install) nobody has registered, so the counts are 0. A database that
//! cannot be reached or read gives `null` counts in JSON and "?" in the table, with the
//! reason on standard error; the rest is still shown.

use std::{collections::HashMap, io::Write, process::ExitCode};

use anyhow::Context;
use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};

use super::seats::SeatView;
use crate::{
    calendar::human,
    config::Settings,
    domain::terminal_safe,
    schedule::content::training_json,
    store::{
        registrations::SeatCounts,
        report::{PeekedSeats, peek_seat_counts},
    },
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First day to show (YYYY-MM-DD, in the calendar's zone). Default: now.
    #[arg(long, value_name = "DATE")]
    from: Option<NaiveDate>,
    /// How many sessions to show.
    #[arg(long, default_value_t = 6)]
    count: usize,
    /// Print a JSON array (start and end in RFC 3339 with the zone's offset). Each session
    /// has its id, capacity, registered, waitlisted, seats_left and registration ("open",
    /// "full": the waiting list is open, "closed" or "external").
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<ExitCode> {
    let calendar = settings.calendar().context("trainings")?;
    let from = match args.from {
        Some(day) => calendar
            .timezone()
            .from_local_datetime(&day.and_time(NaiveTime::MIN))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .context("--from: that day does not start in the calendar's zone")?,
        None => Utc::now(),
    };
    let sessions = calendar.upcoming(from, args.count);
    let counts = seat_counts(settings).await;
    let now = Utc::now();
    let view = |s: &crate::calendar::Session| {
        let c = counts
            .as_ref()
            .map(|all| all.get(&s.id).copied().unwrap_or_default());
        SeatView::of(settings, s, c, now)
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<_> = sessions
            .iter()
            .map(|s| {
                let mut doc = training_json(s);
                if let (Some(obj), serde_json::Value::Object(seats)) =
                    (doc.as_object_mut(), view(s).json())
                {
                    obj.extend(seats);
                }
                doc
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut tw = tabwriter::TabWriter::new(&mut out);
    writeln!(tw, "ID\tDATE\tTIME\tTITLE\tSEATS\tLOCATION")?;
    for s in &sessions {
        let title = match &s.topic {
            Some(topic) => format!("{} — {topic}", s.title),
            None => s.title.clone(),
        };
        let title = if s.cancelled {
            format!("CANCELLED: {title}")
        } else {
            title
        };
        writeln!(
            tw,
            "{}\t{}\t{}\t{}\t{}\t{}",
            terminal_safe(&s.id),
            human::date(s),
            human::time_range(s),
            title,
            view(s).human(),
            s.location
        )?;
    }
    tw.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Every session's counts, or `None` (said on standard error) when they cannot be read.
async fn seat_counts(settings: &Settings) -> Option<HashMap<String, SeatCounts>> {
    match peek_seat_counts(&settings.database.url).await {
        PeekedSeats::Counts(counts) => Some(counts),
        PeekedSeats::NoDatabase => Some(HashMap::new()),
        PeekedSeats::Unknown(why) => {
            eprintln!("note: seat counts are not shown: {}", terminal_safe(&why));
            None
        }
    }
}
