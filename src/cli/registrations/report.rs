//! `registrations report`: for each training in a date range, the numbers a funder asks
//! for, and a total line. The sessions come from the calendar; the counts from
//! [`Store::registration_tallies`](crate::store::Store::registration_tallies), which
//! counts forgotten people's rows too (unnamed).

use std::{io::Write, path::Path, process::ExitCode};

use anyhow::Context;
use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::Serialize;

use super::{Format, emit};
use crate::{calendar::Calendar, cli::sheet, config::Settings, store::report::RegistrationTally};

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
struct Line {
    id: String,
    /// The start, RFC 3339 with the zone's offset.
    start: String,
    title: String,
    cancelled: bool,
    capacity: u32,
    registered: i64,
    waitlisted: i64,
    attended: i64,
    /// `None` for a training still to come.
    no_shows: Option<i64>,
    cancellations: i64,
    organisations: i64,
    organisations_attended: i64,
}

pub async fn run(
    settings: &Settings,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    format: Format,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let calendar = settings.calendar()?;
    let tz = calendar.timezone();
    let today = Utc::now().with_timezone(&tz).date_naive();
    let from = from.unwrap_or_else(|| NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today));
    let to = to.unwrap_or(today);
    if to < from {
        anyhow::bail!("--to ({to}) is before --from ({from})");
    }
    let (start, end) = (
        day_start(&calendar, from)?,
        day_start(&calendar, to.succ_opt().unwrap_or(to))?,
    );
    let sessions = calendar.sessions_between(start, end);
    let store = super::super::database::open(settings).await?;
    let ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    let tallies = store.registration_tallies().await;
    let total_orgs = store.distinct_organisations(&ids).await;
    store.close().await;
    let (tallies, total_orgs) = (tallies?, total_orgs?);
    let now = Utc::now();
    let lines: Vec<Line> = sessions
        .iter()
        .map(|s| {
            let t = tallies.get(&s.id).copied().unwrap_or_default();
            Line {
                id: s.id.clone(),
                start: s.start.to_rfc3339(),
                title: s.title.clone(),
                cancelled: s.cancelled,
                capacity: s.capacity,
                registered: t.registered,
                waitlisted: t.waitlisted,
                attended: t.attended,
                no_shows: (s.end.with_timezone(&Utc) <= now).then_some(t.not_attended),
                cancellations: t.cancelled,
                organisations: t.organisations,
                organisations_attended: t.organisations_attended,
            }
        })
        .collect();
    let total = total(&lines, total_orgs);
    let bytes = match format {
        Format::Json => {
            let doc = serde_json::json!({
                "from": from.to_string(), "to": to.to_string(), "trainings": lines, "total": total,
            });
            let mut bytes = serde_json::to_vec_pretty(&doc)?;
            bytes.push(b'\n');
            bytes
        }
        Format::Csv => csv(&lines, &total)?,
        Format::Table => table(from, to, &lines, &total)?,
    };
    emit(output, &bytes)?;
    if let Some(path) = output {
        println!(
            "wrote the report on {} training(s) to {}",
            lines.len(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn day_start(calendar: &Calendar, day: NaiveDate) -> anyhow::Result<chrono::DateTime<Utc>> {
    calendar
        .timezone()
        .from_local_datetime(&day.and_time(NaiveTime::MIN))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{day} does not start in the calendar's zone"))
}

/// The sums, with organisations counted once across all the trainings.
fn total(lines: &[Line], (orgs, orgs_attended): (i64, i64)) -> RegistrationTally {
    let sum = |f: fn(&Line) -> i64| lines.iter().map(f).sum();
    RegistrationTally {
        registered: sum(|l| l.registered),
        waitlisted: sum(|l| l.waitlisted),
        attended: sum(|l| l.attended),
        not_attended: sum(|l| l.no_shows.unwrap_or(0)),
        cancelled: sum(|l| l.cancellations),
        organisations: orgs,
        organisations_attended: orgs_attended,
    }
}

const HEADER: [&str; 10] = [
    "training",
    "start",
    "capacity",
    "registered",
    "waitlisted",
    "attended",
    "no_shows",
    "cancellations",
    "organisations",
    "organisations_attended",
];

fn csv(lines: &[Line], total: &RegistrationTally) -> anyhow::Result<Vec<u8>> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(HEADER)?;
    for l in lines {
        let id = if l.cancelled {
            format!("{} (cancelled)", l.id)
        } else {
            l.id.clone()
        };
        let cells = [
            id,
            l.start.clone(),
            l.capacity.to_string(),
            l.registered.to_string(),
            l.waitlisted.to_string(),
            l.attended.to_string(),
            l.no_shows.map(|n| n.to_string()).unwrap_or_default(),
            l.cancellations.to_string(),
            l.organisations.to_string(),
            l.organisations_attended.to_string(),
        ];
        csv.write_record(cells.iter().map(|c| sheet::escape(c).into_owned()))?;
    }
    let t = total;
    csv.write_record([
        "total".to_owned(),
        String::new(),
        String::new(),
        t.registered.to_string(),
        t.waitlisted.to_string(),
        t.attended.to_string(),
        t.not_attended.to_string(),
        t.cancelled.to_string(),
        t.organisations.to_string(),
        t.organisations_attended.to_string(),
    ])?;
    csv.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

fn table(
    from: NaiveDate,
    to: NaiveDate,
    lines: &[Line],
    t: &RegistrationTally,
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    writeln!(out, "Trainings from {from} to {to}")?;
    let mut tw = tabwriter::TabWriter::new(&mut out);
    writeln!(
        tw,
        "TRAINING\tCAPACITY\tREGISTERED\tWAITLISTED\tATTENDED\tNO-SHOWS\tCANCELLED\tORGANISATIONS"
    )?;
    for l in lines {
        let mark = if l.cancelled { " (cancelled)" } else { "" };
        writeln!(
            tw,
            "{}{mark}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            l.id,
            l.capacity,
            l.registered,
            l.waitlisted,
            l.attended,
            l.no_shows.map_or("-".into(), |n| n.to_string()),
            l.cancellations,
            l.organisations
        )?;
    }
    writeln!(
        tw,
        "total\t\t{}\t{}\t{}\t{}\t{}\t{}",
        t.registered, t.waitlisted, t.attended, t.not_attended, t.cancelled, t.organisations
    )?;
    tw.flush()?;
    drop(tw);
    writeln!(
        out,
        "{} training(s). Organisations in the total line count once however many trainings they came to.",
        lines.len()
    )?;
    Ok(out)
}
