//! The sender's side of the outbox: deliveries claimed, and their leases.
//!
//! The sender
//!
//! 1. [`Store::claim`]s due rows under a lease (`UPDATE … RETURNING`; on PostgreSQL with
//!    `FOR UPDATE SKIP LOCKED`, so several instances never claim the same row),
//! 2. sends them, and
//! 3. records their outcomes through a [`Recorder`](super::record::Recorder) (see
//!    [`super::record`]).
//!
//! A live sender renews its lease ([`Store::extend_lease`]). A sender that dies leaves rows
//! in `sending`; [`Store::requeue_expired`] folds the sent log (what it had recorded) and
//! returns the rest to the queue when their lease runs out. So a message can be repeated
//! (if the process died after SMTP accepted it but before the record), but it is never
//! lost, and a recorded one is never sent again.

use std::{collections::HashMap, sync::Arc};

use sqlx::{AssertSqlSafe, Row};

use super::{Backend, Result, Store, bind_ids, placeholders, record::RECORD_CHUNK};

/// One claimed delivery with everything needed to render and send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub attempts: i64,
    /// Shared by every delivery of the mailing in the claim: its data is read and parsed
    /// once per claim, not once per recipient.
    pub mailing: Arc<ClaimedMailing>,
    pub subscriber_id: i64,
    pub email: String,
    pub name: Option<String>,
    pub status: String,
    pub unsub_nonce: String,
    /// The recipient's registration for the mailing's training, if it is about one and they
    /// have one: its status and the nonce its links derive from.
    pub registration: Option<ClaimedRegistration>,
}

/// A claimed recipient's registration for the training their mail is about.
#[derive(Debug, Clone)]
pub struct ClaimedRegistration {
    pub status: super::registrations::RegStatus,
    pub nonce: String,
    pub offer_expires_ms: Option<i64>,
}

/// The mailing a claimed delivery belongs to.
#[derive(Debug, Clone)]
pub struct ClaimedMailing {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub template: String,
    /// The stored template data, parsed.
    pub data: serde_json::Value,
    pub not_after_ms: Option<i64>,
    /// The session it is about (its id), if any.
    pub training: Option<String>,
    /// Who of the list it goes to (`None`: active subscribers).
    pub segment: Option<super::queue::Segment>,
}

fn claimed_registration(r: &sqlx::any::AnyRow) -> Result<Option<ClaimedRegistration>> {
    let Some(status) = r.try_get::<Option<String>, _>("reg_status")? else {
        return Ok(None);
    };
    Ok(Some(ClaimedRegistration {
        status: super::registrations::RegStatus::parse(&status)?,
        nonce: r
            .try_get::<Option<String>, _>("reg_nonce")?
            .unwrap_or_default(),
        offer_expires_ms: r.try_get("reg_offer_expires")?,
    }))
}

