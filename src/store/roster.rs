//! Staff operations on the subscriber list: export, bulk import, remove, forget.
//!
//! `harborlist subscribers …` parses and validates its input (addresses, names, the CSV
//! file), derives unsubscribe tokens with the token key, and calls in here with plain
//! strings, as the web flow does with [`super::subscriptions`]. In here:
//!
//! * [`Store::export_subscribers`] streams every subscriber row by row, so exporting a
//!   large list takes constant memory;
//! * [`Store::import_batch`] writes up to [`IMPORT_BATCH`] rows per statement, one
//!   transaction per call: one query checks the whole batch against `suppressions`, one
//!   multi-row `INSERT … ON CONFLICT (email_key) DO NOTHING` adds the rest, and the
//!   affected-row count tells added from already known;
//! * [`Store::remove_subscriber`] unsubscribes, with the same effects as an unsubscribe
//!   link (see `set_unsubscribed` in `subscriptions`);
//! * [`Store::forget_subscriber`] deletes the person's row (their tokens, own mailings
//!   and deliveries go with it by `ON DELETE CASCADE`) and suppresses the address, so no
//!   later import brings it back.

use std::collections::HashSet;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::{
    Result, Store,
    subscriptions::{Status, suppression_hash},
};

/// Rows per multi-row `INSERT`. Each row binds five values and the batch shares one
/// timestamp: 5,001 parameters, well under SQLite's limit of 32,766 per statement (and
/// PostgreSQL's 65,535), and large enough that per-statement overhead stops mattering.
pub const IMPORT_BATCH: usize = 1_000;
const PARAMS_PER_ROW: usize = 5;
const SQLITE_MAX_PARAMS: usize = 32_766;
const _: () = assert!(IMPORT_BATCH * PARAMS_PER_ROW + 1 <= SQLITE_MAX_PARAMS);

/// One address to import, already validated, with its unsubscribe link derived.
#[derive(Debug, Clone)]
pub struct ImportCandidate {
    pub email: String,
    /// Lower-cased, as [`crate::domain::SubscriberEmail::key`] makes it.
    pub email_key: String,
    pub name: Option<String>,
    pub unsub_nonce: String,
    pub unsub_hash: String,
}

/// What a batch (or a whole import) did. Every candidate lands in exactly one count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub added: u64,
    /// Known in any state, and left as it was.
    pub existing: u64,
    /// Forgotten earlier at the person's request, so not added.
    pub suppressed: u64,
}

impl std::ops::AddAssign for ImportCounts {
    fn add_assign(&mut self, other: Self) {
        self.added += other.added;
        self.existing += other.existing;
        self.suppressed += other.suppressed;
    }
}

/// A subscriber as an export shows it; timestamps in RFC 3339 UTC.
#[derive(Debug, Clone, Serialize)]
pub struct ExportRow {
    pub email: String,
    pub name: Option<String>,
    pub status: Status,
    pub source: String,
    pub created_at: String,
    pub confirmed_at: Option<String>,
    pub unsubscribed_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// Was subscribed (in the given state) and is now unsubscribed.
    Removed {
        was: Status,
    },
    /// Already unsubscribed; nothing changed.
    AlreadyUnsubscribed {
        since: Option<String>,
    },
    NotOnList,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetOutcome {
    /// The deleted subscriber's status, if there was one.
    pub erased: Option<Status>,
    /// Whether the address was suppressed before this call.
    pub was_suppressed: bool,
}

impl Store {
    /// Every subscriber, oldest first, one row at a time from the database cursor.
    pub fn export_subscribers(&self) -> impl Stream<Item = Result<ExportRow>> + Send + '_ {
        sqlx::query(
            "SELECT email, name, status, source, created_at, confirmed_at, unsubscribed_at
             FROM subscribers ORDER BY id",
        )
        .fetch(self.pool())
        .map(|row| {
            let row = row?;
            Ok(ExportRow {
                email: row.try_get("email")?,
                name: row.try_get("name")?,
                status: Status::parse(&row.try_get::<String, _>("status")?)?,
                source: row.try_get("source")?,
                created_at: rfc3339(row.try_get("created_at")?),
                confirmed_at: row.try_get::<Option<i64>, _>("confirmed_at")?.map(rfc3339),
                unsubscribed_at: row
                    .try_get::<Option<i64>, _>("unsubscribed_at")?
                    .map(rfc3339),
            })
        })
    }

