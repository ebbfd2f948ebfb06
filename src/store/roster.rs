//! Staff operations on the subscriber list: export, bulk import, remove, forget.
//!
//! `harborlist subscribers …` parses and validates its input (addresses, names, the CSV
//! file), derives unsubscribe tokens with the token key, and calls in here with plain
//! strings, as the web flow does with [`super::subscriptions`]. In here:
//!
//! * [`Store::export_subscribers`] streams every subscriber row by row, so exporting a
//!   large list takes constant memory;
//! * [`Store::import_batch`] writes a batch (the CLI sends [`IMPORT_BATCH`] rows) in one
//!   transaction, each statement given its rows as one JSON parameter: one finds the
//!   suppressed addresses; one `INSERT … SELECT … ON CONFLICT (email_key) DO NOTHING` per
//!   [`ImportStatus`] present (usually just active) adds the rest, and its affected-row
//!   count tells added from already known; one makes members of people who had only
//!   registered for a training, for rows the old list had as active;
//! * [`Store::remove_subscriber`] unsubscribes, with the same effects as an unsubscribe
//!   link (see `set_unsubscribed` in `subscriptions`);
//! * [`Store::forget_subscriber`] unnames the person's registrations (kept, for the
//!   counts), deletes the person's row (their tokens, own mailings and deliveries go with
//!   it by `ON DELETE CASCADE`) and suppresses the address, so no later import brings it
//!   back.

use std::collections::HashSet;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::{
    Backend, Result, Store,
    subscriptions::{Status, suppression_hash},
};

/// Rows per transaction, as `harborlist subscribers import` sends them. On SQLite every
/// commit rewrites each index page the transaction touched, and the unsubscribe-hash index
/// is written in random order, so small transactions rewrite the same pages over and over:
/// going from 1,000 to 10,000 rows made a 100,000-row import about 1.6 times as fast. The
/// write lock is then held for a few hundred milliseconds at a time; a daemon running
/// alongside waits that long (its busy timeout is 10 s) rather than failing.
pub const IMPORT_BATCH: usize = 10_000;

/// The rows of a JSON array parameter (`$n`), as a table with one column, `value`.
///
/// A batch goes to the database as one JSON text rather than as `$N` parameters: sqlx's
/// SQLite driver looks each `$N` up by name, a linear search, so binding is quadratic in a
/// statement's parameter count, and many small statements each cost a round trip to its
/// SQLite thread. Parsing JSON is the databases' own C code and costs a few percent.
pub(super) fn json_rows(backend: Backend, param: usize) -> String {
    match backend {
        // Elements as SQL values: text for strings, JSON text for arrays.
        Backend::Sqlite => format!("json_each(${param})"),
        Backend::Postgres => format!("jsonb_array_elements(${param}::jsonb)"),
    }
}

/// Like [`json_rows`] for an array of strings, each `value` being the string as text.
fn json_strings(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("json_each(${param})"),
        Backend::Postgres => format!("jsonb_array_elements_text(${param}::jsonb)"),
    }
}

/// The status an imported person starts with: what the old list said about them. Only
/// `Active` people get list mail (the fan-out takes `status = 'active'` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImportStatus {
    Active,
    /// Mail to them bounced on the old list (Mailchimp's "cleaned").
    Bouncing,
    /// Had left the old list, or was suspended or banned there.
    Unsubscribed,
}

impl ImportStatus {
    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }

    /// The subscriber status stored for the row.
    pub fn status(self) -> Status {
        match self {
            Self::Active => Status::Active,
            Self::Bouncing => Status::Bouncing,
            Self::Unsubscribed => Status::Unsubscribed,
        }
    }
}

/// One address to import, already validated, with its unsubscribe link derived.
#[derive(Debug, Clone)]
pub struct ImportCandidate {
    email: String,
    email_key: String,
    name: Option<String>,
    status: ImportStatus,
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
        status: ImportStatus,
        unsub_nonce: String,
        unsub_hash: String,
    ) -> Self {
        let suppression = suppression_hash(&email_key);
        Self {
            email,
            email_key,
            name,
            status,
            unsub_nonce,
            unsub_hash,
            suppression,
        }
    }
}

