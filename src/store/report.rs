//! Read-only summaries: `harborlist status`, `trainings` and `check` (some without a
//! writable database), and the numbers behind `registrations report`.

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::{Backend, Result, Store, placeholders, queue::Segment};

#[derive(Debug, Clone, Serialize)]
pub struct MailingSummary {
    pub key: String,
    pub kind: String,
    pub state: String,
    pub due_ms: i64,
    /// For planned list mailings: who of its segment there is now (the active subscribers,
    /// for most; the audience is fixed at the due time). Otherwise: deliveries written.
    pub audience: i64,
    pub sent: i64,
    pub failed: i64,
    pub pending: i64,
    pub skipped: i64,
    /// The session it is about (its id), for naming it as staff do.
    pub training: Option<String>,
    /// Why it was closed without sending, for a skipped one.
    pub reason: Option<String>,
}

/// A mailing closed without sending, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedMailing {
    pub key: String,
    pub kind: String,
    pub due_ms: i64,
    pub skipped_ms: i64,
    pub reason: String,
    /// The session it is about (its id), for naming it as staff do.
    pub training: Option<String>,
}

/// What the database says about one mailing, for `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailingFate {
    /// Fanned out (or fanning): when its first message went, or when fan-out began.
    Sent {
        at_ms: i64,
    },
    /// Closed without sending.
    Closed {
        state: String,
        reason: Option<String>,
    },
    Planned,
}

/// A connection that changes nothing: no migration, no file created, and on SQLite a
/// read-only one. `Ok(None)` when there is no SQLite file yet; `Err` says why a database
/// could not be opened (a server that does not answer within a few seconds, say).
async fn peek_connection(url: &str) -> std::result::Result<Option<sqlx::AnyConnection>, String> {
    use sqlx::{AnyConnection, Connection};
    sqlx::any::install_default_drivers();
    let url = match Backend::from_url(url)? {
        Backend::Sqlite => {
            let rest = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = rest.split('?').next().unwrap_or("");
            if path.is_empty() || path == ":memory:" || !std::path::Path::new(path).is_file() {
                return Ok(None);
            }
            format!("sqlite://{path}?mode=ro")
        }
        Backend::Postgres => url.to_owned(),
    };
    let connect = AnyConnection::connect(&url);
    match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
        Ok(Ok(conn)) => Ok(Some(conn)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the database did not answer within 3 s".into()),
    }
}

/// What a read-only look at the seats found.
#[derive(Debug, Clone)]
pub enum PeekedSeats {
    /// No database yet, or one without registrations (a fresh install, or one the new
    /// version has not migrated): nobody has registered.
    NoDatabase,
    /// A database that could not be reached or read, and why.
    Unknown(String),
    Counts(std::collections::HashMap<String, super::registrations::SeatCounts>),
}

/// Every session's seat counts, read without changing anything (see [`peek_connection`]),
/// for `trainings` and `check`, which must work before the daemon ever ran and must not
/// create a database.
pub async fn peek_seat_counts(url: &str) -> PeekedSeats {
    use sqlx::Connection;
    let mut conn = match peek_connection(url).await {
        Ok(Some(conn)) => conn,
        Ok(None) => return PeekedSeats::NoDatabase,
        Err(e) => return PeekedSeats::Unknown(e),
    };
    let rows = sqlx::query(super::registrations::SEAT_COUNTS_SQL)
        .fetch_all(&mut conn)
        .await;
    let _ = conn.close().await;
    match rows {
        Ok(rows) => match super::registrations::seat_counts_of(&rows) {
            Ok(counts) => PeekedSeats::Counts(counts),
            Err(e) => PeekedSeats::Unknown(e.to_string()),
        },
        // A database the daemon has not set up yet (or not since registrations came in):
        // nobody can have registered.
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("42P01") || e.message().contains("no such table") =>
        {
            PeekedSeats::NoDatabase
        }
        Err(e) => PeekedSeats::Unknown(format!("cannot read registrations: {e}")),
    }
}

