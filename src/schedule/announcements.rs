//! Announcements from `[[announcements]]`: one list mailing each, keyed `announcement:<id>`.
//!
//! The planner writes each as a planned mailing due at its `send_at`. Editing one that is
//! still planned updates it (a new `send_at` reschedules it); editing one that already went
//! out changes nothing, because only planned rows are updated; removing one that is still
//! planned closes it as cancelled.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
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
    store::{StoreError, queue::PlannedMailing},
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
    if let Some(session) = a.training.and_then(|date| calendar.session_on(date)) {
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
    }
}

pub async fn reconcile(p: &Planner, report: &mut TurnReport) -> Result<(), StoreError> {
    let runtime = p.live.current();
    let now_ms = to_millis(p.clock.now());
    let config_ms = runtime.config_ms();
    let mut wanted = HashSet::new();
    for a in &runtime.settings.announcements {
        let sequence = match a.training.and_then(|d| runtime.calendar.session_on(d)) {
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

/// When an announcement is due, for `status` and tests.
pub fn due(a: &AnnouncementSettings, calendar: &Calendar) -> DateTime<Utc> {
    a.send_at.resolve(calendar.timezone())
}
