//! `harborlist preview`: the exact bytes that would be sent, written to a file.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use chrono::{NaiveDate, Utc};

use super::samples;
use crate::{
    config::Settings,
    domain::{SubscriberEmail, new_nonce},
    mail::{Letter, Recipient, context::is_list_mail},
    schedule::announcements,
    startup::Runtime,
};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["template", "announcement"])))]
pub struct Args {
    /// Email template name (a file set templates/email/NAME.{subject,txt,html}.hbs).
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// An announcement from the configuration, by its id.
    #[arg(long, value_name = "ID")]
    announcement: Option<String>,
    /// Recipient address to render for.
    #[arg(long, value_name = "ADDRESS")]
    to: String,
    /// The training the message is about (YYYY-MM-DD); default: the next one.
    #[arg(long, value_name = "DATE")]
    training: Option<NaiveDate>,
    /// Where to write the message (RFC 5322, CRLF line endings).
    #[arg(long, value_name = "FILE.eml")]
    out: PathBuf,
}

pub async fn run(settings: Settings, args: &Args) -> anyhow::Result<ExitCode> {
    let to = SubscriberEmail::parse(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let runtime = Runtime::build(settings)?;
    let now = Utc::now();
    let (key, template, data) = what_to_render(&runtime, args, now)?;
    let letter = Letter { mailing_key: &key, template: &template, list_mail: is_list_mail(&template), data: &data };
    let nonce = new_nonce();
    let recipient = Recipient {
        subscriber_id: 0,
        email: to.as_str(),
        name: None,
        unsub_nonce: &nonce,
    };
    let composed = runtime.composer.compose(&letter, &recipient, now)?;
    std::fs::write(&args.out, &composed.bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} bytes, Message-ID <{}>)",
        args.out.display(),
        composed.bytes.len(),
        composed.message_id
    );
    Ok(ExitCode::SUCCESS)
}

/// The mailing key, template and data for `--template` or `--announcement`.
pub(super) fn what_to_render(
    runtime: &Runtime,
    args: &Args,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<(String, String, serde_json::Value)> {
    if let Some(id) = &args.announcement {
        return announcement(runtime, id);
    }
    let template = args.template.clone().unwrap_or_default();
    if !runtime.composer.templates().has(&template) {
        let known: Vec<&str> = runtime.composer.templates().names().collect();
        bail!("--template: no template {template:?}; known: {}", known.join(", "));
    }
    let session = match args.training {
        Some(date) => {
            Some(runtime.calendar.session_on(date).with_context(|| format!("--training: no training on {date}"))?)
        }
        None => samples::next_session(&runtime.calendar, now),
    };
    let data = samples::mailing_data(&runtime.settings, &template, session.as_ref(), now);
    Ok((format!("preview:{template}"), template, data))
}

/// The mailing an announcement in the configuration would become.
pub(super) fn announcement(runtime: &Runtime, id: &str) -> anyhow::Result<(String, String, serde_json::Value)> {
    let Some(a) = runtime.settings.announcements.iter().find(|a| a.id == id) else {
        let known: Vec<&str> = runtime.settings.announcements.iter().map(|a| a.id.as_str()).collect();
        bail!("--announcement: no announcement {id:?} in the configuration; known: {}", known.join(", "));
    };
    let m = announcements::mailing(a, &runtime.settings, &runtime.calendar, 0);
    Ok((m.key, m.template, m.data))
}
