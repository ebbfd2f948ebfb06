//! What a report from the receiving side does to a subscriber, in one transaction.
//!
//! Every report (per recipient it names) is first a row in `bounce_events`, under a key
//! that makes reading it twice a no-op: a crash between recording it and moving the
//! message out of the mailbox, or a report that arrives both by IMAP and by the listener,
//! changes the score once. Then, under the same transaction:
//!
//! - a report that matches nothing harborlist sent is `unmatched` and changes no one (a
//!   forged bounce can't remove anybody);
//! - a complaint unsubscribes at once, with reason `complaint`;
//! - a policy rejection (5.7.x) is counted by receiving domain, not against the person;
//! - a hard (+1) or soft (+`soft_weight`) bounce raises the score, at most once per day per
//!   subscriber, from 0 again if the score is stale; reaching the threshold makes an active
//!   subscriber `bouncing`.
//!
//! A refusal at send time (a 5xx at `RCPT`, see `record.rs`) raises the same score with
//! [`raise_score`].

use sqlx::{Any, Row, Transaction};

use super::{Result, Store, StoreError};
use crate::domain::{ReportKind, StatusCode};

/// The scoring rules (`[bounces]`), as numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BounceRules {
    pub soft_weight: f64,
    pub threshold: f64,
    pub stale_after_ms: i64,
}

impl Default for BounceRules {
    fn default() -> Self {
        Self {
            soft_weight: 0.5,
            threshold: 3.0,
            stale_after_ms: 30 * 86_400_000,
        }
    }
}

/// Where a report came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    Imap,
    Listener,
    /// The relay's own refusal while sending.
    Send,
}

impl ReportSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imap => "imap",
            Self::Listener => "listener",
            Self::Send => "send",
        }
    }
}

/// What harborlist sent that a report is about, as the report identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// A verified VERP tag: this delivery, whatever address the report names (forwarding
    /// changes it).
    Delivery(i64),
    /// Our Message-ID in the returned headers (`hl.<mailing hash>.<subscriber>@…`): it
    /// counts only if that subscriber's address is the one the report names and the
    /// message was sent to it, since anyone can write a Message-ID.
    MessageId {
        mailing_hash: String,
        subscriber_id: i64,
        recipient: String,
    },
    /// Nothing of ours.
    None,
}

/// One report about one recipient, ready to record.
#[derive(Debug, Clone)]
pub struct ReportEvent {
    /// Identifies the report and recipient: the same report read twice has the same key.
    pub key: String,
    pub source: ReportSource,
    pub kind: ReportKind,
    pub status: Option<StatusCode>,
    /// The receiver's words, addresses already shortened.
    pub diagnostic: Option<String>,
    pub recipient_domain: Option<String>,
    pub target: ReportTarget,
    /// The list's local day (days since the epoch), for "at most once per day".
    pub day: i64,
    pub now_ms: i64,
}

/// What recording a report did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Seen before (same report key): nothing done again.
    Duplicate,
    /// Not about anything we sent, or a made-up tag: recorded, nobody changed.
    Unmatched,
    /// Delayed, auto-reply, not a report: recorded, nothing else.
    Ignored,
    /// A policy rejection (5.7.x): counted for the receiving domain.
    Policy,
    /// A complaint: the subscriber is unsubscribed.
    Unsubscribed,
    /// A bounce already scored for this subscriber today.
    OncePerDay,
    /// The score rose to `score`.
    Scored { score: f64 },
    /// The score reached the threshold: the subscriber is now bouncing.
    Bouncing { score: f64 },
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Unmatched => "unmatched",
            Self::Ignored => "ignored",
            Self::Policy => "policy",
            Self::Unsubscribed => "unsubscribed",
            Self::OncePerDay => "once-a-day",
            Self::Scored { .. } => "scored",
            Self::Bouncing { .. } => "bouncing",
        }
    }

    fn score(self) -> Option<f64> {
        match self {
            Self::Scored { score } | Self::Bouncing { score } => Some(score),
            _ => None,
        }
    }
}

/// Longest diagnostic kept: enough for any SMTP reply, not a stored copy of a message.
const DIAGNOSTIC_MAX: usize = 500;

impl Store {
    /// Records `event` and does what it means, in one transaction (see the module doc).
    pub async fn record_report(&self, event: &ReportEvent, rules: &BounceRules) -> Result<Effect> {
        let mut tx = self.begin().await?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO bounce_events (report_key, received_at, source, kind, effect, status, diagnostic, recipient_domain)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)
             ON CONFLICT (report_key) DO NOTHING RETURNING id",
        )
        .bind(&event.key)
        .bind(event.now_ms)
        .bind(event.source.as_str())
        .bind(event.kind.as_str())
        .bind(event.status.map(|s| s.to_string()))
        .bind(event.diagnostic.as_deref().map(|d| clip(d, DIAGNOSTIC_MAX)))
        .bind(event.recipient_domain.as_deref())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(event_id) = inserted else {
            tx.rollback().await?;
            return Ok(Effect::Duplicate);
        };
        let matched = match event.kind {
            ReportKind::Delayed | ReportKind::AutoReply | ReportKind::NotAReport => None,
            _ => matched_delivery(&mut tx, &event.target).await?,
        };
        let effect = match (event.kind, matched) {
            (ReportKind::Delayed | ReportKind::AutoReply | ReportKind::NotAReport, _) => {
                Effect::Ignored
            }
            (_, None) => Effect::Unmatched,
            (ReportKind::Complaint, Some(m)) => {
                complain(&mut tx, m.subscriber_id, event.now_ms).await?
            }
            (_, Some(_)) if event.status.is_some_and(StatusCode::is_policy) => Effect::Policy,
            (kind, Some(m)) => {
                let weight = if kind == ReportKind::Hard {
                    1.0
                } else {
                    rules.soft_weight
                };
                score_report(&mut tx, m.subscriber_id, weight, event, rules).await?
            }
        };
        sqlx::query(
            "UPDATE bounce_events SET effect = $1, subscriber_id = $2, delivery_id = $3, score = $4 WHERE id = $5",
        )
        .bind(effect.as_str())
        .bind(matched.map(|m| m.subscriber_id))
        .bind(matched.map(|m| m.delivery_id))
        .bind(effect.score())
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(effect)
    }
}

