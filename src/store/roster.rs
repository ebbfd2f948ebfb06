//! Staff operations on the subscriber list: export, bulk import, remove, forget.
//!
//! `harborlist subscribers …` parses and validates its input (addresses, names, the CSV
//! file), derives unsubscribe tokens with the token key, and calls in here with plain
//! strings, as the web flow does with [`super::subscriptions`]. In here:
//!
//! * [`Store::export_subscribers`] streams every subscriber row by row, so exporting a
//!   large list takes constant memory;
//! * [`Store::import_batch`] writes a batch (the CLI sends [`IMPORT_BATCH`] rows) in one
//!   transaction: `IN (…)` queries check them against `suppressions`, multi-row
//!   `INSERT … ON CONFLICT (email_key) DO NOTHING` statements add the rest, and the
//!   affected-row counts tell added from already known;
//! * [`Store::remove_subscriber`] unsubscribes, with the same effects as an unsubscribe
//!   link (see `set_unsubscribed` in `subscriptions`);
//! * [`Store::forget_subscriber`] deletes the person's row (their tokens, own mailings
//!   and deliveries go with it by `ON DELETE CASCADE`) and suppresses the address, so no
//!   later import brings it back.

use std::{collections::HashSet, fmt::Write, sync::Arc};

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::{
    Backend, Result, Store, placeholders,
    subscriptions::{Status, suppression_hash},
};

/// Rows per transaction, as `harborlist subscribers import` sends them. On SQLite every
/// commit rewrites each index page the transaction touched, and the unsubscribe-hash index
/// is written in random order, so small transactions rewrite the same pages over and over:
/// going from 1,000 to 10,000 rows made a 100,000-row import about 1.6 times as fast. The
/// write lock is then held for a few hundred milliseconds at a time; a daemon running
/// alongside waits that long (its busy timeout is 10 s) rather than failing.
pub const IMPORT_BATCH: usize = 10_000;
const PARAMS_PER_ROW: usize = 5;

/// How a batch is cut into statements: rows per suppression query, rows per `INSERT`.
///
/// SQLite: sqlx's driver binds each `$N` by asking SQLite for the parameter's name, a
/// linear search, so binding is quadratic in a statement's parameter count; at 1,000 rows
/// per `INSERT` binding took longer than inserting. 25 rows (126 parameters) and 250
/// hashes make it negligible, and SQLite statements are in-process calls, so many small
/// ones are cheap.
///
/// PostgreSQL: every statement is a round trip, and sqlx 0.9.0 does not set TCP_NODELAY,
/// so a message spanning several TCP segments waits ~40 ms for a delayed ACK. One
/// suppression query and one `INSERT` per batch keep that to a few waits per 10,000 rows.
fn statement_rows(backend: Backend) -> (usize, usize) {
    match backend {
        Backend::Sqlite => (SQLITE_ROWS_PER_CHECK, SQLITE_ROWS_PER_INSERT),
        Backend::Postgres => (IMPORT_BATCH, IMPORT_BATCH),
    }
}
const SQLITE_ROWS_PER_CHECK: usize = 250;
const SQLITE_ROWS_PER_INSERT: usize = 25;
// Parameter limits per statement: SQLite's default 32,766, PostgreSQL's 65,535.
const _: () = assert!(SQLITE_ROWS_PER_CHECK <= 32_766);
const _: () = assert!(SQLITE_ROWS_PER_INSERT * PARAMS_PER_ROW < 32_766);
const _: () = assert!(IMPORT_BATCH * PARAMS_PER_ROW < 65_535);

/// One address to import, already validated, with its unsubscribe link derived.
#[derive(Debug, Clone)]
pub struct ImportCandidate {
    email: String,
    email_key: String,
    name: Option<String>,
    unsub_nonce: String,
    unsub_hash: String,
    /// `suppression_hash(email_key)`, computed with the rest so that an import's reading
    /// thread pays for it rather than the thread that writes to the database.
    suppression: String,
}

impl ImportCandidate {
    /// `email_key` is the lower-cased address ([`crate::domain::SubscriberEmail::key`]);
    /// `unsub_hash` is the hash of the unsubscribe token derived from `unsub_nonce`.
    pub fn new(
        email: String,
        email_key: String,
        name: Option<String>,
        unsub_nonce: String,
        unsub_hash: String,
    ) -> Self {
        let suppression = suppression_hash(&email_key);
        Self {
            email,
            email_key,
            name,
            unsub_nonce,
            unsub_hash,
            suppression,
        }
    }
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
        let (per_check, per_insert) = statement_rows(self.backend());
        // Every full statement has the same text, so it is built once and prepared once.
        let full_insert: Arc<str> = insert_sql(per_insert).into();
        let mut tx = self.begin().await?;
        for batch in rows.chunks(per_check) {
            let suppressed = suppressed_among(&mut tx, batch).await?;
            let keep: Vec<&ImportCandidate> = batch
                .iter()
                .filter(|row| !suppressed.contains(&row.suppression))
                .collect();
            counts.suppressed += (batch.len() - keep.len()) as u64;
            for chunk in keep.chunks(per_insert) {
                let sql = if chunk.len() == per_insert {
                    full_insert.clone()
                } else {
                    insert_sql(chunk.len()).into()
                };
                let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now_ms);
                for row in chunk {
                    query = query
                        .bind(row.email.as_str())
                        .bind(row.email_key.as_str())
                        .bind(row.name.as_deref())
                        .bind(row.unsub_nonce.as_str())
                        .bind(row.unsub_hash.as_str());
                }
                // DO NOTHING skips known addresses: the affected rows are exactly the new ones.
                let added = query.execute(&mut *tx).await?.rows_affected();
                counts.added += added;
                counts.existing += chunk.len() as u64 - added;
            }
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
        self.set_unsubscribed(&mut tx, id, now_ms).await?;
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

/// The suppression hashes among `rows` that are on the suppression list, in one query.
async fn suppressed_among(
    tx: &mut Transaction<'static, Any>,
    rows: &[ImportCandidate],
) -> Result<HashSet<String>> {
    let sql = format!(
        "SELECT hash FROM suppressions WHERE hash IN ({})",
        placeholders(1, rows.len())
    );
    // Only placeholders are spliced in; every value is bound.
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for row in rows {
        query = query.bind(row.suppression.as_str());
    }
    Ok(query
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("hash"))
        .collect::<std::result::Result<_, _>>()?)
}

/// `INSERT … VALUES (…), … ON CONFLICT (email_key) DO NOTHING` for `rows` rows: `$1` is the
/// shared timestamp, then five parameters per row.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(200 + rows * 64);
    sql.push_str(
        "INSERT INTO subscribers (email, email_key, name, status, source, unsub_nonce, unsub_hash, created_at, updated_at, confirmed_at) VALUES ",
    );
    for i in 0..rows {
        let p = 2 + i * PARAMS_PER_ROW;
        // Consent was given on the old list; confirmed_at records when it arrived here, as
        // `import_subscriber` does.
        let _ = write!(
            sql,
            "{}(${p}, ${}, ${}, 'active', 'import', ${}, ${}, $1, $1, $1)",
            if i == 0 { "" } else { ", " },
            p + 1,
            p + 2,
            p + 3,
            p + 4
        );
    }
    sql.push_str(" ON CONFLICT (email_key) DO NOTHING");
    sql
}

fn rfc3339(ms: i64) -> String {
    crate::clock::from_millis(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
