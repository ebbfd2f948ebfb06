//! Read-only summaries for `harborlist status`.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Store};

#[derive(Debug, Clone, Serialize)]
pub struct MailingSummary {
    pub key: String,
    pub kind: String,
    pub state: String,
    pub due_ms: i64,
    /// For planned list mailings: the active subscribers now (the audience is fixed at the
    /// due time). Otherwise: deliveries written.
    pub audience: i64,
    pub sent: i64,
    pub failed: i64,
    pub pending: i64,
    pub skipped: i64,
}

impl Store {
    pub async fn active_subscribers(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM subscribers WHERE status = 'active'")
                .fetch_one(self.pool())
                .await?
                .try_get("n")?,
        )
    }

    /// Planned list mailings, soonest first.
    pub async fn upcoming_mailings(&self, limit: i64) -> Result<Vec<MailingSummary>> {
        let audience = self.active_subscribers().await?;
        let rows = sqlx::query(
            "SELECT key, kind, state, due_at FROM mailings WHERE state = 'planned' AND audience = 'list'
             ORDER BY due_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MailingSummary {
                    key: r.try_get("key")?,
                    kind: r.try_get("kind")?,
                    state: r.try_get("state")?,
                    due_ms: r.try_get("due_at")?,
                    audience,
                    sent: 0,
                    failed: 0,
                    pending: 0,
                    skipped: 0,
                })
            })
            .collect()
    }

    /// List mailings that went out (or were closed), most recent first, with delivery counts.
    pub async fn recent_mailings(&self, limit: i64) -> Result<Vec<MailingSummary>> {
        let rows = sqlx::query(
            "SELECT m.key, m.kind, m.state, m.due_at,
                    COUNT(d.id) AS total,
                    COUNT(CASE WHEN d.state = 'sent' THEN 1 END) AS sent,
                    COUNT(CASE WHEN d.state = 'failed' THEN 1 END) AS failed,
                    COUNT(CASE WHEN d.state IN ('queued', 'sending') THEN 1 END) AS pending,
                    COUNT(CASE WHEN d.state = 'skipped' THEN 1 END) AS skipped
             FROM mailings m LEFT JOIN deliveries d ON d.mailing_id = m.id
             WHERE m.audience = 'list' AND m.state <> 'planned'
             GROUP BY m.id, m.key, m.kind, m.state, m.due_at
             ORDER BY m.due_at DESC, m.id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MailingSummary {
                    key: r.try_get("key")?,
                    kind: r.try_get("kind")?,
                    state: r.try_get("state")?,
                    due_ms: r.try_get("due_at")?,
                    audience: r.try_get("total")?,
                    sent: r.try_get("sent")?,
                    failed: r.try_get("failed")?,
                    pending: r.try_get("pending")?,
                    skipped: r.try_get("skipped")?,
                })
            })
            .collect()
    }

    /// Personal mail (confirmations, welcomes, goodbyes) since `since_ms`: (sent, failed, pending).
    pub async fn personal_mail_since(&self, since_ms: i64) -> Result<(i64, i64, i64)> {
        let r = sqlx::query(
            "SELECT COUNT(CASE WHEN d.state = 'sent' THEN 1 END) AS sent,
                    COUNT(CASE WHEN d.state = 'failed' THEN 1 END) AS failed,
                    COUNT(CASE WHEN d.state IN ('queued', 'sending') THEN 1 END) AS pending
             FROM deliveries d JOIN mailings m ON m.id = d.mailing_id
             WHERE m.audience = 'one' AND m.created_at >= $1",
        )
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?;
        Ok((
            r.try_get("sent")?,
            r.try_get("failed")?,
            r.try_get("pending")?,
        ))
    }
}
