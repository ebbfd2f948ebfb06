//! Storing what happened to each claimed delivery.
//!
//! The sender's recorder ([`crate::send`]) hands a group of [`Outcome`]s to a [`Recorder`],
//! one database session kept for a whole claim. A group of plain "sent" outcomes is one
//! statement; anything else is one transaction.
//!
//! On PostgreSQL that one statement appends to `sent_log`, a table without indexes, and
//! [`Store::settle_sent`] later folds the log into `deliveries`: when the sender has nothing
//! to send, a chunk at a time, and before any lease is taken away
//! ([`Store::requeue_expired`], [`Store::release_claim`]). The record is the write every
//! message waits on; as an `UPDATE` of `deliveries` it took twice as long, and folding
//! while a mailing is going out took the cores from its messages. Until the fold, the
//! queue-depth gauge does not count the logged rows, and `status` folds before it counts.
//! SQLite records straight into `deliveries` (its write is in-process).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use sqlx::{Any, AssertSqlSafe, Connection, Row, Transaction, pool::PoolConnection};

use super::{
    Backend, Result, Store, bind_ids,
    bounces::{BounceRules, Effect, raise_score},
    placeholders,
};

/// What happened to one claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        delivery_id: i64,
        subscriber_id: i64,
    },
    Retry {
        delivery_id: i64,
        at_ms: i64,
        error: String,
    },
    /// Final for this message: a bounce, a rejection (5.7.x and the like), or retries
    /// exhausted. A `refusal` (the relay's 5xx about this recipient) is also recorded as a
    /// report: a bounce raises the score like a hard bounce report, a policy rejection is
    /// counted for the receiving domain.
    Failed {
        delivery_id: i64,
        subscriber_id: i64,
        error: String,
        refusal: Option<Refusal>,
    },
    Skipped {
        delivery_id: i64,
        reason: String,
    },
    /// Not attempted (shutdown, or the sender is holding mail while the relay fails): back
    /// to the queue without using up an attempt.
    Released {
        delivery_id: i64,
    },
    /// The relay could not take any mail (a failure before `RCPT`): back to the queue as it
    /// was before the claim, without using up an attempt, with the relay's answer as its
    /// last error. The sender as a whole backs off; the subscriber is not held responsible.
    RelayFault {
        delivery_id: i64,
        error: String,
    },
}

/// The relay refused a message permanently, at send time.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// A 5.7.x: about the list's mail, not the address.
    pub policy: bool,
    /// Only list mail's bounces count against the address.
    pub counts: bool,
    pub status: Option<crate::domain::StatusCode>,
    pub recipient_domain: String,
}

/// Deliveries per statement when recording: well under SQLite's 32,766 parameters, and
/// few distinct statement texts for the prepared-statement cache.
pub(super) const RECORD_CHUNK: usize = 256;

/// Sent-log rows folded per transaction by [`Store::settle_sent`] (three parameters each),
/// and per call of [`Store::settle_own_sent_chunk`].
pub const SETTLE_CHUNK: usize = 1000;

/// PostgreSQL sessions that record outcomes, per process.
pub(super) const RECORD_SESSIONS: u32 = 3;