/// What a batch (or a whole import) did. Every candidate lands in exactly one count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Added, in any status (so `added - unsubscribed - bouncing` are active).
    pub added: u64,
    /// Of the added, how many came in unsubscribed.
    pub unsubscribed: u64,
    /// Of the added, how many came in bouncing.
    pub bouncing: u64,
    /// Known in any state, and left as it was.
    pub existing: u64,
    /// Forgotten earlier at the person's request, so not added.
    pub suppressed: u64,
}

impl ImportCounts {
    /// The added people who get list mail.
    pub fn active(&self) -> u64 {
        self.added - self.unsubscribed - self.bouncing
    }
}

impl std::ops::AddAssign for ImportCounts {
    fn add_assign(&mut self, other: Self) {
        self.added += other.added;
        self.unsubscribed += other.unsubscribed;
        self.bouncing += other.bouncing;
        self.existing += other.existing;
        self.suppressed += other.suppressed;
    }
}

/// `export_subscribers`' query: list members only (see
/// [`ON_LIST`](super::subscriptions::ON_LIST), spelled out here because a streamed query
/// needs a `'static` text).
const EXPORT_SQL: &str =
    "SELECT id, email, name, status, source, created_at, confirmed_at, unsubscribed_at
     FROM subscribers s
     WHERE NOT (s.status = 'pending' AND s.requested_at IS NULL
                AND EXISTS (SELECT 1 FROM registrations r WHERE r.subscriber_id = s.id))
     ORDER BY id";

/// A subscriber as an export shows it; timestamps in RFC 3339 UTC.
#[derive(Debug, Clone, Serialize)]
pub struct ExportRow {
    #[serde(skip)]
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub status: Status,
    pub source: String,
    pub created_at: String,
    pub confirmed_at: Option<String>,
    pub unsubscribed_at: Option<String>,
    /// Their registrations for trainings (filled in by the caller from
    /// [`Store::registrations_by_subscriber`]).
    pub registrations: Vec<PersonRegistration>,
}

/// One of a list member's registrations, as an export shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PersonRegistration {
    pub training: String,
    pub status: super::registrations::RegStatus,
    pub name: Option<String>,
    pub organisation: Option<String>,
    pub source: String,
    /// When they took the seat (or asked to), RFC 3339 UTC.
    pub registered_at: Option<String>,
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
    /// Their registrations, now unnamed (kept for the counts).
    pub registrations: u64,
}