/// Looks mailings up by key without changing anything (see [`peek_connection`]).
/// `Ok(None)` when there is no database to read.
pub async fn peek_mailings(
    url: &str,
    keys: &[String],
) -> Result<Option<Vec<(String, MailingFate)>>> {
    use sqlx::Connection;
    let Ok(Some(mut conn)) = peek_connection(url).await else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for key in keys {
        let row = sqlx::query(
            "SELECT m.state, m.reason, m.updated_at,
                    (SELECT MIN(d.sent_at) FROM deliveries d WHERE d.mailing_id = m.id) AS first_sent
             FROM mailings m WHERE m.key = $1",
        )
        .bind(key)
        .fetch_optional(&mut conn)
        .await;
        // A database from before these tables, or not ours: nothing to say.
        let Ok(row) = row else {
            return Ok(None);
        };
        let Some(row) = row else { continue };
        let state: String = row.try_get("state")?;
        let fate = match state.as_str() {
            "fanning" | "fanned" => MailingFate::Sent {
                at_ms: row
                    .try_get::<Option<i64>, _>("first_sent")?
                    .unwrap_or(row.try_get("updated_at")?),
            },
            "planned" => MailingFate::Planned,
            _ => MailingFate::Closed {
                state,
                reason: row.try_get("reason")?,
            },
        };
        out.push((key.clone(), fate));
    }
    let _ = conn.close().await;
    Ok(Some(out))
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
        let active = self.active_subscribers().await?;
        let rows = sqlx::query(
            "SELECT key, kind, state, due_at, training, segment FROM mailings
             WHERE state = 'planned' AND audience = 'list'
             ORDER BY due_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let segment = Segment::parse(r.try_get::<Option<String>, _>("segment")?.as_deref())?;
            let audience = match segment {
                None => active,
                Some(_) => {
                    let training: Option<String> = r.try_get("training")?;
                    self.audience_now(segment, training.as_deref()).await?
                }
            };
            out.push(MailingSummary {
                key: r.try_get("key")?,
                kind: r.try_get("kind")?,
                state: r.try_get("state")?,
                due_ms: r.try_get("due_at")?,
                audience,
                sent: 0,
                failed: 0,
                pending: 0,
                skipped: 0,
                training: r.try_get("training")?,
                reason: None,
            });
        }
        Ok(out)
    }

    /// How many a mailing to `segment` about `training` would reach now.
    pub async fn audience_now(
        &self,
        segment: Option<Segment>,
        training: Option<&str>,
    ) -> Result<i64> {
        // The whole list's filter names no training, and a statement must bind only what
        // it uses (PostgreSQL refuses a spare parameter).
        if segment.is_none() {
            return self.active_subscribers().await;
        }
        let sql = format!(
            "SELECT COUNT(*) AS n FROM subscribers WHERE {}",
            Segment::filter(segment).replace("{training}", "$1")
        );
        Ok(sqlx::query(AssertSqlSafe(sql))
            .bind(training)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?)
    }

    /// List mailings that went out (or were closed), most recent first, with delivery counts.
    pub async fn recent_mailings(&self, limit: i64) -> Result<Vec<MailingSummary>> {
        let rows = sqlx::query(
            "SELECT m.key, m.kind, m.state, m.due_at, m.training, m.reason,
                    COUNT(d.id) AS total,
                    COUNT(CASE WHEN d.state = 'sent' THEN 1 END) AS sent,
                    COUNT(CASE WHEN d.state = 'failed' THEN 1 END) AS failed,
                    COUNT(CASE WHEN d.state IN ('queued', 'sending') THEN 1 END) AS pending,
                    COUNT(CASE WHEN d.state = 'skipped' THEN 1 END) AS skipped
             FROM mailings m LEFT JOIN deliveries d ON d.mailing_id = m.id
             WHERE m.audience = 'list' AND m.state <> 'planned'
             GROUP BY m.id, m.key, m.kind, m.state, m.due_at, m.training, m.reason
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
                    training: r.try_get("training")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// List mailings closed without sending and with a reason, most recently closed first.
    pub async fn skipped_mailings(&self, limit: i64) -> Result<Vec<SkippedMailing>> {
        let rows = sqlx::query(
            "SELECT key, kind, due_at, updated_at, reason, training FROM mailings
             WHERE audience = 'list' AND state = 'skipped' AND reason IS NOT NULL
             ORDER BY updated_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SkippedMailing {
                    key: r.try_get("key")?,
                    kind: r.try_get("kind")?,
                    due_ms: r.try_get("due_at")?,
                    skipped_ms: r.try_get("updated_at")?,
                    reason: r.try_get("reason")?,
                    training: r.try_get("training")?,
                })
            })
            .collect()
    }

    /// Which of `keys` name a mailing in the database, in any state: a mailing the
    /// planner would write is not shown a second time beside one it already wrote.
    pub async fn known_mailing_keys(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashSet<String>> {
        let mut known = std::collections::HashSet::new();
        // In groups, to stay far below any backend's limit on bound parameters.
        for chunk in keys.chunks(500) {
            let sql = format!(
                "SELECT key FROM mailings WHERE key IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for key in chunk {
                query = query.bind(key);
            }
            for row in query.fetch_all(self.pool()).await? {
                known.insert(row.try_get("key")?);
            }
        }
        Ok(known)
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

/// One training's registrations, for a funder's report. Forgotten people's rows count
/// too: forgetting erases who they were, not that they came.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RegistrationTally {
    /// Held a seat: registered, or marked attended.
    pub registered: i64,
    /// Still waiting (or holding an offer they had not claimed).
    pub waitlisted: i64,
    pub attended: i64,
    /// Registered and not marked attended (a no-show, once the training is over).
    pub not_attended: i64,
    /// Gave up their seat, left the waiting list, declined an offer, or were cancelled.
    pub cancelled: i64,
    /// Distinct organisations among those registered (folded, so spellings count once;
    /// people who gave none are not counted).
    pub organisations: i64,
    /// Distinct organisations among those who attended.
    pub organisations_attended: i64,
}

impl Store {
    /// Every session's tally, by session id (sessions nobody registered for are absent).
    pub async fn registration_tallies(
        &self,
    ) -> Result<std::collections::HashMap<String, RegistrationTally>> {
        let rows = sqlx::query(
            "SELECT session_id,
                    COUNT(CASE WHEN status IN ('registered', 'attended') THEN 1 END) AS registered,
                    COUNT(CASE WHEN status IN ('waitlisted', 'offered') THEN 1 END) AS waitlisted,
                    COUNT(CASE WHEN status = 'attended' THEN 1 END) AS attended,
                    COUNT(CASE WHEN status = 'registered' THEN 1 END) AS not_attended,
                    COUNT(CASE WHEN status = 'cancelled' THEN 1 END) AS cancelled,
                    COUNT(DISTINCT CASE WHEN status IN ('registered', 'attended') THEN org_key END) AS orgs,
                    COUNT(DISTINCT CASE WHEN status = 'attended' THEN org_key END) AS orgs_attended
             FROM registrations GROUP BY session_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("session_id")?,
                    RegistrationTally {
                        registered: r.try_get("registered")?,
                        waitlisted: r.try_get("waitlisted")?,
                        attended: r.try_get("attended")?,
                        not_attended: r.try_get("not_attended")?,
                        cancelled: r.try_get("cancelled")?,
                        organisations: r.try_get("orgs")?,
                        organisations_attended: r.try_get("orgs_attended")?,
                    },
                ))
            })
            .collect()
    }

    /// Distinct organisations over several sessions together, (registered, attended): the
    /// report's total, where one organisation at three trainings counts once.
    pub async fn distinct_organisations(&self, session_ids: &[String]) -> Result<(i64, i64)> {
        if session_ids.is_empty() {
            return Ok((0, 0));
        }
        let sql = format!(
            "SELECT COUNT(DISTINCT CASE WHEN status IN ('registered', 'attended') THEN org_key END) AS orgs,
                    COUNT(DISTINCT CASE WHEN status = 'attended' THEN org_key END) AS orgs_attended
             FROM registrations WHERE session_id IN ({})",
            placeholders(1, session_ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in session_ids {
            query = query.bind(id);
        }
        let r = query.fetch_one(self.pool()).await?;
        Ok((r.try_get("orgs")?, r.try_get("orgs_attended")?))
    }
}
