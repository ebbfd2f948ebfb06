//! `harborlist check`: everything that can be wrong before the daemon starts, at once.

use std::process::ExitCode;

use chrono::Utc;
use serde_json::json;

use super::samples;
use crate::{
    config::Sources,
    mail::{Letter, Recipient, context::is_list_mail},
    runtime::Runtime,
    schedule::announcements,
};

pub async fn run(sources: &Sources) -> anyhow::Result<ExitCode> {
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
