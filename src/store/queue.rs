//! The durable outbox: mailings and their deliveries.
//!
//! A mailing is one thing sent to an audience, under a natural key (`confirm:…`,
//! `reminder:<training>:<name>`, `announcement:<id>`) so that planning it twice is a no-op.
//! Fan-out turns a due list mailing into one `deliveries` row per subscriber of its
//! [`Segment`] (every active subscriber when it has none), in batches by subscriber id,
//! `ON CONFLICT DO NOTHING`. What happens to the deliveries after that (claim,
//! record, lease expiry) is in [`super::delivery`].

use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::{Result, Store};

/// Transactional mail (a person is waiting for it) goes before list mail.
pub const PRIORITY_PERSONAL: i64 = 0;
pub const PRIORITY_LIST: i64 = 1;

/// How the reason of an announcement skipped for being late begins ("send_at Fri May 1
/// 2026 9:00 AM CDT was 214 days ago"): only those are planned again when staff fix it.
pub const LATE_REASON_PREFIX: &str = "send_at ";

/// A mailing to one subscriber, written in the caller's transaction together with the row
/// change that caused it.
pub struct SingleMail {
    pub key: String,
    pub kind: &'static str,
    pub template: &'static str,
    pub data: serde_json::Value,
    pub subscriber_id: i64,
    pub now_ms: i64,
    /// The session it is about (its id), for the registration links it carries.
    pub training: Option<String>,
    /// Never sent at or after this instant (a seat offer, once it has expired).
    pub not_after_ms: Option<i64>,
}

impl SingleMail {
    pub async fn insert(self, tx: &mut Transaction<'static, Any>) -> Result<()> {
        let row = sqlx::query(
            "INSERT INTO mailings (key, kind, template, data, audience, subscriber_id, priority, due_at, state, created_at, updated_at, training, not_after)
             VALUES ($1, $2, $3, $4, 'one', $5, $6, $7, 'fanned', $7, $7, $8, $9)
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
        .bind(self.training.as_deref())
        .bind(self.not_after_ms)
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

/// Who of the list a list mailing goes to; `None` (stored as NULL) is every active
/// subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Everyone registered for the mailing's training, on the list or not.
    Registered,
    /// Active subscribers neither registered, waitlisted nor offered a seat for it.
    Unregistered,
    /// Active subscribers, plus everyone registered, waitlisted or offered a seat for it,
    /// on the list or not: for update and cancellation notices.
    Involved,
}

impl Segment {
    /// The `subscribers` rows a mailing with this segment goes to, as a condition on
    /// `subscribers` where `{training}` stands for the placeholder of the mailing's training
    /// (not used by `None`). Only the segment picks the text, never input.
    ///
    /// * `None`: active subscribers (answered from the `subscribers_active` index).
    /// * `Registered`: whoever holds a seat, whatever their list status: the reminder is
    ///   about their own registration, like the registration mail, so leaving the list (or
    ///   bouncing list mail once) does not stop it. Only a forgotten person (no row) is out.
    /// * `Unregistered`: active, with no live registration.
    /// * `Involved`: active, or with a live registration.
    pub(super) fn filter(segment: Option<Self>) -> &'static str {
        match segment {
            None => "status = 'active'",
            Some(Self::Registered) => {
                "id IN (SELECT subscriber_id FROM registrations
                        WHERE session_id = {training} AND status IN ('registered', 'attended'))"
            }
            Some(Self::Unregistered) => {
                "status = 'active' AND NOT EXISTS (SELECT 1 FROM registrations r
                        WHERE r.subscriber_id = subscribers.id AND r.session_id = {training}
                          AND r.status IN ('registered', 'waitlisted', 'offered', 'attended'))"
            }
            Some(Self::Involved) => {
                "(status = 'active' OR id IN (SELECT subscriber_id FROM registrations
                        WHERE session_id = {training} AND status IN ('registered', 'waitlisted', 'offered', 'attended')))"
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Unregistered => "unregistered",
            Self::Involved => "involved",
        }
    }

    pub fn parse(s: Option<&str>) -> Result<Option<Self>> {
        Ok(match s {
            None => None,
            Some("registered") => Some(Self::Registered),
            Some("unregistered") => Some(Self::Unregistered),
            Some("involved") => Some(Self::Involved),
            Some(other) => {
                return Err(super::StoreError::Corrupt(format!(
                    "unknown mailing segment {other:?}"
                )));
            }
        })
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
    /// The session it is about (its id): registration links, and the segment below.
    pub training: Option<String>,
    /// `None`: every active subscriber.
    pub segment: Option<Segment>,
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
    /// The session it is about (its id), if any.
    pub training: Option<String>,
    /// Who of the list it goes to (`None`: every active subscriber).
    pub segment: Option<Segment>,
}