impl Store {
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
            unsettled: Arc::clone(&self.unsettled),
        })
    }

    /// Folds the sent log into `deliveries` (PostgreSQL; nothing to do on SQLite, which
    /// records straight into `deliveries`). Returns the rows folded.
    ///
    /// Atomic per chunk: the log rows go in the same transaction that marks their
    /// deliveries sent, so a crash between the two loses neither. A row whose lease has
    /// passed to another owner meanwhile is dropped from the log without effect, as a late
    /// record was before the log existed: that owner sends and records it.
    pub async fn settle_sent(&self) -> Result<u64> {
        if self.backend() == Backend::Sqlite {
            return Ok(0);
        }
        let folded = self.fold_sent_log(usize::MAX).await;
        if folded.is_err() {
            self.unsettled.store(true, Ordering::SeqCst);
        }
        folded
    }

    /// Folds one chunk of the sent log, if this process logged something since its log was
    /// last found empty. Returns whether more may be left. For an idle sender: one chunk
    /// is a few milliseconds, so mail that falls due meanwhile (a confirmation someone is
    /// waiting for) waits no longer than that; and a poll on a quiet list costs no round
    /// trip for an empty log. Another process's log is folded by
    /// [`Store::requeue_expired`], which always looks.
    pub async fn settle_own_sent_chunk(&self) -> Result<bool> {
        if self.backend() == Backend::Sqlite || !self.unsettled.swap(false, Ordering::SeqCst) {
            return Ok(false);
        }
        match self.fold_sent_log(1).await {
            Ok(n) if n as usize >= SETTLE_CHUNK => {
                self.unsettled.store(true, Ordering::SeqCst);
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) => {
                self.unsettled.store(true, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Folds up to `chunks` transactions of the log; returns the rows folded.
    async fn fold_sent_log(&self, chunks: usize) -> Result<u64> {
        let mut folded = 0;
        for _ in 0..chunks {
            let mut tx = self.pool().begin().await?;
            let rows = sqlx::query(
                "DELETE FROM sent_log WHERE ctid IN (SELECT ctid FROM sent_log LIMIT $1)
                 RETURNING delivery_id, lease_owner, sent_at",
            )
            .bind(SETTLE_CHUNK as i64)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(folded);
            }
            // Joined to a VALUES list, which the planner sizes exactly: each row is found
            // through the primary key, never by scanning every delivery.
            let mut sql = String::from(
                "UPDATE deliveries AS d SET state = 'sent', sent_at = v.sent_at, lease_owner = NULL,
                        lease_until = NULL, last_error = NULL
                 FROM (VALUES ",
            );
            for i in 0..rows.len() {
                use std::fmt::Write;
                let p = 3 * i + 1;
                let _ = write!(
                    sql,
                    "{}(CAST(${p} AS BIGINT), CAST(${} AS TEXT), CAST(${} AS BIGINT))",
                    if i == 0 { "" } else { ", " },
                    p + 1,
                    p + 2
                );
            }
            sql.push_str(
                ") AS v (id, lease_owner, sent_at)
                 WHERE d.id = v.id AND d.lease_owner = v.lease_owner AND d.state = 'sending'",
            );
            let mut update = sqlx::query(AssertSqlSafe(sql));
            for r in &rows {
                update = update
                    .bind(r.try_get::<i64, _>("delivery_id")?)
                    .bind(r.try_get::<String, _>("lease_owner")?)
                    .bind(r.try_get::<i64, _>("sent_at")?);
            }
            update.execute(&mut *tx).await?;
            tx.commit().await?;
            folded += rows.len() as u64;
            if rows.len() < SETTLE_CHUNK {
                return Ok(folded);
            }
        }
        Ok(folded)
    }
}

/// One database session that records outcomes, kept for a whole claim. Taking a pooled
/// connection for each write cost a round trip more than the write: sqlx checks a
/// connection as it goes back to the pool. A recorder whose write failed should be
/// dropped; the next one gets a fresh session.
pub struct Recorder {
    conn: PoolConnection<Any>,
    backend: Backend,
    unsettled: Arc<AtomicBool>,
}

impl Recorder {
    /// Writes a batch of outcomes atomically. Rows whose lease passed to another owner in
    /// the meantime are left alone (that owner records them).
    ///
    /// This is the sender's hot path. Nearly every batch is only messages sent to addresses
    /// without bounces, and that is one `UPDATE`, atomic on its own, without `BEGIN`/`COMMIT`
    /// round trips. Anything else goes in one transaction, the rare outcomes one statement
    /// each.
    pub async fn record(
        &mut self,
        owner: &str,
        outcomes: &[Outcome],
        now_ms: i64,
        rules: &BounceRules,
    ) -> Result<()> {
        let sent: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Sent { delivery_id, .. } => Some(*delivery_id),
                _ => None,
            })
            .collect();
        let only_sent = sent.len() == outcomes.len() && sent.len() <= RECORD_CHUNK;
        if only_sent {
            if !sent.is_empty() {
                match self.backend {
                    Backend::Sqlite => record_sent(&mut *self.conn, owner, &sent, now_ms).await?,
                    Backend::Postgres => {
                        // Set first: a fold that starts while this insert runs must not
                        // clear the mark and miss it.
                        self.unsettled.store(true, Ordering::SeqCst);
                        log_sent(&mut *self.conn, owner, &sent, now_ms).await?
                    }
                }
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
                    refusal,
                } => {
                    let closed = close(&mut tx, "failed", error, *delivery_id, owner).await?;
                    if let Some(refusal) = refusal.as_ref().filter(|_| closed > 0) {
                        record_refusal(
                            &mut tx,
                            refusal,
                            *delivery_id,
                            *subscriber_id,
                            error,
                            rules,
                            now_ms,
                        )
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
                Outcome::RelayFault { delivery_id, error } => {
                    // The claim counted an attempt (`attempts + 1`); a relay fault takes it
                    // back, so `mail.max_attempts` only counts the recipient's failures.
                    sqlx::query(
                        "UPDATE deliveries SET state = 'queued', attempts = attempts - 1, last_error = $1, lease_owner = NULL, lease_until = NULL
                         WHERE id = $2 AND lease_owner = $3",
                    )
                    .bind(error)
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
    bind_ids(
        sqlx::query(AssertSqlSafe(sql)).bind(now_ms).bind(owner),
        ids,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Appends `ids` to the sent log (PostgreSQL): stored as sent, folded into `deliveries`
/// later by [`Store::settle_sent`].
async fn log_sent<'e, E>(executor: E, owner: &str, ids: &[i64], now_ms: i64) -> Result<()>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    use std::fmt::Write;
    let mut sql = String::from("INSERT INTO sent_log (delivery_id, lease_owner, sent_at) VALUES ");
    for i in 0..ids.len() {
        let _ = write!(
            sql,
            "{}(${}, $1, $2)",
            if i == 0 { "" } else { ", " },
            i + 3
        );
    }
    bind_ids(
        sqlx::query(AssertSqlSafe(sql)).bind(owner).bind(now_ms),
        ids,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// A refusal at send time, as a report (`source = 'send'`, keyed by the delivery, which
/// fails once): a bounce of list mail raises the score as a hard bounce does, a policy
/// rejection is counted for the domain, and anything else is only on record.
async fn record_refusal(
    conn: &mut sqlx::AnyConnection,
    refusal: &Refusal,
    delivery_id: i64,
    subscriber_id: i64,
    error: &str,
    rules: &BounceRules,
    now_ms: i64,
) -> Result<()> {
    let effect = if refusal.policy {
        Effect::Policy
    } else if refusal.counts {
        raise_score(&mut *conn, subscriber_id, 1.0, rules, now_ms).await?
    } else {
        Effect::Ignored
    };
    let score = match effect {
        Effect::Scored { score } | Effect::Bouncing { score } => Some(score),
        _ => None,
    };
    sqlx::query(
        "INSERT INTO bounce_events (report_key, received_at, source, kind, effect, status, diagnostic,
                                    recipient_domain, subscriber_id, delivery_id, score)
         VALUES ($1, $2, 'send', 'hard', $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (report_key) DO NOTHING",
    )
    .bind(format!("send:{delivery_id}"))
    .bind(now_ms)
    .bind(effect.as_str())
    .bind(refusal.status.map(|s| s.to_string()))
    .bind(error)
    .bind(&refusal.recipient_domain)
    .bind(subscriber_id)
    .bind(delivery_id)
    .bind(score)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
