//! A token-key rotation's writes: every link registered again under the new key.
//!
//! Links are found by the hash of their token, and the sender derives each link afresh
//! with the current key. So after a rotation each subscriber's unsubscribe hash becomes
//! the one under the new key, and the old hash moves to `unsub_links`, where the web flow
//! still finds it (links in mail already sent keep working). A confirmation token that has
//! not expired gets a second row under the new hash, sharing its expiry and use. A
//! registration's link (give up, leave the waiting list, claim) moves the same way as an
//! unsubscribe link: its `link_hash` becomes the new key's, and the old one moves to
//! `registration_links`, where `registration_by_link` still finds it. The caller
//! (`crate::runtime::keys`) derives the hashes; this module only stores them. Each page is
//! one transaction and a page already moved is left alone, so an interrupted rotation is
//! simply run again.

use sqlx::{AssertSqlSafe, Row};

use super::{Result, Store, StoreError, roster::json_rows};

/// A subscriber's unsubscribe link as stored: its nonce and the hash of its token.
#[derive(Debug, Clone)]
pub struct UnsubscribeLink {
    pub subscriber_id: i64,
    pub nonce: String,
    pub hash: String,
}

/// A registration's link as stored: its nonce and the hash of its token.
#[derive(Debug, Clone)]
pub struct RegistrationLink {
    pub registration_id: i64,
    pub nonce: String,
    pub hash: String,
}

/// A confirmation mailing whose token may still be used.
#[derive(Debug, Clone)]
pub struct OpenConfirmation {
    pub subscriber_id: i64,
    /// The first 16 hex digits of the token's hash, from the mailing's key.
    pub hash_prefix: String,
    pub nonce: String,
}

impl Store {
    /// Up to `limit` subscribers' unsubscribe links, by id, after `after_id`.
    pub async fn unsubscribe_links_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<UnsubscribeLink>> {
        let rows = sqlx::query(
            "SELECT id, unsub_nonce, unsub_hash FROM subscribers WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnsubscribeLink {
                    subscriber_id: r.try_get("id")?,
                    nonce: r.try_get("unsub_nonce")?,
                    hash: r.try_get("unsub_hash")?,
                })
            })
            .collect()
    }

    /// Gives each `(link, new_hash)` its new hash, keeping the old one valid, in one
    /// transaction of two statements (the page travels as one JSON parameter, as imports
    /// do). A row whose hash changed meanwhile is left alone.
    pub async fn relink_unsubscribe(&self, moves: &[(UnsubscribeLink, String)]) -> Result<()> {
        // Each move as [subscriber id, old hash, new hash].
        let page = serde_json::to_string(
            &moves
                .iter()
                .map(|(link, new_hash)| (link.subscriber_id, &link.hash, new_hash))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| StoreError::Corrupt(format!("relink page: {e}")))?;
        let rows = json_rows(self.backend(), 1);
        let mut tx = self.begin().await?;
        // `WHERE true` lets SQLite parse the upsert after a SELECT.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO unsub_links (hash, subscriber_id)
             SELECT r.value ->> 1, CAST(r.value ->> 0 AS BIGINT) FROM {rows} AS r WHERE true
             ON CONFLICT (hash) DO NOTHING"
        )))
        .bind(&page)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE subscribers SET unsub_hash = r.value ->> 2 FROM {rows} AS r
             WHERE subscribers.id = CAST(r.value ->> 0 AS BIGINT) AND subscribers.unsub_hash = r.value ->> 1"
        )))
        .bind(&page)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Confirmation mailings whose token has not expired at `now_ms`.
    pub async fn open_confirmations(&self, now_ms: i64) -> Result<Vec<OpenConfirmation>> {
        let rows = sqlx::query(
            "SELECT key, subscriber_id, data FROM mailings WHERE kind = 'confirm' AND subscriber_id IN
                 (SELECT subscriber_id FROM tokens WHERE purpose = 'confirm' AND expires_at > $1)",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?;
        let mut open = Vec::new();
        for r in &rows {
            let key: String = r.try_get("key")?;
            let data: String = r.try_get("data")?;
            let nonce = serde_json::from_str::<serde_json::Value>(&data)
                .ok()
                .and_then(|d| d.get("confirm_nonce")?.as_str().map(str::to_owned));
            // The key is `confirm:<sid>:<hash16>` (see `subscriptions`).
            let prefix = key.rsplit(':').next().filter(|p| p.len() == 16);
            if let (Some(nonce), Some(prefix)) = (nonce, prefix) {
                open.push(OpenConfirmation {
                    subscriber_id: r.try_get("subscriber_id")?,
                    hash_prefix: prefix.to_owned(),
                    nonce,
                });
            }
        }
        Ok(open)
    }

    /// Lets `new_hash` stand for the confirmation token `open` names: a copy of its row
    /// (expiry, use) under the new hash. Repeating it changes nothing.
    pub async fn relink_confirmation(&self, open: &OpenConfirmation, new_hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (hash, purpose, subscriber_id, created_at, expires_at, used_at, name)
             SELECT $1, purpose, subscriber_id, created_at, expires_at, used_at, name FROM tokens
             WHERE subscriber_id = $2 AND purpose = 'confirm' AND substr(hash, 1, 16) = $3 AND hash <> $1
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(new_hash)
        .bind(open.subscriber_id)
        .bind(&open.hash_prefix)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Up to `limit` registrations' links, by id, after `after_id` (forgotten people's rows
    /// have none).
    pub async fn registration_links_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<RegistrationLink>> {
        let rows = sqlx::query(
            "SELECT id, nonce, link_hash FROM registrations
             WHERE id > $1 AND nonce IS NOT NULL AND link_hash IS NOT NULL ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RegistrationLink {
                    registration_id: r.try_get("id")?,
                    nonce: r.try_get("nonce")?,
                    hash: r.try_get("link_hash")?,
                })
            })
            .collect()
    }

    /// Gives each registration link its new hash, keeping the old one valid in
    /// `registration_links`, as [`Store::relink_unsubscribe`] does for unsubscribe links.
    pub async fn relink_registrations(&self, moves: &[(RegistrationLink, String)]) -> Result<()> {
        // Each move as [registration id, old hash, new hash].
        let page = serde_json::to_string(
            &moves
                .iter()
                .map(|(link, new_hash)| (link.registration_id, &link.hash, new_hash))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| StoreError::Corrupt(format!("relink page: {e}")))?;
        let rows = json_rows(self.backend(), 1);
        let mut tx = self.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO registration_links (hash, registration_id)
             SELECT r.value ->> 1, CAST(r.value ->> 0 AS BIGINT) FROM {rows} AS r WHERE true
             ON CONFLICT (hash) DO NOTHING"
        )))
        .bind(&page)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE registrations SET link_hash = r.value ->> 2 FROM {rows} AS r
             WHERE registrations.id = CAST(r.value ->> 0 AS BIGINT) AND registrations.link_hash = r.value ->> 1"
        )))
        .bind(&page)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
