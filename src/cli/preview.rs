//! `harborlist preview` (the exact bytes, to a file) and `harborlist send-test` (one real
//! message, now, outside the ledger). Both render the same way as the sender does.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};

use crate::preflight::samples;
use crate::{
    config::{Audience, RegistrationMode, Settings},
    domain::{SubscriberEmail, new_nonce},
    mail::context::RecipientRegistration,
    mail::{
        Letter, Recipient, Transport,
        context::{Composed, is_list_mail},
    },
    runtime::Runtime,
    schedule::announcements,
    store::registrations::RegStatus,
};

/// Which message: a template (with sample data) or an announcement from the config.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["template", "announcement"])))]
pub struct Selection {
    /// Email template name (files templates/email/NAME.{subject,txt,html}.hbs): confirm,
    /// welcome, goodbye, invitation, reminder, update, cancellation, announcement,
    /// registration_confirm, registered, waitlisted or seat_offer.
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// An announcement from the configuration, by its id.
    #[arg(long, value_name = "ID")]
    announcement: Option<String>,
    /// The training the message is about (YYYY-MM-DD); default: the next one.
    #[arg(long, value_name = "DATE")]
    training: Option<NaiveDate>,
    /// Recipient address to render for.
    #[arg(long, value_name = "ADDRESS")]
    to: String,
    /// Render as a recipient whose registration for the training is in this state
    /// (registered, waitlisted, offered); default: as the reminder's audience gets it
    /// (registered for `audience = "registered"`, otherwise not registered).
    #[arg(long, value_name = "STATUS")]
    registration: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    what: Selection,
    /// Where to write the message (RFC 5322, CRLF line endings).
    #[arg(long, value_name = "FILE.eml")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SendTestArgs {
    #[command(flatten)]
    what: Selection,
}

pub async fn preview(settings: Settings, args: &PreviewArgs) -> anyhow::Result<ExitCode> {
    let composed = compose(settings, &args.what)?.1;
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

pub async fn send_test(settings: Settings, args: &SendTestArgs) -> anyhow::Result<ExitCode> {
    let transport = Transport::from_settings(&settings.mail).map_err(|e| anyhow::anyhow!(e))?;
    let (runtime, composed) = compose(settings, &args.what)?;
    transport
        .send(&composed.envelope, &composed.bytes, &composed.message_id)
        .await
        .with_context(|| format!("sending to {}", args.what.to))?;
    let via = match runtime.settings.mail.relay_url() {
        url if !url.is_empty() && matches!(transport, Transport::Pooled(..)) => {
            url.split('@').next_back().unwrap_or(url).to_owned()
        }
        _ => format!("the outbox {}", runtime.settings.mail.outbox_dir.display()),
    };
    println!(
        "sent a test message to {} via {via} (Message-ID <{}>)",
        args.what.to, composed.message_id
    );
    println!("It is not recorded as sent to anyone, and its unsubscribe link is a dummy.");
    Ok(ExitCode::SUCCESS)
}

fn compose(settings: Settings, what: &Selection) -> anyhow::Result<(Runtime, Composed)> {
    let to = SubscriberEmail::parse(&what.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let runtime = Runtime::build_read_only(settings)?;
    let now = Utc::now();
    let (key, template, data) = what_to_render(&runtime, what, now)?;
    let letter = Letter {
        mailing_key: &key,
        template: &template,
        list_mail: is_list_mail(&template),
        data: &data,
        training: crate::mail::context::training_of(&data),
    };
    let nonce = new_nonce();
    let status = registration_status(&runtime.settings, what, &template)?;
    let recipient = Recipient {
        delivery_id: None,
        subscriber_id: 0,
        email: to.as_str(),
        name: None,
        unsub_nonce: &nonce,
        member: true,
        registration: status.map(|status| RecipientRegistration {
            status,
            nonce: &nonce,
            offer_expires_ms: (status == RegStatus::Offered)
                .then(|| crate::clock::to_millis(now + chrono::Duration::hours(48))),
        }),
    };
    let composed = runtime.composer.compose(&letter, &recipient, now)?;
    Ok((runtime, composed))
}

/// The registration the recipient is previewed with: `--registration`, or what the
/// reminder's audience has (everyone who gets a "registered" reminder is registered).
fn registration_status(
    settings: &Settings,
    what: &Selection,
    template: &str,
) -> anyhow::Result<Option<RegStatus>> {
    if let Some(text) = &what.registration {
        return match RegStatus::parse(text) {
            Ok(s @ (RegStatus::Registered | RegStatus::Waitlisted | RegStatus::Offered)) => {
                Ok(Some(s))
            }
            _ => bail!("--registration: {text:?} is not one of registered, waitlisted, offered"),
        };
    }
    let registered = what.announcement.is_none()
        && settings.registration.mode == RegistrationMode::Harborlist
        && settings
            .reminders
            .iter()
            .find(|r| r.template == template)
            .is_some_and(|r| r.audience == Audience::Registered);
    Ok(registered.then_some(RegStatus::Registered))
}

/// The mailing key, template and data for `--template` or `--announcement`.
fn what_to_render(
    runtime: &Runtime,
    what: &Selection,
    now: DateTime<Utc>,
) -> anyhow::Result<(String, String, serde_json::Value)> {
    if let Some(id) = &what.announcement {
        let Some(a) = runtime.settings.announcements.iter().find(|a| &a.id == id) else {
            let known: Vec<&str> = runtime
                .settings
                .announcements
                .iter()
                .map(|a| a.id.as_str())
                .collect();
            bail!(
                "--announcement: no announcement {id:?} in the configuration; known: {}",
                known.join(", ")
            );
        };
        let m = announcements::mailing(a, &runtime.settings, &runtime.calendar, 0);
        return Ok((m.key, m.template, m.data));
    }
    let template = what.template.clone().unwrap_or_default();
    if !runtime.composer.templates().has(&template) {
        let known: Vec<&str> = runtime.composer.templates().names().collect();
        bail!(
            "--template: no template {template:?}; known: {}",
            known.join(", ")
        );
    }
    let session = match what.training {
        Some(date) => Some(
            runtime
                .calendar
                .session_on(date)
                .with_context(|| format!("--training: no training on {date}"))?,
        ),
        None => samples::next_session(&runtime.calendar, now),
    };
    let data = samples::mailing_data(&runtime.settings, &template, session.as_ref(), now);
    Ok((format!("preview:{template}"), template, data))
}
