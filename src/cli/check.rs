//! `harborlist check`: everything that can be wrong before the daemon starts, at once.
//!
//! It loads the settings as `serve` does, then prints every finding of
//! [`crate::preflight`], the check `serve` and a reload run too, so a configuration that
//! passes here is one they accept. On top, it looks at announcements the way staff need:
//! one whose `send_at` is past `announcements.max_late` is an error (the planner would skip
//! it), and, if the database can be read (read-only; none is ever created), one that was
//! already sent is noted as such; and an upcoming training whose capacity is below the
//! seats already held there is warned about (`warn`, not a failure), naming the key.
//!
//! `check --relay` instead opens one session to the mail relay, as the sender would
//! ([`crate::mail::smtp::check_relay`]), and prints how far it got; `check --mailbox`
//! logs in to the bounce mailbox (`bounces.imap_url`) read-only, the same way.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use crate::{
    config::{AnnouncementSettings, MailSettings, Settings, Sources},
    mail::smtp::{RelayCheck, check_relay, redact_url},
    preflight,
    runtime::Runtime,
    schedule::announcements,
    store::report::{MailingFate, PeekedSeats, peek_mailings, peek_seat_counts},
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

    /// Log in to the bounce mailbox in bounces.imap_url, look at it (read-only) and log
    /// out, changing nothing. Run it after setting the mailbox or its password: a wrong
    /// one leaves bounces and complaints unread. Prints "ok" with the mailbox and how many
    /// messages wait in it, or what failed, and exits 1 on failure.
    #[arg(long, conflicts_with = "relay")]
    pub mailbox: bool,
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
    if args.mailbox {
        return Ok(mailbox(&settings).await);
    }
    let runtime = match Runtime::build_read_only(settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("FAIL {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let now = Utc::now();
    match runtime.calendar.upcoming(now, 1).first() {
        Some(s) => println!(
            "ok   calendar (next training: {})",
            crate::calendar::human::when(s)
        ),
        None => println!("ok   calendar (no upcoming trainings)"),
    }
    let fates = sent_announcements(&runtime.settings).await;
    let mut failures = 0;
    for finding in preflight::findings(&runtime, now) {
        let outcome = match (&finding.outcome, finding.announcement) {
            (Ok(_), Some(i)) => {
                let a = &runtime.settings.announcements[i];
                announcement(sources, &runtime, a, fates.as_deref(), now)
            }
            _ => finding.outcome.clone(),
        };
        match outcome {
            Ok(note) if note.is_empty() => println!("ok   {}", finding.subject),
            Ok(note) if note.starts_with(preflight::WARNING) => println!(
                "warn {}: {}",
                finding.subject,
                &note[preflight::WARNING.len()..]
            ),
            Ok(note) => println!("ok   {} ({note})", finding.subject),
            Err(problem) => {
                eprintln!("FAIL {}: {problem}", finding.subject);
                failures += 1;
            }
        }
    }
    for warning in capacity_warnings(&runtime, now).await {
        println!("warn {warning}");
    }
    if failures > 0 {
        eprintln!("{failures} problem(s) found");
        return Ok(ExitCode::FAILURE);
    }
    println!("all good");
    Ok(ExitCode::SUCCESS)
}

/// Upcoming sessions whose configured capacity is below the seats already held (read
/// from the database read-only, if there is one). Not an error: everyone registered stays
/// registered, and no seat is offered until enough are given up.
async fn capacity_warnings(runtime: &Runtime, now: DateTime<Utc>) -> Vec<String> {
    let PeekedSeats::Counts(counts) = peek_seat_counts(&runtime.settings.database.url).await else {
        return Vec::new();
    };
    let mut sessions: Vec<_> = counts
        .iter()
        .filter_map(|(id, c)| Some((runtime.calendar.session_by_id(id)?, *c)))
        .filter(|(s, c)| s.start.with_timezone(&Utc) > now && c.taken() > i64::from(s.capacity))
        .collect();
    sessions.sort_by_key(|(s, _)| s.start);
    sessions
        .into_iter()
        .map(|(s, c)| {
            format!(
                "training {} ({}): capacity {} is below the {} already holding a seat. Everyone registered stays registered, and no seat is offered until fewer than {} hold one. To change it: {}",
                s.id,
                crate::calendar::human::when(&s),
                s.capacity,
                c.taken(),
                s.capacity,
                capacity_key(&runtime.settings, &s)
            )
        })
        .collect()
}

/// The configuration key that sets `session`'s capacity.
fn capacity_key(settings: &Settings, session: &crate::calendar::Session) -> String {
    let trainings = &settings.trainings;
    if session.extra {
        if let Some(i) = trainings
            .extra
            .iter()
            .position(|e| e.id.as_deref() == Some(session.id.as_str()))
        {
            return format!("trainings.extra[{i}].capacity");
        }
        return "capacity in the session's [[trainings.extra]] entry".into();
    }
    if let Some(i) = trainings
        .change
        .iter()
        .position(|c| c.date == session.id && c.capacity.is_some())
    {
        return format!("trainings.change[{i}].capacity");
    }
    format!(
        "trainings.capacity, or a [[trainings.change]] with date = \"{}\" and its own capacity",
        session.id
    )
}

/// What the database says about each announcement, if there is one to read.
async fn sent_announcements(settings: &Settings) -> Option<Vec<(String, MailingFate)>> {
    let keys: Vec<String> = settings
        .announcements
        .iter()
        .map(|a| announcements::key(&a.id))
        .collect();
    if keys.is_empty() {
        return None;
    }
    peek_mailings(&settings.database.url, &keys)
        .await
        .ok()
        .flatten()
}

/// The line for one announcement that composes: when it sends, that it already went, or
/// why it would not be sent.
fn announcement(
    sources: &Sources,
    runtime: &Runtime,
    a: &AnnouncementSettings,
    fates: Option<&[(String, MailingFate)]>,
    now: DateTime<Utc>,
) -> Result<String, String> {
    let tz = runtime.calendar.timezone();
    let when = |t: DateTime<Utc>| {
        t.with_timezone(&tz)
            .format("%a %b %-d %Y, %-I:%M %p %Z")
            .to_string()
    };
    let key = announcements::key(&a.id);
    let fate = fates.and_then(|f| f.iter().find(|(k, _)| *k == key).map(|(_, f)| f));
    if let Some(MailingFate::Sent { at_ms }) = fate {
        return Ok(format!(
            "already sent on {}; edits will not be sent again",
            when(crate::clock::from_millis(*at_ms))
        ));
    }
    if let Some(problem) = cancelled_training(runtime, a) {
        return Err(problem);
    }
    let due = announcements::due(a, &runtime.calendar);
    let late = now - due;
    let max_late = &runtime.settings.announcement_rules.max_late;
    if late <= max_late.chrono() {
        return Ok(match placeholder(a) {
            Some(warning) => format!("{}{warning}; sends {}", preflight::WARNING, when(due)),
            None => format!("sends {}", when(due)),
        });
    }
    let reason = announcements::late_reason(crate::clock::to_millis(due), late, tz);
    if a.send_late {
        return Ok(format!("{reason}; send_late = true, so it goes out late"));
    }
    Err(late_problem(sources, a, &reason, max_late, tz, now, fate))
}

/// An announcement that attaches a cancelled training would add a cancelled event to
/// people's calendars, with a message saying "adds the training to your calendar".
fn cancelled_training(runtime: &Runtime, a: &AnnouncementSettings) -> Option<String> {
    let id = a.training.as_deref()?;
    let session = runtime.calendar.session_by_id(id)?;
    session.cancelled.then(|| {
        format!(
            "attaches the training {id} ({}), which is cancelled: people would get a calendar invitation for it. Remove `training = \"{id}\"` from the announcement, or name another training",
            crate::calendar::human::when(&session)
        )
    })
}

/// `{{name}}` in an announcement's Markdown is sent as written: announcements are not
/// templates (a subscriber's name in a bulk message goes wrong for everyone without one).
fn placeholder(a: &AnnouncementSettings) -> Option<String> {
    let markdown = a.markdown.as_deref()?;
    let at = markdown.find("{{")?;
    let end = markdown[at..]
        .find("}}")
        .map_or(markdown.len(), |e| at + e + 2);
    let snippet: String = markdown[at..end].chars().take(40).collect();
    Some(format!(
        "its markdown has {snippet:?}, which is sent exactly as written (announcements are not templates). Write the words you mean instead, or use `template` with `vars` for a message of your own"
    ))
}

fn late_problem(
    sources: &Sources,
    a: &AnnouncementSettings,
    reason: &str,
    max_late: &crate::domain::HumanDuration,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
    fate: Option<&MailingFate>,
) -> String {
    let file = sources.file_of_announcement(&a.id).map_or_else(
        || "the configuration".to_owned(),
        |f| f.display().to_string(),
    );
    let mut text = format!(
        "in {file}: {reason}, more than announcements.max_late ({}), so it will not be sent",
        max_late.words()
    );
    if let Some(MailingFate::Closed { state, .. }) = fate {
        text.push_str(&format!(" (the database has it as {state})"));
    }
    if let Some(fixed) = a.send_at.future_year(tz, now) {
        text.push_str(&format!("; did you mean {}?", fixed.to_config()));
    }
    text.push_str(" To send it anyway, set send_late = true on the entry.");
    text
}

/// `check --mailbox`: one read-only session with the bounce mailbox.
async fn mailbox(settings: &Settings) -> ExitCode {
    let Some(text) = settings.bounces.as_ref().and_then(|b| b.imap_url()) else {
        eprintln!(
            "FAIL no mailbox to check: set bounces.imap_url (see \"Bounces and complaints\" in the README)"
        );
        return ExitCode::FAILURE;
    };
    let url = match crate::config::ImapUrl::parse(text) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("FAIL bounces.imap_url {e}");
            return ExitCode::FAILURE;
        }
    };
    match crate::bounce::imap::check_mailbox(url).await {
        Ok(found) => {
            let wake = if found.idle {
                "new mail is read as it arrives (IDLE)"
            } else {
                "no IDLE: looked at every bounces.poll"
            };
            println!(
                "ok   bounce mailbox {} ({} waiting; {wake})",
                found.mailbox,
                plural(found.messages, "message")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAIL bounce mailbox: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
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
            let url = redact_url(mail.relay_url());
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
