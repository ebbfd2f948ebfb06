//! `harborlist status`: the mail relay's state, what is coming up and how recent mailings
//! went. The relay's state is what the sender last stored (see `crate::send`), so it shows
//! the running daemon's view from any process.

use std::{io::Write, process::ExitCode};

use chrono::{Duration, Utc};
use serde_json::json;

use crate::{
    calendar::human,
    clock::{from_millis, to_millis},
    config::Settings,
    domain::terminal_safe,
    health::{RelayState, RelayStatus},
    schedule::content::training_json,
    send::RELAY_STATE,
    store::{Store, report::MailingSummary},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// How many upcoming and recent mailings to show.
    #[arg(long, default_value_t = 10)]
    limit: i64,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<ExitCode> {
    let calendar = settings.calendar()?;
    let tz = calendar.timezone();
    let store = super::database::open(settings).await?;
    // On PostgreSQL, messages recorded as sent are counted as sent once the sent log is
    // folded into `deliveries`, which a sender does when it is idle. Folding here makes
    // the counts exact in the middle of a mailing; it is safe beside running senders.
    store.settle_sent().await?;
    let now = Utc::now();
    let trainings = calendar.upcoming(now, 3);
    let counts = store.subscriber_counts().await?;
    let upcoming = store.upcoming_mailings(args.limit).await?;
    let recent = store.recent_mailings(args.limit).await?;
    let personal = store
        .personal_mail_since(to_millis(now - Duration::hours(24)))
        .await?;
    let queue = store.queue_depth().await?;
    let relay = relay_status(&store).await?;
    let skipped = store.skipped_mailings(args.limit).await?;
    store.close().await;

    let when = |ms: i64| {
        from_millis(ms)
            .with_timezone(&tz)
            .format("%a %b %-d %Y %-I:%M %p %Z")
            .to_string()
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let summary = |m: &MailingSummary| {
            json!({ "key": m.key, "kind": m.kind, "state": m.state, "due": from_millis(m.due_ms).to_rfc3339(),
                    "audience": m.audience, "sent": m.sent, "failed": m.failed, "pending": m.pending, "skipped": m.skipped })
        };
        let doc = json!({
            "trainings": trainings.iter().map(training_json).collect::<Vec<_>>(),
            "subscribers": counts.iter().map(|(s, n)| (s.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "upcoming": upcoming.iter().map(summary).collect::<Vec<_>>(),
            "recent": recent.iter().map(summary).collect::<Vec<_>>(),
            "personal_last_24h": { "sent": personal.0, "failed": personal.1, "pending": personal.2 },
            "queue_depth": queue,
            "relay": {
                "state": relay.as_ref().map_or(RelayState::Ok, |r| r.state),
                "since": relay.as_ref().and_then(|r| r.since_ms).map(|ms| from_millis(ms).to_rfc3339()),
                "last_error": relay.as_ref().and_then(|r| r.last_error.clone()),
            },
            "skipped": skipped.iter().map(|m| json!({ "key": m.key, "kind": m.kind, "due": from_millis(m.due_ms).to_rfc3339(),
                "skipped_at": from_millis(m.skipped_ms).to_rfc3339(), "reason": m.reason })).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }

    writeln!(out, "{}", relay_line(relay.as_ref(), when))?;
    writeln!(out, "\nNext trainings")?;
    for s in &trainings {
        let mark = if s.cancelled { "  (cancelled)" } else { "" };
        writeln!(out, "  {}{mark}", human::when(s))?;
    }
    let count = |status: &str| {
        counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    };
    writeln!(
        out,
        "\nSubscribers: {} active, {} pending, {} unsubscribed, {} bouncing",
        count("active"),
        count("pending"),
        count("unsubscribed"),
        count("bouncing")
    )?;

    writeln!(out, "\nUpcoming mailings")?;
    let mut tw = tabwriter::TabWriter::new(Vec::new());
    writeln!(tw, "  DUE\tKIND\tMAILING\tAUDIENCE NOW")?;
    for m in &upcoming {
        writeln!(
            tw,
            "  {}\t{}\t{}\t{}",
            when(m.due_ms),
            m.kind,
            m.key,
            m.audience
        )?;
    }
    if upcoming.is_empty() {
        writeln!(tw, "  (none planned)")?;
    }
    tw.flush()?;
    out.write_all(&tw.into_inner()?)?;

    writeln!(out, "\nRecent mailings")?;
    let mut tw = tabwriter::TabWriter::new(Vec::new());
    writeln!(
        tw,
        "  DUE\tKIND\tMAILING\tSTATE\tSENT\tFAILED\tPENDING\tSKIPPED"
    )?;
    for m in &recent {
        writeln!(
            tw,
            "  {}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            when(m.due_ms),
            m.kind,
            m.key,
            m.state,
            m.sent,
            m.failed,
            m.pending,
            m.skipped
        )?;
    }
    if recent.is_empty() {
        writeln!(tw, "  (nothing sent yet)")?;
    }
    tw.flush()?;
    out.write_all(&tw.into_inner()?)?;
    if !skipped.is_empty() {
        writeln!(out, "\nSkipped, not sent")?;
        for m in &skipped {
            writeln!(out, "  {}: {}", m.key, m.reason)?;
        }
    }
    writeln!(
        out,
        "\nConfirmations and welcomes, last 24 h: {} sent, {} failed, {} pending. Messages waiting now: {queue}.",
        personal.0, personal.1, personal.2
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The relay's state as the sender last stored it; `None` before anything was sent.
async fn relay_status(store: &Store) -> anyhow::Result<Option<RelayStatus>> {
    let Some(stored) = store.state(RELAY_STATE).await? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&stored.value).unwrap_or_else(
        |e| RelayStatus {
            state: RelayState::Ok,
            since_ms: None,
            last_error: Some(format!("the stored relay state is unreadable: {e}")),
        },
    )))
}

/// "Mail relay: failing since Tue Dec 1 2026 3:04 PM CST at AUTH: 535 5.7.8 …".
fn relay_line(relay: Option<&RelayStatus>, when: impl Fn(i64) -> String) -> String {
    match relay {
        None
        | Some(RelayStatus {
            since_ms: None,
            state: RelayState::Ok,
            ..
        }) => "Mail relay: not used yet".to_owned(),
        Some(r) if r.state == RelayState::Ok => "Mail relay: ok".to_owned(),
        Some(r) => {
            let since = r.since_ms.map(&when).unwrap_or_else(|| "?".into());
            // The relay's own words: text from a server we don't run.
            let error = r
                .last_error
                .as_deref()
                .map_or("no reply recorded".into(), terminal_safe);
            format!("Mail relay: failing since {since} at {error}")
        }
    }
}