    /// Adds the candidates as active subscribers with consent source "import", in one
    /// transaction, except addresses already known (left unchanged, so an import never
    /// re-subscribes someone who left) and suppressed ones. The caller removes duplicates
    /// within the file; a repeat that reaches here anyway counts as already known.
    pub async fn import_batch(
        &self,
        rows: &[ImportCandidate],
        now_ms: i64,
    ) -> Result<ImportCounts> {
        let mut counts = ImportCounts::default();
        if rows.is_empty() {
            return Ok(counts);
        }
        let mut tx = self.begin().await?;
        for chunk in rows.chunks(IMPORT_BATCH) {
            let hashes: Vec<String> = chunk
                .iter()
                .map(|r| suppression_hash(&r.email_key))
                .collect();
            let sql = format!(
                "SELECT hash FROM suppressions WHERE hash IN ({})",
                (1..=hashes.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // Only placeholders are spliced in; every value is bound.
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for hash in &hashes {
                query = query.bind(hash.as_str());
            }
            let suppressed: HashSet<String> = query
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>("hash"))
                .collect::<std::result::Result<_, _>>()?;
            let keep: Vec<&ImportCandidate> = chunk
                .iter()
                .zip(&hashes)
                .filter(|(_, hash)| !suppressed.contains(*hash))
                .map(|(row, _)| row)
                .collect();
            counts.suppressed += (chunk.len() - keep.len()) as u64;
            if keep.is_empty() {
                continue;
            }

            let mut sql = String::with_capacity(200 + keep.len() * 64);
            sql.push_str(
                "INSERT INTO subscribers (email, email_key, name, status, source, unsub_nonce, unsub_hash, created_at, updated_at, confirmed_at) VALUES ",
            );
            for i in 0..keep.len() {
                let p = 2 + i * PARAMS_PER_ROW;
                if i > 0 {
                    sql.push_str(", ");
                }
                // Consent was given on the old list; confirmed_at records when it arrived
                // here, as `import_subscriber` does.
                sql.push_str(&format!(
                    "(${}, ${}, ${}, 'active', 'import', ${}, ${}, $1, $1, $1)",
                    p,
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4
                ));
            }
            sql.push_str(" ON CONFLICT (email_key) DO NOTHING");
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now_ms);
            for row in &keep {
                query = query
                    .bind(row.email.as_str())
                    .bind(row.email_key.as_str())
                    .bind(row.name.as_deref())
                    .bind(row.unsub_nonce.as_str())
                    .bind(row.unsub_hash.as_str());
            }
            // DO NOTHING skips known addresses, so the affected rows are exactly the new ones.
            let added = query.execute(&mut *tx).await?.rows_affected();
            counts.added += added;
            counts.existing += keep.len() as u64 - added;
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// Unsubscribes an address as its unsubscribe link would, without sending anything.
    /// Repeating it changes nothing.
    pub async fn remove_subscriber(&self, email_key: &str, now_ms: i64) -> Result<RemoveOutcome> {
        let mut tx = self.begin().await?;
        let row =
            sqlx::query("SELECT id, status, unsubscribed_at FROM subscribers WHERE email_key = $1")
                .bind(email_key)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(RemoveOutcome::NotOnList);
        };
        let id: i64 = row.try_get("id")?;
        let status = Status::parse(&row.try_get::<String, _>("status")?)?;
        if status == Status::Unsubscribed {
            tx.rollback().await?;
            return Ok(RemoveOutcome::AlreadyUnsubscribed {
                since: row
                    .try_get::<Option<i64>, _>("unsubscribed_at")?
                    .map(rfc3339),
            });
        }
        // The same two writes as `set_unsubscribed`, which the web flow keeps private.
        sqlx::query(
            "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $1, updated_at = $1 WHERE id = $2",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // A pending confirmation link must not re-subscribe someone staff just removed.
        sqlx::query("UPDATE tokens SET used_at = $1 WHERE subscriber_id = $2 AND used_at IS NULL")
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RemoveOutcome::Removed { was: status })
    }

    /// Erases everything stored about an address and suppresses it, in one transaction:
    /// either the person is gone and suppressed, or nothing changed.
    pub async fn forget_subscriber(&self, email_key: &str, now_ms: i64) -> Result<ForgetOutcome> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT id, status FROM subscribers WHERE email_key = $1")
            .bind(email_key)
            .fetch_optional(&mut *tx)
            .await?;
        let erased = match row {
            Some(row) => {
                let id: i64 = row.try_get("id")?;
                let status = Status::parse(&row.try_get::<String, _>("status")?)?;
                // Tokens, their own mailings and all their deliveries cascade.
                sqlx::query("DELETE FROM subscribers WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                Some(status)
            }
            None => None,
        };
        let inserted = sqlx::query(
            "INSERT INTO suppressions (hash, created_at) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(suppression_hash(email_key))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(ForgetOutcome {
            erased,
            was_suppressed: inserted == 0,
        })
    }

    /// Whether an address is on the suppression list.
    pub async fn is_suppressed(&self, email_key: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT hash FROM suppressions WHERE hash = $1")
            .bind(suppression_hash(email_key))
            .fetch_optional(self.pool())
            .await?
            .is_some())
    }
}

fn rfc3339(ms: i64) -> String {
    crate::clock::from_millis(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
