//! `harborlist subscribers …`: the list, for staff.

use std::{io::Write, process::ExitCode};

use clap::Subcommand;

use crate::{config::Settings, store::Store};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everyone who ever asked to join, with their status (pending, active, unsubscribed, bouncing).
    List {
        /// Print a JSON array of {email, name, status, source, created_at, confirmed_at}.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: &Settings, cmd: Command) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&settings.database.url, 2).await?;
    match cmd {
        Command::List { json } => {
            let rows = store.list_subscribers().await?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                let mut tw = tabwriter::TabWriter::new(&mut out);
                writeln!(tw, "EMAIL\tNAME\tSTATUS\tSOURCE\tJOINED")?;
                for r in &rows {
                    writeln!(
                        tw,
                        "{}\t{}\t{}\t{}\t{}",
                        r.email,
                        r.name.as_deref().unwrap_or("-"),
                        r.status.as_str(),
                        r.source,
                        r.confirmed_at.as_deref().unwrap_or("-")
                    )?;
                }
                tw.flush()?;
                writeln!(out, "{} subscriber(s)", rows.len())?;
            }
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
