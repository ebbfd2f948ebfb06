//! The sender's side of the outbox: deliveries claimed, their outcomes recorded.
//!
//! The sender
//!
//! 1. [`Store::claim`]s due rows under a lease (`UPDATE … RETURNING`; on PostgreSQL with
//!    `FOR UPDATE SKIP LOCKED`, so several instances never claim the same row),
//! 2. sends them, and
//! 3. [`Store::record`]s their outcomes, a group at a time (one `UPDATE` for a group of
//!    messages sent, one transaction otherwise).
//!
//! A sender that dies leaves rows in `sending`; [`Store::requeue_expired`] returns them to
//! the queue when their lease runs out. So a message can be repeated (if the process died
//! after SMTP accepted it but before the record), but it is never lost.

use std::{collections::HashMap, sync::Arc};

use sqlx::{
    Any, AssertSqlSafe, Connection, Row, Transaction, any::AnyArguments, pool::PoolConnection,
    query::Query,
};

use super::{Backend, Result, Store, placeholders};

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
    /// Permanent failures in a row when claimed. Only a non-zero run needs a write when
    /// the message is delivered, so the common record is one statement.
    pub bounce_streak: i64,
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
}

/// What happened to one claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        delivery_id: i64,
        subscriber_id: i64,
        /// A list message reached an address with a run of bounces: the run ends.
        clears_bounces: bool,
    },
    Retry {
        delivery_id: i64,
        at_ms: i64,
        error: String,
    },
    /// Permanent: a 5xx, or retries exhausted. `bounce` counts toward marking the address
    /// as bouncing.
    Failed {
        delivery_id: i64,
        subscriber_id: i64,
        error: String,
        bounce: bool,
    },
    Skipped {
        delivery_id: i64,
        reason: String,
    },
    /// Not attempted (shutdown): back to the queue without using up an attempt.
    Released {
        delivery_id: i64,
    },
}

/// Deliveries per statement when recording: well under SQLite's 32,766 parameters, and
/// few distinct statement texts for the prepared-statement cache.
const RECORD_CHUNK: usize = 256;

/// PostgreSQL sessions that record outcomes, per process.
pub(super) const RECORD_SESSIONS: u32 = 3;