impl Store {
    /// Claims up to `limit` due deliveries for `owner` until `lease_until_ms`.
    pub async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>> {
        let claim_sql = match self.backend() {
            Backend::Sqlite => {
                "UPDATE deliveries SET state = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM deliveries WHERE state = 'queued' AND next_attempt_at <= $3
                              ORDER BY priority, next_attempt_at LIMIT $4)"
            }
            Backend::Postgres => {
                "UPDATE deliveries SET state = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM deliveries WHERE state = 'queued' AND next_attempt_at <= $3
                              ORDER BY priority, next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)"
            }
        };
        let claimed = sqlx::query(claim_sql)
            .bind(owner)
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(limit)
            .execute(self.pool())
            .await?;
        if claimed.rows_affected() == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT d.id AS delivery_id, d.attempts, d.mailing_id, s.id AS subscriber_id, s.email,
                    s.name, s.status, s.unsub_nonce,
                    r.status AS reg_status, r.nonce AS reg_nonce, r.offer_expires_at AS reg_offer_expires
             FROM deliveries d
             JOIN subscribers s ON s.id = d.subscriber_id
             JOIN mailings m ON m.id = d.mailing_id
             LEFT JOIN registrations r ON r.subscriber_id = d.subscriber_id AND r.session_id = m.training
             WHERE d.lease_owner = $1 AND d.state = 'sending'
             ORDER BY d.priority, d.id",
        )
        .bind(owner)
        .fetch_all(self.pool())
        .await?;
        let mut mailing_ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get("mailing_id"))
            .collect::<std::result::Result<_, _>>()?;
        mailing_ids.sort_unstable();
        mailing_ids.dedup();
        let mailings = self.claimed_mailings(&mailing_ids).await?;
        rows.iter()
            .map(|r| {
                let mailing_id: i64 = r.try_get("mailing_id")?;
                let mailing = mailings.get(&mailing_id).cloned().ok_or_else(|| {
                    super::StoreError::Corrupt(format!(
                        "delivery for mailing {mailing_id}, which does not exist"
                    ))
                })?;
                Ok(Claimed {
                    delivery_id: r.try_get("delivery_id")?,
                    attempts: r.try_get("attempts")?,
                    mailing,
                    subscriber_id: r.try_get("subscriber_id")?,
                    email: r.try_get("email")?,
                    name: r.try_get("name")?,
                    status: r.try_get("status")?,
                    unsub_nonce: r.try_get("unsub_nonce")?,
                    registration: claimed_registration(r)?,
                })
            })
            .collect()
    }

    /// The mailings of a claim, by id, each with its data parsed once.
    async fn claimed_mailings(&self, ids: &[i64]) -> Result<HashMap<i64, Arc<ClaimedMailing>>> {
        let mut mailings = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(RECORD_CHUNK) {
            let sql = format!(
                "SELECT id, key, kind, template, data, not_after, training, segment FROM mailings WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let query = bind_ids(sqlx::query(AssertSqlSafe(sql)), chunk);
            for r in query.fetch_all(self.pool()).await? {
                let id: i64 = r.try_get("id")?;
                let key: String = r.try_get("key")?;
                let data: String = r.try_get("data")?;
                // Unreadable data must not stop the queue: the message then fails to
                // render and is recorded as failed, with the reason, like any bad template.
                let data = serde_json::from_str(&data).unwrap_or_else(|e| {
                    tracing::error!(mailing = %key, error = %e, "mailing data is unreadable");
                    serde_json::Value::Null
                });
                let mailing = ClaimedMailing {
                    id,
                    key,
                    kind: r.try_get("kind")?,
                    template: r.try_get("template")?,
                    data,
                    not_after_ms: r.try_get("not_after")?,
                    training: r.try_get("training")?,
                    segment: super::queue::Segment::parse(
                        r.try_get::<Option<String>, _>("segment")?.as_deref(),
                    )?,
                };
                mailings.insert(id, Arc::new(mailing));
            }
        }
        Ok(mailings)
    }

    /// Puts back everything still claimed by `owner` without counting an attempt: for a
    /// claim that the sender never saw succeed, so never sent.
    pub async fn release_claim(&self, owner: &str) -> Result<u64> {
        self.settle_sent().await?;
        let res = sqlx::query(
            "UPDATE deliveries SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, lease_until = NULL
             WHERE lease_owner = $1 AND state = 'sending'",
        )
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected())
    }

    /// Moves the lease on everything `owner` still holds to `lease_until_ms`: a live sender
    /// keeps its claim however long its batch takes.
    pub async fn extend_lease(&self, owner: &str, lease_until_ms: i64) -> Result<u64> {
        let res = sqlx::query(
            "UPDATE deliveries SET lease_until = $1 WHERE lease_owner = $2 AND state = 'sending'",
        )
        .bind(lease_until_ms)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected())
    }

    /// Returns deliveries whose lease ran out (their sender died) to the queue.
    pub async fn requeue_expired(&self, now_ms: i64) -> Result<u64> {
        // A dead sender's last records may still be in the sent log: fold them first, or
        // their messages would be queued and sent again.
        self.settle_sent().await?;
        let res = sqlx::query(
            "UPDATE deliveries SET state = 'queued', lease_owner = NULL, lease_until = NULL, next_attempt_at = $1
             WHERE state = 'sending' AND lease_until < $1",
        )
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected())
    }

    /// Deliveries waiting to be sent now or later (queued or in flight).
    pub async fn queue_depth(&self) -> Result<i64> {
        // Two counts, not `state IN (…)`: each is answered from its partial index. On
        // PostgreSQL a delivery recorded as sent stays `sending` until the sent log is
        // folded, which waits for the sender to be idle; the log's rows are not waiting.
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'queued')
                          + (SELECT COUNT(*) FROM deliveries WHERE state = 'sending') AS n"
            }
            Backend::Postgres => {
                "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'queued')
                          + GREATEST((SELECT COUNT(*) FROM deliveries WHERE state = 'sending')
                                     - (SELECT COUNT(*) FROM sent_log), 0) AS n"
            }
        };
        Ok(sqlx::query(sql)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?)
    }

    /// The earliest `next_attempt_at` among queued deliveries, so the sender can sleep.
    pub async fn next_delivery_due(&self) -> Result<Option<i64>> {
        Ok(
            sqlx::query(
                "SELECT MIN(next_attempt_at) AS due FROM deliveries WHERE state = 'queued'",
            )
            .fetch_one(self.pool())
            .await?
            .try_get("due")?,
        )
    }
}
