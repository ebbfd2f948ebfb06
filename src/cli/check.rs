//! `harborlist check`: everything that can be wrong before the daemon starts, at once.
//! `check --relay` instead opens one session to the mail relay, as the sender would
//! ([`crate::mail::smtp::check_relay`]), and prints how far it got.

use std::process::ExitCode;

use chrono::Utc;
use serde_json::json;

use super::samples;
use crate::{
    config::{MailSettings, Sources},
    mail::{
        Letter, Recipient,
        context::is_list_mail,
        smtp::{RelayCheck, check_relay, redact_url},
    },
    runtime::Runtime,
    schedule::announcements,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connect to the relay in mail.smtp_url and go through the greeting, EHLO, STARTTLS
    /// (when the URL asks for it) and AUTH, then QUIT, sending nothing. Run it after
    /// setting or changing the relay, its password or its TLS: a wrong one would
    /// otherwise show only once mail is due, as every message waiting in retries.
    /// Prints "ok" with the relay's host:port, or the stage that failed and the relay's
    /// reply, and exits 1 on failure.
    #[arg(long)]
    pub relay: bool,
}

pub async fn run(sources: &Sources, args: &Args) -> anyhow::Result<ExitCode> {
    let files: Vec<String> = sources
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let settings = match sources.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("configuration ({}): {e}", files.join(" + "));
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("ok   configuration ({})", files.join(" + "));
    if args.relay {
        return Ok(relay(&settings.mail).await);
    }
    let runtime = match Runtime::build_read_only(settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("FAIL {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let now = Utc::now();
    let next = samples::next_session(&runtime.calendar, now);
    match &next {
        Some(s) => println!(
            "ok   calendar (next training: {})",
            crate::calendar::human::when(s)
        ),
        None => println!("ok   calendar (no upcoming trainings)"),
    }
    let mut failures = 0;
    let composer = &runtime.composer;
    let names: Vec<String> = composer.templates().names().map(str::to_owned).collect();
    for name in &names {
        let data = samples::mailing_data(&runtime.settings, name, next.as_ref(), now);
        let letter = Letter {
            mailing_key: "check",
            template: name,
            list_mail: is_list_mail(name),
            data: &data,
        };
        let to = Recipient {
            subscriber_id: 1,
            email: "sample@example.org",
            name: Some("Sam <Sample>"),
            unsub_nonce: "0",
        };
        match composer.compose(&letter, &to, now) {
            Ok(_) => println!("ok   email template {name}"),
            Err(e) => {
                eprintln!("FAIL email template {name}: {e}");
                failures += 1;
            }
        }
    }
    for a in &runtime.settings.announcements {
        let m = announcements::mailing(a, &runtime.settings, &runtime.calendar, 0);
        let letter = Letter {
            mailing_key: &m.key,
            template: &m.template,
            list_mail: true,
            data: &m.data,
        };
        let to = Recipient {
            subscriber_id: 1,
            email: "sample@example.org",
            name: None,
            unsub_nonce: "0",
        };
        let due = crate::clock::from_millis(m.due_ms).with_timezone(&runtime.calendar.timezone());
        match composer.compose(&letter, &to, now) {
            Ok(_) => println!(
                "ok   announcement {} (sends {})",
                a.id,
                due.format("%a %b %-d %Y, %-I:%M %p %Z")
            ),
            Err(e) => {
                eprintln!("FAIL announcement {}: {e}", a.id);
                failures += 1;
            }
        }
    }
    let page = json!({
        "title": "t", "paragraphs": ["p"], "form": { "action": "/", "button": "b", "hidden": [] },
        "links": [], "email": "", "name": "", "error": null, "sessions": [], "calendar_url": "/trainings.ics",
        "list": { "name": "n", "organization": "o", "postal_address": "a" },
    });
    for p in runtime.web.pages() {
        match runtime.web.render(p, &page) {
            Ok(_) => println!("ok   web page {p}"),
            Err(e) => {
                eprintln!("FAIL web page {p}: {e}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        eprintln!("{failures} problem(s) found");
        return Ok(ExitCode::FAILURE);
    }
    println!("all good");
    Ok(ExitCode::SUCCESS)
}

/// `check --relay`: one session to the relay, and what came of it.
async fn relay(mail: &MailSettings) -> ExitCode {
    match check_relay(mail).await {
        Ok(RelayCheck::NoRelay) => {
            println!("ok   no relay to check: mail.transport = \"file\" writes to the outbox");
            ExitCode::SUCCESS
        }
        Ok(RelayCheck::Ok {
            address,
            tls,
            authenticated,
            pipelining,
        }) => {
            let mut done = vec!["greeting", "EHLO"];
            done.extend(tls.then_some("TLS"));
            done.extend(authenticated.then_some("AUTH"));
            done.push("QUIT");
            let pipelining = if pipelining {
                "; offers PIPELINING"
            } else {
                ""
            };
            println!("ok   relay {address} ({}{pipelining})", done.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            let url = redact_url(mail.smtp_url.as_deref().unwrap_or_default());
            eprintln!("FAIL relay {url} at {}: {}", e.stage, reply_of(&e));
            ExitCode::FAILURE
        }
    }
}

/// The relay's reply (`535 5.7.8 …`), or what happened instead.
fn reply_of(e: &crate::mail::SendError) -> String {
    match e.code {
        Some(code) => format!("{code} {}", e.text),
        None => e.text.clone(),
    }
}