impl Store {
    /// Inserts the mailing if its key is new; updates due time and data if it is still
    /// only planned (a moved training, an edited announcement) and was last written no
    /// later than `config_ms`, when the caller's configuration was loaded: an instance that
    /// has not yet reloaded an edit must not revert what one that has wrote. Returns whether
    /// a row was written.
    pub async fn upsert_planned(
        &self,
        m: &PlannedMailing,
        now_ms: i64,
        config_ms: i64,
    ) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO mailings (key, kind, template, data, audience, priority, due_at, not_after, state, created_at, updated_at, training, segment)
             VALUES ($1, $2, $3, $4, 'list', $5, $6, $7, 'planned', $8, $8, $10, $11)
             ON CONFLICT (key) DO UPDATE SET
                 template = excluded.template, data = excluded.data, due_at = excluded.due_at,
                 not_after = excluded.not_after, updated_at = excluded.updated_at,
                 training = excluded.training, segment = excluded.segment
             WHERE mailings.state = 'planned' AND mailings.updated_at <= $9
               AND (mailings.template <> excluded.template OR mailings.data <> excluded.data
                    OR mailings.due_at <> excluded.due_at
                    OR COALESCE(mailings.not_after, -1) <> COALESCE(excluded.not_after, -1)
                    OR COALESCE(mailings.training, '') <> COALESCE(excluded.training, '')
                    OR COALESCE(mailings.segment, '') <> COALESCE(excluded.segment, ''))",
        )
        .bind(&m.key)
        .bind(&m.kind)
        .bind(&m.template)
        .bind(m.data.to_string())
        .bind(PRIORITY_LIST)
        .bind(m.due_ms)
        .bind(m.not_after_ms)
        .bind(now_ms)
        .bind(config_ms)
        .bind(m.training.as_deref())
        .bind(m.segment.map(Segment::as_str))
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn mailing_by_key(&self, key: &str) -> Result<Option<MailingRow>> {
        let row = sqlx::query(
            "SELECT id, key, kind, state, due_at, not_after, data, training, segment FROM mailings WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| mailing_row(&r)).transpose()
    }

    /// Planned list mailings whose keys start with `prefix`, for reconciling with config.
    pub async fn planned_with_prefix(&self, prefix: &str) -> Result<Vec<MailingRow>> {
        let rows = sqlx::query(
            "SELECT id, key, kind, state, due_at, not_after, data, training, segment FROM mailings
             WHERE state = 'planned' AND audience = 'list' AND substr(key, 1, CAST($1 AS INTEGER)) = $2",
        )
        .bind(prefix.len() as i64)
        .bind(prefix)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(mailing_row).collect()
    }

    /// Moves a planned mailing to a final state without sending it, if it was last written
    /// no later than `config_ms` (see [`Store::upsert_planned`]; `i64::MAX` where the reason
    /// does not come from configuration).
    pub async fn close_planned(
        &self,
        id: i64,
        state: &'static str,
        now_ms: i64,
        config_ms: i64,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE mailings SET state = $1, updated_at = $2
             WHERE id = $3 AND state = 'planned' AND updated_at <= $4",
        )
        .bind(state)
        .bind(now_ms)
        .bind(id)
        .bind(config_ms)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Closes a planned mailing as `skipped`, with the reason staff will read in `status`.
    /// Not limited by the configuration's stamp: the row itself says whether it may go late
    /// (an announcement's `send_late` is in its data), and the planner that just inserted a
    /// row must be able to skip it.
    pub async fn skip_planned(&self, id: i64, reason: &str, now_ms: i64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE mailings SET state = 'skipped', reason = $1, updated_at = $2
             WHERE id = $3 AND state = 'planned'",
        )
        .bind(reason)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Plans again an announcement that was skipped for being late ([`LATE_REASON_PREFIX`])
    /// and never fanned out, as `m` now wants it: staff fixed its `send_at` or set
    /// `send_late`. Like [`Store::upsert_planned`], only if the row was last written no later
    /// than `config_ms`. Returns whether it was planned again.
    pub async fn replan_late(
        &self,
        m: &PlannedMailing,
        now_ms: i64,
        config_ms: i64,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE mailings SET state = 'planned', reason = NULL, template = $1, data = $2,
                 due_at = $3, not_after = $4, updated_at = $5
             WHERE key = $6 AND state = 'skipped' AND substr(reason, 1, CAST($7 AS INTEGER)) = $8
               AND updated_at <= $9
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.mailing_id = mailings.id)",
        )
        .bind(&m.template)
        .bind(m.data.to_string())
        .bind(m.due_ms)
        .bind(m.not_after_ms)
        .bind(now_ms)
        .bind(&m.key)
        .bind(LATE_REASON_PREFIX.len() as i64)
        .bind(LATE_REASON_PREFIX)
        .bind(config_ms)
        .execute(self.pool())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// List mailings that are due (or mid-fan-out), earliest first.
    pub async fn due_mailings(&self, now_ms: i64) -> Result<Vec<MailingRow>> {
        let rows = sqlx::query(
            "SELECT id, key, kind, state, due_at, not_after, data, training, segment FROM mailings
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
    /// mailing is then marked `fanned`). The mailing's segment picks who (see
    /// [`Segment::filter`]); every segment pages by subscriber id, so the cursor works the
    /// same for all of them and a restart mid-fan-out goes on where it stopped.
    pub async fn fan_out_batch(&self, mailing_id: i64, batch: i64, now_ms: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT fanout_cursor, state, training, segment FROM mailings WHERE id = $1",
        )
        .bind(mailing_id)
        .fetch_one(&mut *tx)
        .await?;
        let cursor: i64 = row.try_get("fanout_cursor")?;
        let state: String = row.try_get("state")?;
        let training: Option<String> = row.try_get("training")?;
        let segment = Segment::parse(row.try_get::<Option<String>, _>("segment")?.as_deref())?;
        if state != "planned" && state != "fanning" {
            tx.rollback().await?;
            return Ok(0);
        }
        // The training is bound last, and only where the segment's condition names it.
        let filter = |t: &str| Segment::filter(segment).replace("{training}", t);
        let page = format!(
            "SELECT MAX(id) AS upper FROM (
                 SELECT id FROM subscribers WHERE {} AND id > $1 ORDER BY id LIMIT $2
             ) AS page",
            filter("$3")
        );
        let mut query = sqlx::query(AssertSqlSafe(page)).bind(cursor).bind(batch);
        if segment.is_some() {
            query = query.bind(training.clone());
        }
        let upper: Option<i64> = query.fetch_one(&mut *tx).await?.try_get("upper")?;
        let Some(upper) = upper else {
            sqlx::query("UPDATE mailings SET state = 'fanned', updated_at = $1 WHERE id = $2")
                .bind(now_ms)
                .bind(mailing_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(0);
        };
        let insert = format!(
            "INSERT INTO deliveries (mailing_id, subscriber_id, priority, state, next_attempt_at)
             SELECT $3, id, $4, 'queued', $5 FROM subscribers
             WHERE {} AND id > $1 AND id <= $2
             ON CONFLICT (mailing_id, subscriber_id) DO NOTHING",
            filter("$6")
        );
        let mut query = sqlx::query(AssertSqlSafe(insert))
            .bind(cursor)
            .bind(upper)
            .bind(mailing_id)
            .bind(PRIORITY_LIST)
            .bind(now_ms);
        if segment.is_some() {
            query = query.bind(training);
        }
        let inserted = query.execute(&mut *tx).await?;
        sqlx::query("UPDATE mailings SET state = 'fanning', fanout_cursor = $1, updated_at = $2 WHERE id = $3")
            .bind(upper)
            .bind(now_ms)
            .bind(mailing_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted.rows_affected().max(1))
    }
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
        training: r.try_get("training")?,
        segment: Segment::parse(r.try_get::<Option<String>, _>("segment")?.as_deref())?,
    })
}
