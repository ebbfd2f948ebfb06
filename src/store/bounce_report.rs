//! What came back from the receiving side, summed up for staff: the numbers behind the
//! "Bounces and complaints" section of `harborlist status`, and the last report about a
//! subscriber that `subscribers list --status bouncing` shows.
//!
//! Read-only, over `bounce_events` (written by [`super::bounces`] and the recorder). The
//! caller says what "now" is; nothing in here reads the clock.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store, bounces::Effect};
use crate::domain::ReportKind;

/// The reports received in a window, counted so that each lands in one bucket: a report
/// that matched nothing harborlist sent is only `unmatched`, a policy rejection only in
/// `policy_by_domain`, a complaint only in `complaints`. `became_bouncing` is the one
/// number that overlaps: those are also among the hard and soft bounces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BounceSummary {
    /// How far back it looks.
    pub days: i64,
    /// Permanent failures about something we sent (including refusals at send time).
    pub hard: i64,
    /// Temporary failures given up on.
    pub soft: i64,
    /// Still trying: counted, changes nothing.
    pub delayed: i64,
    /// Spam complaints, each of which unsubscribed the person.
    pub complaints: i64,
    pub auto_replies: i64,
    /// Bounces that made an active subscriber `bouncing` (they get no list mail now).
    pub became_bouncing: i64,
    /// Policy rejections (5.7.x) by receiving domain, most first.
    pub policy_by_domain: Vec<DomainCount>,
    /// Reports about nothing harborlist sent (forged, or for someone else's mail).
    pub unmatched: i64,
}

impl BounceSummary {
    pub fn policy_total(&self) -> i64 {
        self.policy_by_domain.iter().map(|d| d.count).sum()
    }

    /// Whether anything came back at all.
    pub fn is_empty(&self) -> bool {
        self.hard == 0
            && self.soft == 0
            && self.delayed == 0
            && self.complaints == 0
            && self.auto_replies == 0
            && self.unmatched == 0
            && self.policy_by_domain.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainCount {
    /// The receiving domain, lower-case; empty when the report did not say.
    pub domain: String,
    pub count: i64,
}

/// The most recent report about one subscriber, as `subscribers list` shows it; every
/// field is `None` when there is none (a person made `bouncing` by hand, say).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LastBounce {
    /// When it was received, RFC 3339 UTC.
    pub last_bounce_at: Option<String>,
    /// Its RFC 3463 status code, e.g. 5.1.1.
    pub last_status: Option<String>,
    /// The receiver's words.
    pub last_diagnostic: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

impl Store {
    /// The reports received in the `days` before `now_ms` (see [`BounceSummary`]).
    pub async fn bounce_summary(&self, now_ms: i64, days: i64) -> Result<BounceSummary> {
        let since = now_ms - days * DAY_MS;
        // Kinds and effects are bound from their types, so the text in the table and the
        // one counted here cannot drift apart.
        let row = sqlx::query(
            "SELECT
                 COUNT(CASE WHEN kind = $2 AND effect NOT IN ($7, $8) THEN 1 END) AS hard,
                 COUNT(CASE WHEN kind = $3 AND effect NOT IN ($7, $8) THEN 1 END) AS soft,
                 COUNT(CASE WHEN kind = $4 THEN 1 END) AS delayed,
                 COUNT(CASE WHEN kind = $5 AND effect = $9 THEN 1 END) AS complaints,
                 COUNT(CASE WHEN kind = $6 THEN 1 END) AS auto_replies,
                 COUNT(CASE WHEN effect = $10 THEN 1 END) AS became_bouncing,
                 COUNT(CASE WHEN effect = $7 THEN 1 END) AS unmatched
             FROM bounce_events WHERE received_at > $1",
        )
        .bind(since)
        .bind(ReportKind::Hard.as_str())
        .bind(ReportKind::Soft.as_str())
        .bind(ReportKind::Delayed.as_str())
        .bind(ReportKind::Complaint.as_str())
        .bind(ReportKind::AutoReply.as_str())
        .bind(Effect::Unmatched.as_str())
        .bind(Effect::Policy.as_str())
        .bind(Effect::Unsubscribed.as_str())
        .bind(Effect::Bouncing { score: 0.0 }.as_str())
        .fetch_one(self.pool())
        .await?;
        let domains = sqlx::query(
            "SELECT COALESCE(recipient_domain, '') AS d, COUNT(*) AS n FROM bounce_events
             WHERE received_at > $1 AND effect = $2
             GROUP BY COALESCE(recipient_domain, '') ORDER BY n DESC, d",
        )
        .bind(since)
        .bind(Effect::Policy.as_str())
        .fetch_all(self.pool())
        .await?;
        Ok(BounceSummary {
            days,
            hard: row.try_get("hard")?,
            soft: row.try_get("soft")?,
            delayed: row.try_get("delayed")?,
            complaints: row.try_get("complaints")?,
            auto_replies: row.try_get("auto_replies")?,
            became_bouncing: row.try_get("became_bouncing")?,
            policy_by_domain: domains
                .iter()
                .map(|r| {
                    Ok(DomainCount {
                        domain: r.try_get("d")?,
                        count: r.try_get("n")?,
                    })
                })
                .collect::<Result<_>>()?,
            unmatched: row.try_get("unmatched")?,
        })
    }
}