impl Store {
    /// Every subscriber on the list, oldest first, one row at a time from the database
    /// cursor (people who only registered for a training are not on it).
    pub fn export_subscribers(&self) -> impl Stream<Item = Result<ExportRow>> + Send + '_ {
        sqlx::query(EXPORT_SQL).fetch(self.pool()).map(|row| {
            let row = row?;
            Ok(ExportRow {
                id: row.try_get("id")?,
                email: row.try_get("email")?,
                name: row.try_get("name")?,
                status: Status::parse(&row.try_get::<String, _>("status")?)?,
                source: row.try_get("source")?,
                created_at: rfc3339(row.try_get("created_at")?),
                confirmed_at: row.try_get::<Option<i64>, _>("confirmed_at")?.map(rfc3339),
                unsubscribed_at: row
                    .try_get::<Option<i64>, _>("unsubscribed_at")?
                    .map(rfc3339),
                registrations: Vec::new(),
            })
        })
    }

    /// Every registration of someone still known, by subscriber id, in the order they were
    /// made: what an export adds to each list member's row.
    pub async fn registrations_by_subscriber(
        &self,
    ) -> Result<std::collections::HashMap<i64, Vec<PersonRegistration>>> {
        let rows = sqlx::query(
            "SELECT subscriber_id, session_id, status, name, organisation, source,
                    COALESCE(registered_at, requested_at, created_at) AS at
             FROM registrations WHERE subscriber_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        let mut out: std::collections::HashMap<i64, Vec<PersonRegistration>> = Default::default();
        for r in &rows {
            out.entry(r.try_get("subscriber_id")?)
                .or_default()
                .push(PersonRegistration {
                    training: r.try_get("session_id")?,
                    status: super::registrations::RegStatus::parse(
                        &r.try_get::<String, _>("status")?,
                    )?,
                    name: r.try_get("name")?,
                    organisation: r.try_get("organisation")?,
                    source: r.try_get("source")?,
                    registered_at: r.try_get::<Option<i64>, _>("at")?.map(rfc3339),
                });
        }
        Ok(out)
    }

    /// Adds the candidates with consent source "import", each with the status the old list
    /// gave them, in one transaction, except addresses already known (left unchanged, so an
    /// import never re-subscribes someone who left) and suppressed ones. The caller removes
    /// duplicates within the file; a repeat that reaches here anyway counts as already known.
    pub async fn import_batch(
        &self,
        rows: &[ImportCandidate],
        now_ms: i64,
    ) -> Result<ImportCounts> {
        let mut counts = ImportCounts::default();
        if rows.is_empty() {
            return Ok(counts);
        }
        let backend = self.backend();
        let mut tx = self.begin().await?;
        let suppressed = suppressed_among(&mut tx, backend, rows).await?;
        let keep: Vec<&ImportCandidate> = rows
            .iter()
            .filter(|row| !suppressed.contains(&row.suppression))
            .collect();
        counts.suppressed = (rows.len() - keep.len()) as u64;
        for status in [
            ImportStatus::Active,
            ImportStatus::Unsubscribed,
            ImportStatus::Bouncing,
        ] {
            let group: Vec<&ImportCandidate> = keep
                .iter()
                .copied()
                .filter(|row| row.status == status)
                .collect();
            if group.is_empty() {
                continue;
            }
            let added = insert_group(&mut tx, backend, status, &group, now_ms).await?;
            counts.added += added;
            counts.existing += group.len() as u64 - added;
            match status {
                ImportStatus::Active => {}
                ImportStatus::Unsubscribed => counts.unsubscribed += added,
                ImportStatus::Bouncing => counts.bouncing += added,
            }
        }
        tx.commit().await?;
        Ok(counts)
    }

    /// Brings the planner's statistics on `subscribers` up to date after a bulk import.
    ///
    /// PostgreSQL plans from statistics that autovacuum refreshes up to a minute later. A
    /// list imported into an empty table looks empty until then, and the fan-out's page query
    /// (`status = 'active' AND id > $1 ORDER BY id LIMIT $2`) was planned as a bitmap scan
    /// of every later row and a sort: 21 ms a page at 100,000 subscribers, instead of a walk
    /// along the index. Only the columns the fan-out filters on are sampled (the row count
    /// comes with any ANALYZE): all of them took 0.3 s, mostly sorting sampled addresses
    /// and hashes. SQLite has no statistics unless asked, and its plans don't need them here.
    pub async fn refresh_subscriber_statistics(&self) -> Result<()> {
        if self.backend() == Backend::Postgres {
            sqlx::raw_sql("ANALYZE subscribers (id, status)")
                .execute(self.pool())
                .await?;
        }
        Ok(())
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
        let mut registrations = 0;
        let erased = match row {
            Some(row) => {
                let id: i64 = row.try_get("id")?;
                let status = Status::parse(&row.try_get::<String, _>("status")?)?;
                registrations = unname_registrations(&mut tx, id, now_ms).await?;
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
            registrations,
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

/// Erases who made the person's registrations, keeping what happened for the counts: the
/// row keeps its session, status and folded organisation (`org_key`, for the number of
/// distinct organisations), and loses the name, the organisation as typed, the consent
/// evidence (IP, user agent), the link (nonce, hash, and hashes under earlier keys) and
/// the person. A place on the waiting list or an open offer is given up (there is nobody
/// to offer a seat to any more); the planner's next refill passes a freed seat on. A seat
/// already held stays held: forgetting someone is not cancelling for them.
async fn unname_registrations(
    tx: &mut Transaction<'static, Any>,
    subscriber_id: i64,
    now_ms: i64,
) -> Result<u64> {
    sqlx::query(
        "DELETE FROM registration_links WHERE registration_id IN
             (SELECT id FROM registrations WHERE subscriber_id = $1)",
    )
    .bind(subscriber_id)
    .execute(&mut **tx)
    .await?;
    Ok(sqlx::query(
        "UPDATE registrations SET
             status = CASE WHEN status IN ('waitlisted', 'offered', 'pending') THEN 'cancelled' ELSE status END,
             cancelled_at = CASE WHEN status IN ('waitlisted', 'offered', 'pending') THEN $2 ELSE cancelled_at END,
             position = NULL, offer_expires_at = NULL,
             name = NULL, organisation = NULL,
             request_ip = NULL, request_user_agent = NULL, confirm_ip = NULL, confirm_user_agent = NULL,
             nonce = NULL, link_hash = NULL, subscriber_id = NULL, updated_at = $2
         WHERE subscriber_id = $1",
    )
    .bind(subscriber_id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Adds the rows of one status (all of `rows` have `status`) and returns how many became
/// list members: new addresses, and, for active rows, people who had only registered for a
/// training. The rest were already known and are left as they were.
async fn insert_group(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    status: ImportStatus,
    rows: &[&ImportCandidate],
    now_ms: i64,
) -> Result<u64> {
    // Each row as [email, email_key, name, unsub_nonce, unsub_hash].
    let batch = serde_json::to_string(
        &rows
            .iter()
            .map(|row| {
                (
                    &row.email,
                    &row.email_key,
                    &row.name,
                    &row.unsub_nonce,
                    &row.unsub_hash,
                )
            })
            .collect::<Vec<_>>(),
    )
    .map_err(|e| super::StoreError::Corrupt(format!("import batch: {e}")))?;
    // Consent was given on the old list; confirmed_at records when it arrived here, as
    // `import_subscriber` does. Someone who had left it gets the import as the time they
    // left here too. Only these fixed texts are spliced in. `WHERE true` lets SQLite parse
    // the upsert after a SELECT.
    let unsubscribed_at = match status {
        ImportStatus::Unsubscribed => "$1",
        ImportStatus::Active | ImportStatus::Bouncing => "NULL",
    };
    let sql = format!(
        "INSERT INTO subscribers (email, email_key, name, status, source, unsub_nonce, unsub_hash, created_at, updated_at, confirmed_at, unsubscribed_at)
         SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, '{status}', 'import', r.value ->> 3, r.value ->> 4, $1, $1, $1, {unsubscribed_at}
         FROM {rows} AS r WHERE true
         ON CONFLICT (email_key) DO NOTHING",
        status = status.as_str(),
        rows = json_rows(backend, 2)
    );
    // DO NOTHING skips known addresses: the affected rows are exactly the new ones.
    let added = sqlx::query(AssertSqlSafe(sql))
        .bind(now_ms)
        .bind(&batch)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if status != ImportStatus::Active {
        // Someone known only from a training registration stays as they are: the old
        // list says they get no mail, so there is nothing to join them to.
        return Ok(added);
    }
    // Someone who only registered for a training is not on the list yet: the old list's
    // consent makes them a member, as it would a new address.
    let joined = sqlx::query(AssertSqlSafe(format!(
        "UPDATE subscribers SET status = 'active', source = 'import', confirmed_at = $1, updated_at = $1,
                name = COALESCE(name, (SELECT r.value ->> 2 FROM {rows} AS r WHERE r.value ->> 1 = subscribers.email_key LIMIT 1))
         WHERE email_key IN (SELECT r.value ->> 1 FROM {rows} AS r)
           AND status = 'pending' AND requested_at IS NULL
           AND EXISTS (SELECT 1 FROM registrations g WHERE g.subscriber_id = subscribers.id)",
        rows = json_rows(backend, 2)
    )))
    .bind(now_ms)
    .bind(&batch)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(added + joined)
}

/// The suppression hashes among `rows` that are on the suppression list, in one query.
async fn suppressed_among(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    rows: &[ImportCandidate],
) -> Result<HashSet<String>> {
    let hashes = serde_json::to_string(
        &rows
            .iter()
            .map(|row| row.suppression.as_str())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| super::StoreError::Corrupt(format!("import batch: {e}")))?;
    let sql = format!(
        "SELECT hash FROM suppressions WHERE hash IN (SELECT h.value FROM {} AS h)",
        json_strings(backend, 1)
    );
    Ok(sqlx::query(AssertSqlSafe(sql))
        .bind(hashes)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("hash"))
        .collect::<std::result::Result<_, _>>()?)
}

use crate::clock::rfc3339;
