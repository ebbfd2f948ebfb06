//! Announcements from `[[announcements]]`: one list mailing each, keyed `announcement:<id>`.
//!
//! The planner writes each as a planned mailing due at its `send_at`. Editing one that is
//! still planned updates it (a new `send_at` reschedules it); editing one that already went
//! out changes nothing, because only planned rows are updated; removing one that is still
//! planned closes it as cancelled.
//!
//! An announcement is never sent late by surprise: one that the planner would fan out more
//! than `announcements.max_late` after its `send_at` (a year typo, a fresh or restored
//! database, a long outage) is closed as `skipped` instead, with the reason in staff's words
//! ("send_at Fri May 1 2026 9:00 AM CDT was 214 days ago"), logged at WARN and shown by
//! `status`. `send_late = true` on the entry lets it go out late. When staff fix the
//! `send_at`, or set `send_late`, the skipped row is planned again.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::{
    Planner, TurnReport,
    content::{self, Notice},
};
use crate::{
    calendar::Calendar,
    clock::to_millis,
    config::{AnnouncementBody, AnnouncementSettings, Settings},
    mail::markdown,
    store::{
        StoreError,
        queue::{LATE_REASON_PREFIX, MailingRow, PlannedMailing},
    },
};

pub fn key(id: &str) -> String {
    format!("announcement:{id}")
}

/// The mailing an announcement becomes. Pure, so `check`, `preview` and the planner agree.
pub fn mailing(
    a: &AnnouncementSettings,
    settings: &Settings,
    calendar: &Calendar,
    sequence: u32,
) -> PlannedMailing {
    let send_at = a.send_at.resolve(calendar.timezone());
    let (template, body) = match a.body() {
        AnnouncementBody::Markdown { markdown: source } => (
            "announcement".to_owned(),
            json!({ "body_html": markdown::to_html(&source), "body_text": markdown::to_text(&source) }),
        ),
        AnnouncementBody::Template { template, vars } => (template, json!({ "vars": vars })),
    };
    // Templates run in strict mode: `training` is always present, null when not about one.
    let mut data = json!({ "training": null });
    let mut not_after = None;
    let mut training = None;
    if let Some(session) = a.session(calendar) {
        training = Some(session.id.clone());
        data = content::training_data(
            &session,
            sequence,
            send_at,
            &content::prodid(&settings.list.name),
            Notice::Invite,
        );
        not_after = Some(to_millis(session.start.with_timezone(&Utc)));
    }
    let mut announcement = json!({ "id": a.id, "subject": a.subject });
    // In the row, so that an edit setting it is written like any other edit (and an
    // instance that has not reloaded it yet does not skip what the edit lets go late).
    if a.send_late {
        announcement["send_late"] = json!(true);
    }
    if let (Some(obj), Some(extra)) = (announcement.as_object_mut(), body.as_object()) {
        obj.extend(extra.clone());
    }
    data["announcement"] = announcement;
    PlannedMailing {
        key: key(&a.id),
        kind: "announcement".into(),
        template,
        data,
        due_ms: to_millis(send_at),
        not_after_ms: not_after,
        training,
        segment: None,
    }
}

pub async fn reconcile(p: &Planner, report: &mut TurnReport) -> Result<(), StoreError> {
    let runtime = p.live.current();
    let now_ms = to_millis(p.clock.now());
    let config_ms = runtime.config_ms();
    let mut wanted = HashSet::new();
    for a in &runtime.settings.announcements {
        let sequence = match a.session(&runtime.calendar) {
            Some(s) => p
                .store
                .training(&s.uid)
                .await?
                .map_or(0, |t| u32::try_from(t.sequence).unwrap_or(0)),
            None => 0,
        };
        let m = mailing(a, &runtime.settings, &runtime.calendar, sequence);
        wanted.insert(m.key.clone());
        if p.store.upsert_planned(&m, now_ms, config_ms).await? {
            report.planned += 1;
        }
        let late = lateness(m.due_ms, now_ms);
        if (a.send_late || late <= runtime.settings.announcement_rules.max_late.chrono())
            && p.store.replan_late(&m, now_ms, config_ms).await?
        {
            tracing::info!(mailing = %m.key, "planned again: it was skipped as late, and its send_at or send_late changed");
            report.planned += 1;
        }
    }
    for stale in p.store.planned_with_prefix("announcement:").await? {
        if !wanted.contains(&stale.key)
            && p.store
                .close_planned(stale.id, "cancelled", now_ms, config_ms)
                .await?
        {
            tracing::info!(mailing = %stale.key, "cancelled: the announcement was removed from the configuration");
            report.cancelled += 1;
        }
    }
    Ok(())
}

/// How far past `due_ms` the instant `now_ms` is (negative before it).
fn lateness(due_ms: i64, now_ms: i64) -> TimeDelta {
    TimeDelta::milliseconds(now_ms.saturating_sub(due_ms))
}

/// If `m` is an announcement due more than `announcements.max_late` ago and its entry does
/// not say `send_late = true`, closes it as skipped with the reason. Returns whether it did.
pub async fn skip_if_late(
    p: &Planner,
    m: &MailingRow,
    now_ms: i64,
    report: &mut TurnReport,
) -> Result<bool, StoreError> {
    if m.kind != "announcement" {
        return Ok(false);
    }
    let runtime = p.live.current();
    let rules = &runtime.settings.announcement_rules;
    let late = lateness(m.due_ms, now_ms);
    let send_late = serde_json::from_str::<serde_json::Value>(&m.data)
        .ok()
        .and_then(|d| d["announcement"]["send_late"].as_bool())
        .unwrap_or(false);
    if send_late || late <= rules.max_late.chrono() {
        return Ok(false);
    }
    let reason = late_reason(m.due_ms, late, runtime.calendar.timezone());
    if p.store.skip_planned(m.id, &reason, now_ms).await? {
        tracing::warn!(
            mailing = %m.key,
            %reason,
            max_late = %rules.max_late,
            "skipped, not sent: more than announcements.max_late late (set send_late = true on the entry to send it anyway)"
        );
        report.skipped += 1;
    }
    Ok(true)
}

/// "send_at Fri May 1 2026 9:00 AM CDT was 214 days ago".
pub fn late_reason(due_ms: i64, late: TimeDelta, tz: chrono_tz::Tz) -> String {
    let when = crate::clock::from_millis(due_ms)
        .with_timezone(&tz)
        .format("%a %b %-d %Y %-I:%M %p %Z");
    format!("{LATE_REASON_PREFIX}{when} was {} ago", ago(late))
}

/// "214 days", "1 day", "3 hours", "5 minutes".
pub fn ago(late: TimeDelta) -> String {
    let (n, unit) = if late.num_days() > 0 {
        (late.num_days(), "day")
    } else if late.num_hours() > 0 {
        (late.num_hours(), "hour")
    } else {
        (late.num_minutes(), "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// When an announcement is due, for `status` and tests.
pub fn due(a: &AnnouncementSettings, calendar: &Calendar) -> DateTime<Utc> {
    a.send_at.resolve(calendar.timezone())
}
