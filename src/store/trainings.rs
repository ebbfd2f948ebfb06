//! What was last announced about each training: its fingerprint and iCalendar SEQUENCE.
//!
//! The planner compares each session in the configured calendar with its row here. A
//! changed fingerprint bumps the sequence; if reminders already went out for it, the
//! planner queues an update or a cancellation notice.

use sqlx::Row;

use super::{Backend, Result, Store};

#[derive(Debug, Clone, PartialEq)]
pub struct TrainingRow {
    pub uid: String,
    pub fingerprint: String,
    pub sequence: i64,
    pub start_ms: i64,
    pub cancelled: bool,
    pub snapshot: String,
    /// When the row was last written (ignored by [`Store::save_training`], which stamps it).
    pub updated_ms: i64,
}

/// Held while this process plans. Release it with [`PlannerLock::release`]: merely
/// dropping the transaction defers its rollback until the connection is next used, and
/// the lock would linger into the next turn.
pub struct PlannerLock(Option<sqlx::Transaction<'static, sqlx::Any>>);

impl PlannerLock {
    pub async fn release(self) {
        if let Some(tx) = self.0
            && let Err(e) = tx.rollback().await
        {
            tracing::warn!(error = %e, "releasing the planner lock failed; it ends with the connection");
        }
    }
}

/// Arbitrary constant naming harborlist's planner lock in PostgreSQL's advisory lock space.
const PLANNER_LOCK_KEY: i64 = 0x6861_7262_6f72; // "harbor"

impl Store {
    pub async fn training(&self, uid: &str) -> Result<Option<TrainingRow>> {
        let row = sqlx::query("SELECT uid, fingerprint, sequence, start_at, cancelled, snapshot, updated_at FROM trainings WHERE uid = $1")
            .bind(uid)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| training_row(&r)).transpose()
    }

    /// Trainings on record that start after `after_ms`, for noticing ones removed from config.
    pub async fn trainings_after(&self, after_ms: i64) -> Result<Vec<TrainingRow>> {
        let rows = sqlx::query(
            "SELECT uid, fingerprint, sequence, start_at, cancelled, snapshot, updated_at FROM trainings WHERE start_at > $1 ORDER BY start_at",
        )
        .bind(after_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(training_row).collect()
    }

    pub async fn save_training(&self, t: &TrainingRow, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO trainings (uid, fingerprint, sequence, start_at, cancelled, snapshot, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (uid) DO UPDATE SET fingerprint = excluded.fingerprint, sequence = excluded.sequence,
                 start_at = excluded.start_at, cancelled = excluded.cancelled, snapshot = excluded.snapshot,
                 updated_at = excluded.updated_at",
        )
        .bind(&t.uid)
        .bind(&t.fingerprint)
        .bind(t.sequence)
        .bind(t.start_ms)
        .bind(i64::from(t.cancelled))
        .bind(&t.snapshot)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Whether any mail about the training has started going out (a reminder fanned out).
    pub async fn training_announced(&self, uid: &str) -> Result<bool> {
        let prefix = format!("reminder:{uid}:");
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM mailings WHERE state IN ('fanning', 'fanned') AND substr(key, 1, CAST($1 AS INTEGER)) = $2",
        )
        .bind(prefix.len() as i64)
        .bind(&prefix)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// On PostgreSQL, one instance at a time plans: the others see `None` and skip the
    /// turn. SQLite is a single-instance backend, so the lock is always granted.
    pub async fn try_planner_lock(&self) -> Result<Option<PlannerLock>> {
        match self.backend() {
            Backend::Sqlite => Ok(Some(PlannerLock(None))),
            Backend::Postgres => {
                let mut tx = self.pool().begin().await?;
                let got: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS got")
                    .bind(PLANNER_LOCK_KEY)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("got")?;
                Ok(got.then_some(PlannerLock(Some(tx))))
            }
        }
    }
}

fn training_row(r: &sqlx::any::AnyRow) -> Result<TrainingRow> {
    Ok(TrainingRow {
        uid: r.try_get("uid")?,
        fingerprint: r.try_get("fingerprint")?,
        sequence: r.try_get("sequence")?,
        start_ms: r.try_get("start_at")?,
        cancelled: r.try_get::<i64, _>("cancelled")? != 0,
        snapshot: r.try_get("snapshot")?,
        updated_ms: r.try_get("updated_at")?,
    })
}
