//! Facts about the installation itself: one named row each in `service_state`.
//!
//! Small values that every instance and every CLI command must agree on: the token key's
//! fingerprint (pinned at first start, see `crate::runtime`) and the relay's last known
//! state (written by the sender, read by `harborlist status`). Values are text; callers
//! own their format.

use super::{Result, Store};

/// A stored value and when it was last written (UTC milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateValue {
    pub value: String,
    pub updated_at_ms: i64,
}

impl Store {
    /// The value stored under `name`, if any.
    pub async fn state(&self, name: &str) -> Result<Option<StateValue>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT value, updated_at FROM service_state WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(value, updated_at_ms)| StateValue {
            value,
            updated_at_ms,
        }))
    }

    /// Stores `value` under `name`, replacing what was there.
    pub async fn set_state(&self, name: &str, value: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_state (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Stores `value` under `name` unless a value is already there, and returns the value
    /// that is stored now: `value` if this call wrote it, else the earlier one. Two
    /// instances racing to pin a value both get the winner's.
    pub async fn pin_state(&self, name: &str, value: &str, now_ms: i64) -> Result<String> {
        sqlx::query(
            "INSERT INTO service_state (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        let stored = self.state(name).await?;
        Ok(stored.map(|s| s.value).unwrap_or_else(|| value.to_owned()))
    }
}
