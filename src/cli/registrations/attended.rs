//! `registrations attended`: who came, from the command line or a CSV file (the sign-in
//! sheet `list -o` writes, ticked in its "attended" column, or any file with an "email"
//! column). Addresses are checked first; those that cannot be marked are listed with the
//! reason, and the exit status is 1 if there were any, so a script notices.

use std::{path::Path, process::ExitCode};

use anyhow::{Context, bail};
use chrono::Utc;

use super::{find_session, now_ms, parse_address};
use crate::{
    calendar::human,
    cli::sheet,
    config::Settings,
    domain::{SubscriberEmail, terminal_safe},
};

pub async fn run(
    settings: &Settings,
    training: &str,
    addresses: &[String],
    file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let calendar = settings.calendar()?;
    let session = find_session(&calendar, training)?;
    if session.start.with_timezone(&Utc) > Utc::now() {
        bail!(
            "the training {} has not started yet ({}); mark attendance after it",
            terminal_safe(&session.id),
            human::when(&session)
        );
    }
    let typed = match file {
        Some(path) => read_file(path)?,
        None => addresses.to_vec(),
    };
    let mut problems: Vec<String> = Vec::new();
    let mut emails: Vec<SubscriberEmail> = Vec::new();
    for text in &typed {
        match parse_address(text) {
            Ok(email) => emails.push(email),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let keys: Vec<String> = emails.iter().map(SubscriberEmail::key).collect();
    let store = super::super::database::open(settings).await?;
    let marked = store.mark_attended(&session.id, &keys, now_ms()).await;
    let mut unknown = Vec::new();
    if let Ok((_, missed)) = &marked {
        for key in missed {
            let status = store.registration_of(&session.id, key).await;
            unknown.push((key.clone(), status));
        }
    }
    store.close().await;
    let (marked, _) = marked?;
    for (key, status) in unknown {
        let why = match status? {
            Some(r) => format!("{}, not registered", r.status.as_str()),
            None => "no registration for this training".to_owned(),
        };
        problems.push(format!("{}: {why}", terminal_safe(&key)));
    }
    println!(
        "marked {marked} attended for {} ({})",
        human::when(&session),
        terminal_safe(&session.id)
    );
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("not marked ({}):", problems.len());
    for p in &problems {
        eprintln!("  {p}");
    }
    Ok(ExitCode::FAILURE)
}

/// The addresses in a CSV file's "email" column; with an "attended" column, only rows
/// with something in it.
fn read_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (save it as \"CSV UTF-8\")",
            path.display()
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header = csv.headers()?.clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| sheet::unescape(h.trim()).eq_ignore_ascii_case(name))
    };
    let Some(email) = column("email") else {
        bail!(
            "{} has no \"email\" column in its first line",
            path.display()
        );
    };
    let attended = column("attended");
    let mut out = Vec::new();
    for record in csv.records() {
        let record = record.with_context(|| format!("reading {}", path.display()))?;
        let ticked = attended.is_none_or(|i| record.get(i).is_some_and(|c| !c.trim().is_empty()));
        if let Some(cell) = record.get(email).map(|c| sheet::unescape(c.trim()))
            && ticked
            && !cell.is_empty()
        {
            out.push(cell.to_owned());
        }
    }
    Ok(out)
}
