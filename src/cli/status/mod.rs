//! `harborlist status`: the mail relay's state, the next trainings with their seats
//! (registered / capacity, waiting list, open offers), how many came to the last ones,
//! what is coming up, how recent mailings went, and what came back from receiving servers
//! (bounces and complaints over the last 30 days). The relay's state is what the sender
//! last stored (see `crate::send`), so it shows the running daemon's view from any process.
//!
//! Mailings are named and their states worded as staff think of them ([`words`]:
//! "Invitation · Wed Jan 20, 2027 training", "sent"); `--json` keeps the machine fields
//! (`key`, `kind`, `state`) and adds those words (`title`, `state_words`). Upcoming
//! mailings are those planned in the database together with those the planner would plan
//! now from the configuration ([`planned`]), so they show before the daemon has run.

mod planned;
mod words;

use std::{io::Write, process::ExitCode};

use chrono::{Duration, Utc};
use serde_json::json;

use super::seats::{Registration, SeatView};
use crate::{
    calendar::human,
    clock::{from_millis, to_millis},
    config::Settings,
    domain::terminal_safe,
    health::{RelayState, RelayStatus},
    schedule::content::training_json,
    send::RELAY_STATE,
    store::{Store, bounce_report::BounceSummary, report::MailingSummary},
};
use words::StaffState;

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
    let past = calendar.sessions_between(now - Duration::days(RECENT_DAYS), now);
    let past = &past[past.len().saturating_sub(2)..];
    let seats = store.seat_counts().await?;
    let tallies = store.registration_tallies().await?;
    let counts = store.subscriber_counts().await?;
    let off_list = store.registrants_off_list().await?;
    let upcoming = upcoming(&store, settings, &calendar, now, args.limit).await?;
    let recent = store.recent_mailings(args.limit).await?;
    let personal = store
        .personal_mail_since(to_millis(now - Duration::hours(24)))
        .await?;
    let queue = store.queue_depth().await?;
    let relay = relay_status(&store).await?;
    let skipped = store.skipped_mailings(args.limit).await?;
    let bounces = store.bounce_summary(to_millis(now), BOUNCE_DAYS).await?;
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
                    "audience": m.audience, "sent": m.sent, "failed": m.failed, "pending": m.pending, "skipped": m.skipped,
                    "title": words::title(&calendar, &m.key, m.training.as_deref()),
                    "state_words": state_of(m).to_string() })
        };
        let upcoming_json = |u: &Upcoming| {
            let mut doc = summary(&u.mailing);
            doc["stored"] = json!(u.stored);
            doc
        };
        let seat_json = |t: &crate::calendar::Session| {
            let view = SeatView::of(
                settings,
                t,
                Some(seats.get(&t.id).copied().unwrap_or_default()),
                now,
            );
            let mut doc = training_json(t);
            if let (Some(obj), serde_json::Value::Object(more)) = (doc.as_object_mut(), view.json())
            {
                obj.extend(more);
            }
            doc
        };
        let past_json = |t: &crate::calendar::Session| {
            let tally = tallies.get(&t.id).copied().unwrap_or_default();
            json!({ "id": t.id, "start": t.start.to_rfc3339(), "cancelled": t.cancelled,
                    "registered": tally.registered, "attended": tally.attended, "no_shows": tally.not_attended })
        };
        let doc = json!({
            "trainings": trainings.iter().map(seat_json).collect::<Vec<_>>(),
            "recent_trainings": past.iter().map(past_json).collect::<Vec<_>>(),
            "subscribers": counts.iter().map(|(s, n)| (s.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "registrants_not_on_list": off_list,
            "upcoming": upcoming.iter().map(upcoming_json).collect::<Vec<_>>(),
            "recent": recent.iter().map(summary).collect::<Vec<_>>(),
            "personal_last_24h": { "sent": personal.0, "failed": personal.1, "pending": personal.2 },
            "queue_depth": queue,
            "relay": {
                "state": relay.as_ref().map_or(RelayState::Ok, |r| r.state),
                "since": relay.as_ref().and_then(|r| r.since_ms).map(|ms| from_millis(ms).to_rfc3339()),
                "last_error": relay.as_ref().and_then(|r| r.last_error.clone()),
            },
            "skipped": skipped.iter().map(|m| json!({ "key": m.key, "kind": m.kind, "due": from_millis(m.due_ms).to_rfc3339(),
                "skipped_at": from_millis(m.skipped_ms).to_rfc3339(), "reason": m.reason,
                "title": words::title(&calendar, &m.key, m.training.as_deref()) })).collect::<Vec<_>>(),
            "bounces": bounces,
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }

    writeln!(out, "{}", relay_line(relay.as_ref(), when))?;
    writeln!(out, "\nNext trainings")?;
    for s in &trainings {
        let mark = match words::moved(&calendar, s) {
            _ if s.cancelled => "  (cancelled)".to_owned(),
            Some(moved) => format!(" ({moved})"),
            None => String::new(),
        };
        let view = SeatView::of(
            settings,
            s,
            Some(seats.get(&s.id).copied().unwrap_or_default()),
            now,
        );
        writeln!(
            out,
            "  {} [{}]{mark}: {}",
            human::when(s),
            s.id,
            seats_line(&view)
        )?;
    }
    if !past.is_empty() {
        writeln!(out, "\nRecent trainings")?;
        for s in past {
            let t = tallies.get(&s.id).copied().unwrap_or_default();
            let line = if s.cancelled {
                "cancelled".to_owned()
            } else if t.registered == 0 {
                "nobody registered with harborlist".to_owned()
            } else {
                format!(
                    "{} of {} registered attended{}",
                    t.attended,
                    t.registered,
                    if t.attended == 0 {
                        " (none marked yet: `harborlist registrations attended`)"
                    } else {
                        ""
                    }
                )
            };
            writeln!(out, "  {} [{}]: {line}", human::when(s), s.id)?;
        }
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
    if off_list > 0 {
        writeln!(
            out,
            "Registered for a training without joining the list: {off_list}"
        )?;
    }

    writeln!(out, "\nUpcoming mailings")?;
    let mut tw = tabwriter::TabWriter::new(Vec::new());
    writeln!(tw, "  DUE\tMAILING\tSTATE\tAUDIENCE NOW")?;
    for u in &upcoming {
        let m = &u.mailing;
        writeln!(
            tw,
            "  {}\t{}\t{}\t{}",
            when(m.due_ms),
            words::title(&calendar, &m.key, m.training.as_deref()),
            state_of(m).word(),
            m.audience
        )?;
    }
    if upcoming.is_empty() {
        writeln!(tw, "  (none planned)")?;
    }
    tw.flush()?;
    out.write_all(&tw.into_inner()?)?;
    let not_stored = upcoming.iter().filter(|u| !u.stored).count();
    if not_stored > 0 {
        let which = if not_stored == upcoming.len() {
            String::new()
        } else {
            format!("{not_stored} of these ")
        };
        writeln!(
            out,
            "  ({which}not planned by the daemon yet: it plans them when it runs, from the configuration as it is now)"
        )?;
    }

    writeln!(out, "\nRecent mailings")?;
    let mut tw = tabwriter::TabWriter::new(Vec::new());
    writeln!(tw, "  DUE\tMAILING\tSTATE\tSENT\tFAILED\tPENDING\tSKIPPED")?;
    for m in &recent {
        writeln!(
            tw,
            "  {}\t{}\t{}\t{}\t{}\t{}\t{}",
            when(m.due_ms),
            words::title(&calendar, &m.key, m.training.as_deref()),
            state_of(m).word(),
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
            let title = words::title(&calendar, &m.key, m.training.as_deref());
            writeln!(out, "  {title}: {}", m.reason)?;
        }
    }
    writeln!(
        out,
        "\nConfirmations and welcomes, last 24 h: {} sent, {} failed, {} pending. Messages waiting now: {queue}.",
        personal.0, personal.1, personal.2
    )?;
    writeln!(out, "\nBounces and complaints (last {BOUNCE_DAYS} days)")?;
    for line in bounce_lines(&bounces) {
        writeln!(out, "  {line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A row of "Upcoming mailings": planned in the database (`stored`), or one the planner
/// would plan now and has not yet.
struct Upcoming {
    mailing: MailingSummary,
    stored: bool,
}

/// The planned list mailings in the database, with those the planner would add now
/// ([`planned::would_plan`]) that the database has in no state, soonest first, at most
/// `limit`.
async fn upcoming(
    store: &Store,
    settings: &Settings,
    calendar: &crate::calendar::Calendar,
    now: chrono::DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<Upcoming>> {
    let mut rows: Vec<Upcoming> = store
        .upcoming_mailings(limit)
        .await?
        .into_iter()
        .map(|mailing| Upcoming {
            mailing,
            stored: true,
        })
        .collect();
    let would = planned::would_plan(settings, calendar, now);
    let keys: Vec<String> = would.iter().map(|m| m.key.clone()).collect();
    let known = store.known_mailing_keys(&keys).await?;
    let mut fresh: Vec<_> = would
        .into_iter()
        .filter(|m| !known.contains(&m.key))
        .collect();
    let limit = usize::try_from(limit).unwrap_or(0);
    fresh.truncate(limit);
    for m in fresh {
        let audience = store.audience_now(m.segment, m.training.as_deref()).await?;
        rows.push(Upcoming {
            mailing: MailingSummary {
                key: m.key,
                kind: m.kind,
                state: "planned".into(),
                due_ms: m.due_ms,
                audience,
                sent: 0,
                failed: 0,
                pending: 0,
                skipped: 0,
                training: m.training,
                reason: None,
            },
            stored: false,
        });
    }
    rows.sort_by(|a, b| {
        (a.mailing.due_ms, &a.mailing.key).cmp(&(b.mailing.due_ms, &b.mailing.key))
    });
    rows.truncate(limit);
    Ok(rows)
}

/// A mailing's state in staff's words.
fn state_of(m: &MailingSummary) -> StaffState<'_> {
    StaffState::of(&m.state, m.pending, m.reason.as_deref())
}

/// How far back "Bounces and complaints" looks: as far as a bounce score lasts by default.
const BOUNCE_DAYS: i64 = 30;

/// "3 hard bounces, 1 soft, 0 delayed", "1 complaint (unsubscribed)", … in staff words.
fn bounce_lines(b: &BounceSummary) -> Vec<String> {
    if b.is_empty() {
        return vec!["nothing came back".into()];
    }
    let mut lines = vec![format!(
        "{}, {} soft, {} delayed; {}",
        plural(b.hard, "hard bounce", "hard bounces"),
        b.soft,
        b.delayed,
        plural(b.auto_replies, "auto-reply", "auto-replies"),
    )];
    lines.push(format!(
        "{} (unsubscribed)",
        plural(b.complaints, "complaint", "complaints")
    ));
    if b.became_bouncing > 0 {
        lines.push(format!(
            "{} stopped getting mail because their address bounces (see `harborlist subscribers list --status bouncing`)",
            plural(b.became_bouncing, "person", "people")
        ));
    }
    if !b.policy_by_domain.is_empty() {
        let by = b
            .policy_by_domain
            .iter()
            // Domains are the receiving side's words: never raw to a terminal.
            .map(|d| match d.domain.as_str() {
                "" => format!("(domain not given) {}", d.count),
                domain => format!("{} {}", terminal_safe(domain), d.count),
            })
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!("rejected as policy/spam by: {by}"));
        lines.push(
            "  (the list has a deliverability problem with that provider, not the people on it: \
             check SPF, DKIM and DMARC for the sending domain)"
                .into(),
        );
    }
    if b.unmatched > 0 {
        lines.push(format!(
            "{} matched nothing harborlist sent (ignored)",
            plural(b.unmatched, "report", "reports")
        ));
    }
    lines
}

/// "1 complaint", "2 complaints".
fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How far back "Recent trainings" looks.
const RECENT_DAYS: i64 = 120;

/// "12 / 30 registered, 3 waitlisted, 1 offer open" (or "registration is external").
fn seats_line(view: &SeatView) -> String {
    let Some(c) = view.counts else {
        return "seats unknown".into();
    };
    if view.registration == Registration::External {
        return "registration is external".into();
    }
    let mut line = format!(
        "{} / {} registered, {} waitlisted, {} offer(s) open",
        c.registered + c.attended,
        view.capacity,
        c.waitlisted,
        c.offered
    );
    match view.registration {
        Registration::Full => line.push_str(" (full)"),
        Registration::Closed => line.push_str(" (registration closed)"),
        _ => {}
    }
    line
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
