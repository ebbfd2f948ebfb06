//! `harborlist preview`: the exact bytes that would be sent, written to a file.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use chrono::{NaiveDate, Utc};

use super::samples;
use crate::{
    config::Settings,
    domain::{SubscriberEmail, new_nonce},
    mail::{Letter, Recipient, context::is_list_mail},
    startup::Runtime,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Email template name (a file set templates/email/NAME.{subject,txt,html}.hbs).
    #[arg(long, value_name = "NAME")]
    template: String,
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
    if !runtime.composer.templates().has(&args.template) {
        let known: Vec<&str> = runtime.composer.templates().names().collect();
        bail!(
            "--template: no template {:?}; known: {}",
            args.template,
            known.join(", ")
        );
    }
    let now = Utc::now();
    let session = match args.training {
        Some(date) => Some(
            runtime
                .calendar
                .session_on(date)
                .with_context(|| format!("--training: no training on {date}"))?,
        ),
        None => samples::next_session(&runtime.calendar, now),
    };
    let data = samples::mailing_data(&runtime.settings, &args.template, session.as_ref(), now);
    let letter = Letter {
        mailing_key: &format!("preview:{}", args.template),
        template: &args.template,
        list_mail: is_list_mail(&args.template),
        data: &data,
    };
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
