//! The durable outbox: mailings and their deliveries.
//!
//! A mailing is one thing sent to an audience, under a natural key (`confirm:…`,
//! `reminder:<training>:<name>`, `announcement:<id>`) so that planning it twice is a no-op.
//! Fan-out turns a due list mailing into one `deliveries` row per active subscriber, in
//! batches, `ON CONFLICT DO NOTHING`. The sender then:
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

use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::{Backend, Result, Store, placeholders};

/// Transactional mail (a person is waiting for it) goes before list mail.
pub const PRIORITY_PERSONAL: i64 = 0;
pub const PRIORITY_LIST: i64 = 1;

/// A mailing to one subscriber, written in the caller's transaction together with the row
/// change that caused it.
pub struct SingleMail {
    pub key: String,
    pub kind: &'static str,
    pub template: &'static str,
    pub data: serde_json::Value,
    pub subscriber_id: i64,
    pub now_ms: i64,
}

impl SingleMail {
    pub async fn insert(self, tx: &mut Transaction<'static, Any>) -> Result<()> {
        let row = sqlx::query(
            "INSERT INTO mailings (key, kind, template, data, audience, subscriber_id, priority, due_at, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'one', $5, $6, $7, 'fanned', $7, $7)
             ON CONFLICT (key) DO NOTHING
             RETURNING id",
        )
        .bind(&self.key)
        .bind(self.kind)
        .bind(self.template)
        .bind(self.data.to_string())
        .bind(self.subscriber_id)
        .bind(PRIORITY_PERSONAL)
        .bind(self.now_ms)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = row {
            let mailing_id: i64 = row.try_get("id")?;
            sqlx::query(
                "INSERT INTO deliveries (mailing_id, subscriber_id, priority, state, next_attempt_at)
                 VALUES ($1, $2, $3, 'queued', $4)
                 ON CONFLICT (mailing_id, subscriber_id) DO NOTHING",
            )
            .bind(mailing_id)
            .bind(self.subscriber_id)
            .bind(PRIORITY_PERSONAL)
            .bind(self.now_ms)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

/// A list mailing as the planner wants it to be.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMailing {
    pub key: String,
    pub kind: String,
    pub template: String,
    pub data: serde_json::Value,
    pub due_ms: i64,
    pub not_after_ms: Option<i64>,
}

/// A mailing row as stored.
#[derive(Debug, Clone)]
pub struct MailingRow {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub state: String,
    pub due_ms: i64,
    pub not_after_ms: Option<i64>,
    pub data: String,
}

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

/// How many permanent failures in a row, across mailings, make an address "bouncing".
pub const BOUNCE_LIMIT: i64 = 3;

impl Store {
    /// Inserts the mailing if its key is new; updates due time and data if it is still
    /// only planned (a moved training, an edited announcement). Returns whether a row
    /// was written.
    pub async fn upsert_planned(&self, m: &PlannedMailing, now_ms: i64) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO mailings (key, kind, template, data, audience, priority, due_at, not_after, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'list', $5, $6, $7, 'planned', $8, $8)
             ON CONFLICT (key) DO UPDATE SET
                 template = excluded.template, data = excluded.data, due_at = excluded.due_at,
                 not_after = excluded.not_after, updated_at = excluded.updated_at
             WHERE mailings.state = 'planned'
               AND (mailings.template <> excluded.template OR mailings.data <> excluded.data
                    OR mailings.due_at <> excluded.due_at
                    OR COALESCE(mailings.not_after, -1) <> COALESCE(excluded.not_after, -1))",
        )
        .bind(&m.key)
        .bind(&m.kind)
        .bind(&m.template)
        .bind(m.data.to_string())
        .bind(PRIORITY_LIST)
        .bind(m.due_ms)
        .bind(m.not_after_ms)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn mailing_by_key(&self, key: &str) -> Result<Option<MailingRow>> {
        let row = sqlx::query(
            "SELECT id, key, kind, state, due_at, not_after, data FROM mailings WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| mailing_row(&r)).transpose()
    }

    /// Planned list mailings whose keys start with `prefix`, for reconciling with config.
    pub async fn planned_with_prefix(&self, prefix: &str) -> Result<Vec<MailingRow>> {
        let rows = sqlx::query(
            "SELECT id, key, kind, state, due_at, not_after, data FROM mailings
             WHERE state = 'planned' AND audience = 'list' AND substr(key, 1, CAST($1 AS INTEGER)) = $2",
        )
        .bind(prefix.len() as i64)
        .bind(prefix)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(mailing_row).collect()
    }

    /// Moves a planned mailing to a final state without sending it.
    pub async fn close_planned(&self, id: i64, state: &'static str, now_ms: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE mailings SET state = $1, updated_at = $2 WHERE id = $3 AND state = 'planned'",
        )
        .bind(state)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// List mailings that are due (or mid-fan-out), earliest first.
    pub async fn due_mailings(&self, now_ms: i64) -> Result<Vec<MailingRow>> {
        let rows = sqlx::query(
            "SELECT id, key, kind, state, due_at, not_after, data FROM mailings
             WHERE state IN ('planned', 'fanning') AND audience = 'list' AND due_at <= $1
             ORDER BY due_at",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(mailing_row).collect()
    }

    /// The earliest due time of any planned mailing, so the planner can sleep until then.
    pub async fn next_planned_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(due_at) AS due FROM mailings WHERE state = 'planned'")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    /// Adds up to `batch` deliveries for a due mailing, continuing from its cursor. Returns
    /// how many subscribers the batch covered; 0 means the fan-out is complete (and the
    /// mailing is then marked `fanned`).
    pub async fn fan_out_batch(&self, mailing_id: i64, batch: i64, now_ms: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT fanout_cursor, state FROM mailings WHERE id = $1")
            .bind(mailing_id)
            .fetch_one(&mut *tx)
            .await?;
        let cursor: i64 = row.try_get("fanout_cursor")?;
        let state: String = row.try_get("state")?;
        if state != "planned" && state != "fanning" {
            tx.rollback().await?;
            return Ok(0);
        }
        let upper: Option<i64> = sqlx::query(
            "SELECT MAX(id) AS upper FROM (
                 SELECT id FROM subscribers WHERE status = 'active' AND id > $1 ORDER BY id LIMIT $2
             ) AS page",
        )
        .bind(cursor)
        .bind(batch)
        .fetch_one(&mut *tx)
        .await?
        .try_get("upper")?;
        let Some(upper) = upper else {
            sqlx::query("UPDATE mailings SET state = 'fanned', updated_at = $1 WHERE id = $2")
                .bind(now_ms)
                .bind(mailing_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(0);
        };
        let inserted = sqlx::query(
            "INSERT INTO deliveries (mailing_id, subscriber_id, priority, state, next_attempt_at)
             SELECT $1, id, $2, 'queued', $3 FROM subscribers
             WHERE status = 'active' AND id > $4 AND id <= $5
             ON CONFLICT (mailing_id, subscriber_id) DO NOTHING",
        )
        .bind(mailing_id)
        .bind(PRIORITY_LIST)
        .bind(now_ms)
        .bind(cursor)
        .bind(upper)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE mailings SET state = 'fanning', fanout_cursor = $1, updated_at = $2 WHERE id = $3")
            .bind(upper)
            .bind(now_ms)
            .bind(mailing_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted.rows_affected().max(1))
    }

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
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
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

    /// Writes a batch of outcomes atomically. Rows whose lease passed to another owner in
    /// the meantime are left alone (that owner records them).
    ///
    /// This is the sender's hot path. Nearly every batch is only messages sent to addresses
    /// without bounces, and that is one `UPDATE`, atomic on its own, without `BEGIN`/`COMMIT`
    /// round trips. Anything else goes in one transaction, the rare outcomes one statement
    /// each.
    pub async fn record(&self, owner: &str, outcomes: &[Outcome], now_ms: i64) -> Result<()> {
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
                record_sent(self.pool(), owner, &sent, now_ms).await?;
            }
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for ids in sent.chunks(RECORD_CHUNK) {
            record_sent(&mut *tx, owner, ids, now_ms).await?;
        }
        for ids in clear_bounces.chunks(RECORD_CHUNK) {
            let sql = format!(
                "UPDATE subscribers SET bounce_streak = 0 WHERE id IN ({})",
                placeholders(1, ids.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in ids {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
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
                    let res = sqlx::query(
                        "UPDATE deliveries SET state = 'failed', last_error = $1, lease_owner = NULL, lease_until = NULL
                         WHERE id = $2 AND lease_owner = $3",
                    )
                    .bind(error)
                    .bind(delivery_id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                    if *bounce && res.rows_affected() > 0 {
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
                    sqlx::query(
                        "UPDATE deliveries SET state = 'skipped', last_error = $1, lease_owner = NULL, lease_until = NULL
                         WHERE id = $2 AND lease_owner = $3",
                    )
                    .bind(reason)
                    .bind(delivery_id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
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
        Ok(
            sqlx::query(
                "SELECT COUNT(*) AS n FROM deliveries WHERE state IN ('queued', 'sending')",
            )
            .fetch_one(self.pool())
            .await?
            .try_get("n")?,
        )
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
async fn record_sent<'e, E>(executor: E, owner: &str, ids: &[i64], now_ms: i64) -> Result<()>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let sql = format!(
        "UPDATE deliveries SET state = 'sent', sent_at = $1, lease_owner = NULL, lease_until = NULL, last_error = NULL
         WHERE lease_owner = $2 AND id IN ({})",
        placeholders(3, ids.len())
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now_ms).bind(owner);
    for id in ids {
        query = query.bind(*id);
    }
    query.execute(executor).await?;
    Ok(())
}

fn mailing_row(r: &sqlx::any::AnyRow) -> Result<MailingRow> {
    Ok(MailingRow {
        id: r.try_get("id")?,
        key: r.try_get("key")?,
        kind: r.try_get("kind")?,
        state: r.try_get("state")?,
        due_ms: r.try_get("due_at")?,
        not_after_ms: r.try_get("not_after")?,
        data: r.try_get("data")?,
    })
}
