//! Bringing the database in line with the configured calendar and reminders.
//!
//! For each session that has not begun (within `schedule.horizon`):
//! * first sight: record it at SEQUENCE 0;
//! * changed (fingerprint differs): bump SEQUENCE; if its reminders already started going
//!   out, or anyone is registered or waiting for it, queue `update:<uid>:<seq>` or, for a
//!   cancellation, `cancel:<uid>:<seq>`, to the `involved` segment: the list, plus everyone
//!   registered, waiting or offered a seat, on the list or not. Registrations are kept by
//!   the session's id, which a move does not change, so the moved session's seats are the
//!   same seats;
//! * write its reminder mailings (or update their due time while still only planned).
//!
//! Then planned reminder mailings that the configuration no longer asks for — a
//! cancelled or removed training, a removed reminder — are closed as cancelled.

use std::collections::HashSet;

use chrono::Utc;

use super::{
    Planner, TurnReport,
    content::{self, Notice},
    plan,
};
use crate::{
    calendar::Session,
    clock::to_millis,
    config::RegistrationMode,
    store::{
        StoreError,
        queue::{PlannedMailing, Segment},
        trainings::TrainingRow,
    },
};

pub async fn trainings(p: &Planner, report: &mut TurnReport) -> Result<(), StoreError> {
    let runtime = p.live.current();
    let config_ms = runtime.config_ms();
    let settings = &runtime.settings;
    let now = p.clock.now();
    let now_ms = to_millis(now);
    let horizon = settings.schedule.horizon.after(now);
    let prodid = content::prodid(&settings.list.name);
    let sessions: Vec<Session> = runtime.calendar.sessions_between(now, horizon);
    let seen: HashSet<&str> = sessions.iter().map(|s| s.uid.as_str()).collect();

    let mut with_sequence = Vec::with_capacity(sessions.len());
    for session in &sessions {
        let sequence = record(p, session, now_ms, config_ms, &prodid, report).await?;
        with_sequence.push((session.clone(), sequence));
    }

    // A training that vanished from the config entirely is, to attendees, cancelled.
    for gone in p.store.trainings_after(now_ms).await? {
        if seen.contains(gone.uid.as_str()) || gone.cancelled {
            continue;
        }
        let Ok(mut session) = serde_json::from_str::<SnapshotSession>(&gone.snapshot).map(|s| s.0)
        else {
            continue;
        };
        session.cancelled = true;
        record(p, &session, now_ms, config_ms, &prodid, report).await?;
    }

    let wanted = plan::reminders(
        &with_sequence,
        &settings.reminders,
        settings.registration.mode,
        now,
        &prodid,
    );
    let wanted_keys: HashSet<&str> = wanted.iter().map(|m| m.key.as_str()).collect();
    for m in &wanted {
        if p.store.upsert_planned(m, now_ms, config_ms).await? {
            report.planned += 1;
        }
    }
    for stale in p.store.planned_with_prefix("reminder:").await? {
        // One whose training has begun is left for process_due to record as skipped.
        let begun = stale.not_after_ms.is_some_and(|t| t <= now_ms);
        if !begun
            && !wanted_keys.contains(stale.key.as_str())
            && p.store
                .close_planned(stale.id, "cancelled", now_ms, config_ms)
                .await?
        {
            tracing::info!(mailing = %stale.key, "cancelled: no longer in the calendar or reminders");
            report.cancelled += 1;
        }
    }
    Ok(())
}