#[derive(Debug, Clone, Copy)]
struct Matched {
    delivery_id: i64,
    subscriber_id: i64,
}

/// The delivery a report is about, if it is one of ours.
async fn matched_delivery(
    tx: &mut Transaction<'static, Any>,
    target: &ReportTarget,
) -> Result<Option<Matched>> {
    match target {
        ReportTarget::None => Ok(None),
        ReportTarget::Delivery(id) => {
            let row = sqlx::query("SELECT id, subscriber_id FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            row.map(|r| {
                Ok(Matched {
                    delivery_id: r.try_get("id")?,
                    subscriber_id: r.try_get("subscriber_id")?,
                })
            })
            .transpose()
        }
        ReportTarget::MessageId {
            mailing_hash,
            subscriber_id,
            recipient,
        } => {
            // Only messages that left, to the address the report names: a Message-ID can
            // be guessed, the pair of it and the right address less so. `sending` counts
            // too: on PostgreSQL an accepted message is marked sent a moment later (the
            // sent log is folded in groups), and a quick DSN can arrive in between.
            let rows = sqlx::query(
                "SELECT d.id, m.key FROM deliveries d
                   JOIN mailings m ON m.id = d.mailing_id
                   JOIN subscribers s ON s.id = d.subscriber_id
                  WHERE d.subscriber_id = $1 AND d.state IN ('sent', 'sending') AND s.email_key = $2",
            )
            .bind(subscriber_id)
            .bind(recipient.to_lowercase())
            .fetch_all(&mut **tx)
            .await?;
            for r in rows {
                let key: String = r.try_get("key")?;
                if mailing_hash_of(&key) == *mailing_hash {
                    return Ok(Some(Matched {
                        delivery_id: r.try_get("id")?,
                        subscriber_id: *subscriber_id,
                    }));
                }
            }
            Ok(None)
        }
    }
}

/// The mailing part of our Message-ID (`hl.<this>.<subscriber>@list`): the first 64 bits
/// of SHA-256 of the mailing key, in hex. `mail::Composer::message_id` writes it.
pub fn mailing_hash_of(mailing_key: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::domain::hex(&Sha256::digest(mailing_key.as_bytes())[..8])
}

async fn complain(
    tx: &mut Transaction<'static, Any>,
    subscriber_id: i64,
    now_ms: i64,
) -> Result<Effect> {
    let changed = sqlx::query(
        "UPDATE subscribers SET status = 'unsubscribed', unsubscribe_reason = 'complaint',
             unsubscribed_at = $1, updated_at = $1
         WHERE id = $2 AND status IN ('active', 'bouncing')",
    )
    .bind(now_ms)
    .bind(subscriber_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        // Not on the list any more (they left, or only registered for a training): the
        // complaint is on record and there is nobody to take off.
        return Ok(Effect::Ignored);
    }
    super::subscriptions::spend_open_tokens(tx, subscriber_id, now_ms).await?;
    Ok(Effect::Unsubscribed)
}

/// A bounce report's score, once per subscriber per day.
async fn score_report(
    tx: &mut Transaction<'static, Any>,
    subscriber_id: i64,
    weight: f64,
    event: &ReportEvent,
    rules: &BounceRules,
) -> Result<Effect> {
    let day: Option<i64> =
        sqlx::query_scalar("SELECT bounce_scored_day FROM subscribers WHERE id = $1")
            .bind(subscriber_id)
            .fetch_optional(&mut **tx)
            .await?
            .flatten();
    if day == Some(event.day) {
        return Ok(Effect::OncePerDay);
    }
    sqlx::query("UPDATE subscribers SET bounce_scored_day = $1 WHERE id = $2")
        .bind(event.day)
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    raise_score(tx, subscriber_id, weight, rules, event.now_ms).await
}

/// Adds `weight` to the subscriber's score (from 0 if it is stale) and makes an active
/// subscriber bouncing at the threshold. One statement, so two at once both count.
pub(super) async fn raise_score(
    conn: &mut sqlx::AnyConnection,
    subscriber_id: i64,
    weight: f64,
    rules: &BounceRules,
    now_ms: i64,
) -> Result<Effect> {
    let score: Option<f64> = sqlx::query_scalar(
        "UPDATE subscribers SET
             bounce_score = CASE WHEN bounce_raised_at IS NULL OR bounce_raised_at < $1 THEN 0 ELSE bounce_score END + $2,
             bounce_raised_at = $3, updated_at = $3
         WHERE id = $4
         RETURNING bounce_score",
    )
    .bind(now_ms - rules.stale_after_ms)
    .bind(weight)
    .bind(now_ms)
    .bind(subscriber_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(score) = score else {
        return Err(StoreError::Corrupt(format!(
            "delivery names subscriber {subscriber_id}, who does not exist"
        )));
    };
    // Its own statement, so that of two reports at once only one sees the change.
    let became = sqlx::query(
        "UPDATE subscribers SET status = 'bouncing' WHERE id = $1 AND status = 'active' AND bounce_score >= $2",
    )
    .bind(subscriber_id)
    .bind(rules.threshold)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(if became > 0 {
        Effect::Bouncing { score }
    } else {
        Effect::Scored { score }
    })
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}
