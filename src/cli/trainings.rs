//! `harborlist trainings`: the next sessions, as the calendar computes them.

use std::{io::Write, process::ExitCode};

use anyhow::Context;
use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};

use crate::{calendar::human, config::Settings, schedule::content::training_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First day to show (YYYY-MM-DD, in the calendar's zone). Default: now.
    #[arg(long, value_name = "DATE")]
    from: Option<NaiveDate>,
    /// How many sessions to show.
    #[arg(long, default_value_t = 6)]
    count: usize,
    /// Print a JSON array (start and end in RFC 3339 with the zone's offset).
    #[arg(long)]
    json: bool,
}

pub fn run(settings: &Settings, args: &Args) -> anyhow::Result<ExitCode> {
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
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<_> = sessions.iter().map(training_json).collect();
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut tw = tabwriter::TabWriter::new(&mut out);
    writeln!(tw, "DATE\tTIME\tTITLE\tLOCATION")?;
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
            "{}\t{}\t{}\t{}",
            human::date(s),
            human::time_range(s),
            title,
            s.location
        )?;
    }
    tw.flush()?;
    Ok(ExitCode::SUCCESS)
}