/// How many permanent failures in a row, across mailings, make an address "bouncing".
pub const BOUNCE_LIMIT: i64 = 3;

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
                    s.name, s.status, s.unsub_nonce, s.bounce_streak
             FROM deliveries d
             JOIN subscribers s ON s.id = d.subscriber_id
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
                    bounce_streak: r.try_get("bounce_streak")?,
                })
            })
            .collect()
    }

    /// The mailings of a claim, by id, each with its data parsed once.
    async fn claimed_mailings(&self, ids: &[i64]) -> Result<HashMap<i64, Arc<ClaimedMailing>>> {
        let mut mailings = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(RECORD_CHUNK) {
            let sql = format!(
                "SELECT id, key, kind, template, data, not_after FROM mailings WHERE id IN ({})",
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
                };
                mailings.insert(id, Arc::new(mailing));
            }
        }
        Ok(mailings)
    }

    /// How many recorders may write at once: one on SQLite, which has one writer at a time
    /// anyway; on PostgreSQL, as many as the recording pool has sessions.
    pub fn record_writers(&self) -> usize {
        match self.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => RECORD_SESSIONS as usize,
        }
    }

    /// A session for recording a claim's outcomes (see [`Recorder`]).
    pub async fn recorder(&self) -> Result<Recorder> {
        Ok(Recorder {
            conn: self.records.acquire().await?,
            backend: self.backend(),
        })
    }

    /// Puts back everything still claimed by `owner` without counting an attempt: for a
    /// claim that the sender never saw succeed, so never sent.
    pub async fn release_claim(&self, owner: &str) -> Result<u64> {
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
        Ok(sqlx::query(
            // Two counts, not `state IN (…)`: each is answered from its partial index.
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE state = 'queued')
                      + (SELECT COUNT(*) FROM deliveries WHERE state = 'sending') AS n",
        )
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

/// Marks `ids` sent, where `owner` still holds them.
/// One database session that records outcomes, kept for a whole claim. Taking a pooled
/// connection for each write cost a round trip more than the write: sqlx checks a
/// connection as it goes back to the pool. A recorder whose write failed should be
/// dropped; the next one gets a fresh session.
pub struct Recorder {
    conn: PoolConnection<Any>,
    backend: Backend,
}

impl Recorder {
    /// Writes a batch of outcomes atomically. Rows whose lease passed to another owner in
    /// the meantime are left alone (that owner records them).
    ///
    /// This is the sender's hot path. Nearly every batch is only messages sent to addresses
    /// without bounces, and that is one `UPDATE`, atomic on its own, without `BEGIN`/`COMMIT`
    /// round trips. Anything else goes in one transaction, the rare outcomes one statement
    /// each.
    pub async fn record(&mut self, owner: &str, outcomes: &[Outcome], now_ms: i64) -> Result<()> {
        let mut sent = Vec::new();
        let mut clear_bounces = Vec::new();
        for outcome in outcomes {
            if let Outcome::Sent {
                delivery_id,
                subscriber_id,
                clears_bounces,
            } = outcome
            {
                sent.push(*delivery_id);
                if *clears_bounces {
                    clear_bounces.push(*subscriber_id);
                }
            }
        }
        let only_sent =
            sent.len() == outcomes.len() && clear_bounces.is_empty() && sent.len() <= RECORD_CHUNK;
        if only_sent {
            if !sent.is_empty() {
                record_sent(&mut *self.conn, owner, &sent, now_ms).await?;
            }
            return Ok(());
        }
        // On SQLite the write lock is taken up front, as in `Store::begin`.
        let mut tx = match self.backend {
            Backend::Sqlite => self.conn.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.conn.begin().await?,
        };
        for ids in sent.chunks(RECORD_CHUNK) {
            record_sent(&mut *tx, owner, ids, now_ms).await?;
        }
        for ids in clear_bounces.chunks(RECORD_CHUNK) {
            let sql = format!(
                "UPDATE subscribers SET bounce_streak = 0 WHERE id IN ({})",
                placeholders(1, ids.len())
            );
            bind_ids(sqlx::query(AssertSqlSafe(sql)), ids)
                .execute(&mut *tx)
                .await?;
        }
        for outcome in outcomes {
            match outcome {
                Outcome::Sent { .. } => {}
                Outcome::Retry {
                    delivery_id,
                    at_ms,
                    error,
                } => {
                    sqlx::query(
                        "UPDATE deliveries SET state = 'queued', next_attempt_at = $1, last_error = $2, lease_owner = NULL, lease_until = NULL
                         WHERE id = $3 AND lease_owner = $4",
                    )
                    .bind(at_ms)
                    .bind(error)
                    .bind(delivery_id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                }
                Outcome::Failed {
                    delivery_id,
                    subscriber_id,
                    error,
                    bounce,
                } => {
                    let closed = close(&mut tx, "failed", error, *delivery_id, owner).await?;
                    if *bounce && closed > 0 {
                        sqlx::query(
                            "UPDATE subscribers SET bounce_streak = bounce_streak + 1,
                                 status = CASE WHEN bounce_streak + 1 >= $1 AND status = 'active' THEN 'bouncing' ELSE status END,
                                 updated_at = $2
                             WHERE id = $3",
                        )
                        .bind(BOUNCE_LIMIT)
                        .bind(now_ms)
                        .bind(subscriber_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                Outcome::Skipped {
                    delivery_id,
                    reason,
                } => {
                    close(&mut tx, "skipped", reason, *delivery_id, owner).await?;
                }
                Outcome::Released { delivery_id } => {
                    sqlx::query(
                        "UPDATE deliveries SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, lease_until = NULL
                         WHERE id = $1 AND lease_owner = $2",
                    )
                    .bind(delivery_id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Ends a claimed row in `state` (`failed` or `skipped`) with `note` as its last error, if
/// `owner` still holds it. Returns the rows changed: 0 if the lease has passed on.
async fn close(
    tx: &mut Transaction<'_, Any>,
    state: &'static str,
    note: &str,
    delivery_id: i64,
    owner: &str,
) -> Result<u64> {
    let closed = sqlx::query(
        "UPDATE deliveries SET state = $1, last_error = $2, lease_owner = NULL, lease_until = NULL
         WHERE id = $3 AND lease_owner = $4",
    )
    .bind(state)
    .bind(note)
    .bind(delivery_id)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(closed.rows_affected())
}

async fn record_sent<'e, E>(executor: E, owner: &str, ids: &[i64], now_ms: i64) -> Result<()>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let sql = format!(
        "UPDATE deliveries SET state = 'sent', sent_at = $1, lease_owner = NULL, lease_until = NULL, last_error = NULL
         WHERE lease_owner = $2 AND id IN ({})",
        placeholders(3, ids.len())
    );
    bind_ids(
        sqlx::query(AssertSqlSafe(sql)).bind(now_ms).bind(owner),
        ids,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// `ids`, bound in order: the values for an `IN (…)` list made by [`placeholders`].
fn bind_ids<'q>(
    mut query: Query<'q, Any, AnyArguments>,
    ids: &[i64],
) -> Query<'q, Any, AnyArguments> {
    for id in ids {
        query = query.bind(*id);
    }
    query
}