/// Records one session and returns its SEQUENCE, queueing a notice if it changed after
/// mail about it went out.
async fn record(
    p: &Planner,
    s: &Session,
    now_ms: i64,
    config_ms: i64,
    prodid: &str,
    report: &mut TurnReport,
) -> Result<u32, StoreError> {
    let fingerprint = s.fingerprint();
    let snapshot = serde_json::to_string(&SnapshotRef(s)).unwrap_or_default();
    let start_ms = to_millis(s.start.with_timezone(&Utc));
    let Some(previous) = p.store.training(&s.uid).await? else {
        let row = TrainingRow {
            uid: s.uid.clone(),
            fingerprint,
            sequence: 0,
            start_ms,
            cancelled: s.cancelled,
            snapshot,
            updated_ms: now_ms,
        };
        p.store.save_training(&row, now_ms).await?;
        return Ok(0);
    };
    if previous.fingerprint == fingerprint {
        return Ok(u32::try_from(previous.sequence).unwrap_or(0));
    }
    // Written by an instance whose configuration is newer than ours: ours is stale until we
    // reload, and acting on it would flip the training back and queue a notice each time.
    if previous.updated_ms > config_ms {
        return Ok(u32::try_from(previous.sequence).unwrap_or(0));
    }
    let sequence = previous.sequence + 1;
    let seq32 = u32::try_from(sequence).unwrap_or(u32::MAX);
    let row = TrainingRow {
        uid: s.uid.clone(),
        fingerprint,
        sequence,
        start_ms,
        cancelled: s.cancelled,
        snapshot,
        updated_ms: now_ms,
    };
    p.store.save_training(&row, now_ms).await?;
    if previous.cancelled && s.cancelled {
        return Ok(seq32);
    }
    let harborlist = p.live.current().settings.registration.mode == RegistrationMode::Harborlist;
    if p.store.training_announced(&s.uid).await? || (harborlist && has_people(p, &s.id).await?) {
        let (kind, notice) = if s.cancelled {
            ("cancel", Notice::Cancel)
        } else {
            ("update", Notice::Update)
        };
        let stamp = p.clock.now();
        let before = serde_json::from_str::<SnapshotSession>(&previous.snapshot).ok();
        let data = content::notice_data(
            s,
            seq32,
            stamp,
            prodid,
            notice,
            before.as_ref().map(|b| &b.0),
        );
        let mailing = PlannedMailing {
            key: format!("{kind}:{}:{sequence}", s.uid),
            kind: kind.into(),
            template: if s.cancelled {
                "cancellation".into()
            } else {
                "update".into()
            },
            data,
            due_ms: now_ms,
            // A cancellation is moot once the original time has passed; an update once the
            // new time has.
            not_after_ms: Some(if s.cancelled {
                previous.start_ms.max(start_ms)
            } else {
                start_ms
            }),
            training: Some(s.id.clone()),
            // Those registered or waiting hear of it too, on the list or not.
            segment: harborlist.then_some(Segment::Involved),
        };
        if p.store.upsert_planned(&mailing, now_ms, i64::MAX).await? {
            tracing::info!(training = %s.uid, kind, sequence, "training changed after it was announced; notice queued");
            report.notices += 1;
        }
    }
    Ok(seq32)
}

/// Whether anyone is registered, waiting or offered a seat for the session: they need its
/// update or cancellation even if no list mail about it went out yet.
async fn has_people(p: &Planner, session_id: &str) -> Result<bool, StoreError> {
    let counts = p.store.seat_counts().await?;
    Ok(counts
        .get(session_id)
        .is_some_and(|c| c.taken() + c.waitlisted > 0))
}

/// The session as stored in `trainings.snapshot`, so a training removed from the config
/// can still be described in its cancellation notice.
struct SnapshotRef<'a>(&'a Session);

impl serde::Serialize for SnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        serde_json::json!({
            "uid": x.uid, "id": x.id, "capacity": x.capacity, "original_date": x.original_date, "start": x.start.to_rfc3339(),
            "end": x.end.to_rfc3339(), "tz": x.start.timezone().name(), "title": x.title, "topic": x.topic,
            "location": x.location, "registration_url": x.registration_url, "description": x.description,
            "cancelled": x.cancelled, "extra": x.extra,
        })
        .serialize(s)
    }
}

struct SnapshotSession(Session);

impl<'de> serde::Deserialize<'de> for SnapshotSession {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let tz: chrono_tz::Tz = text("tz")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| D::Error::custom("tz"))?;
        let at = |k: &str| {
            text(k)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&tz))
                .ok_or_else(|| D::Error::custom(k.to_owned()))
        };
        let uid = text("uid").ok_or_else(|| D::Error::custom("uid"))?;
        let original_date: chrono::NaiveDate = text("original_date")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| D::Error::custom("original_date"))?;
        let extra = v.get("extra").and_then(|x| x.as_bool()).unwrap_or(false);
        // Snapshots from before sessions had ids: the id is what the UID was built from.
        let id = text("id").unwrap_or_else(|| {
            if extra {
                let inner = uid.strip_prefix("training-").unwrap_or(&uid);
                inner.split_once('@').map_or(inner, |(id, _)| id).to_owned()
            } else {
                original_date.format("%Y-%m-%d").to_string()
            }
        });
        Ok(Self(Session {
            uid,
            id,
            capacity: v
                .get("capacity")
                .and_then(|x| x.as_u64())
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(crate::calendar::DEFAULT_CAPACITY),
            original_date,
            start: at("start")?,
            end: at("end")?,
            title: text("title").unwrap_or_default(),
            topic: text("topic"),
            location: text("location").unwrap_or_default(),
            registration_url: text("registration_url"),
            description: text("description").unwrap_or_default(),
            cancelled: v
                .get("cancelled")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            extra,
        }))
    }
}
