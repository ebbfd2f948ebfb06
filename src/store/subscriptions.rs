//! Subscribers and confirmation tokens: the rows the web flow writes.
//!
//! Each public function is one transaction that leaves the database consistent: a
//! subscribe request writes the subscriber, its confirm token and the confirmation mailing
//! together; a confirmation activates the subscriber and queues the welcome together. The
//! caller derives tokens (see [`crate::domain::Token`]) and passes only nonces and hashes,
//! so no plaintext token is ever stored.

use serde::Serialize;
use sqlx::Row;

use super::{
    Result, Store, StoreError, bounce_report::LastBounce, is_unique_violation, queue::SingleMail,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Active,
    Unsubscribed,
    Bouncing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Unsubscribed => "unsubscribed",
            Self::Bouncing => "bouncing",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "active" => Self::Active,
            "unsubscribed" => Self::Unsubscribed,
            "bouncing" => Self::Bouncing,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown subscriber status {other:?}"
                )));
            }
        })
    }
}

/// Everything a subscribe request carries, already parsed.
#[derive(Debug)]
pub struct SubscribeRequest<'a> {
    pub email: &'a str,
    pub email_key: &'a str,
    pub name: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub now_ms: i64,
    /// For a new subscriber: the unsubscribe link's nonce and token hash.
    pub unsub_nonce: &'a str,
    pub unsub_hash: &'a str,
    /// The confirmation link's nonce (kept in the mailing) and token hash (kept in tokens).
    pub confirm_nonce: &'a str,
    pub confirm_hash: &'a str,
    pub confirm_expires_ms: i64,
    pub max_per_day: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    ConfirmationQueued,
    AlreadyActive,
    RateLimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Valid,
    Used,
    Expired,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed { subscriber_id: i64 },
    Refused(TokenState),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsubscribeOutcome {
    /// The subscriber is now (or already was) unsubscribed; `email` lets the page offer a
    /// way back in to the person holding the link.
    Done {
        email: String,
        changed: bool,
    },
    Unknown,
}

/// A subscriber as the command line shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberRow {
    pub email: String,
    pub name: Option<String>,
    pub status: Status,
    pub source: String,
    pub created_at: String,
    pub confirmed_at: Option<String>,
    /// For a bouncing subscriber, their most recent report (fields null if there is none);
    /// absent for everyone else.
    #[serde(flatten)]
    pub last_bounce: Option<LastBounce>,
}

const DAY_MS: i64 = 86_400_000;

/// Whether the subscriber row `s` is someone on the list, in any state, rather than a
/// person who only registered for a training: such a row is `pending` with no request to
/// join (`requested_at` is set by every subscribe request) and has a registration. They
/// are never list members: `subscribers list`, `export` and the counts leave them out, and
/// `registrations list` shows them. Asking to join later makes them an ordinary pending
/// subscriber.
pub(crate) const ON_LIST: &str = "NOT (s.status = 'pending' AND s.requested_at IS NULL
     AND EXISTS (SELECT 1 FROM registrations r WHERE r.subscriber_id = s.id))";

/// The subscriber whose unsubscribe link hashes to `$1`: under the current key
/// (`unsub_hash`), or under an earlier one (`unsub_links`, written by a key rotation). Two
/// indexed lookups, then the primary key.
macro_rules! unsub_link {
    () => {
        "id = COALESCE(
            (SELECT id FROM subscribers WHERE unsub_hash = $1),
            (SELECT subscriber_id FROM unsub_links WHERE hash = $1))"
    };
}

impl Store {
    pub async fn request_subscription(
        &self,
        req: &SubscribeRequest<'_>,
    ) -> Result<SubscribeOutcome> {
        // A concurrent insert of the same address can lose the unique race; one retry sees
        // the winner's row.
        match self.request_subscription_once(req).await {
            Err(StoreError::Sql(e)) if is_unique_violation(&e) => {
                self.request_subscription_once(req).await
            }
            other => other,
        }
    }

    async fn request_subscription_once(
        &self,
        req: &SubscribeRequest<'_>,
    ) -> Result<SubscribeOutcome> {
        let mut tx = self.begin().await?;
        // A new address starts with no name: the name belongs to the request (it is kept
        // with its token) until that request's link is confirmed.
        sqlx::query(
            "INSERT INTO subscribers (email, email_key, name, status, source, unsub_nonce, unsub_hash, created_at, updated_at)
             VALUES ($1, $2, NULL, 'pending', 'web', $3, $4, $5, $5)
             ON CONFLICT (email_key) DO NOTHING",
        )
        .bind(req.email)
        .bind(req.email_key)
        .bind(req.unsub_nonce)
        .bind(req.unsub_hash)
        .bind(req.now_ms)
        .execute(&mut *tx)
        .await?;
        // Every request counts, whatever the address's state, so that the 429 threshold is
        // the same for a subscribed and an unknown address and reveals nothing. One
        // conditional UPDATE counts and reads: under READ COMMITTED a read-then-write
        // would let concurrent requests all see the same count.
        let row = sqlx::query(
            "UPDATE subscribers SET
                 window_count = CASE WHEN $1 - window_start >= $2 THEN 1 ELSE window_count + 1 END,
                 window_start = CASE WHEN $1 - window_start >= $2 THEN $1 ELSE window_start END
             WHERE email_key = $3
             RETURNING id, status, window_count",
        )
        .bind(req.now_ms)
        .bind(DAY_MS)
        .bind(req.email_key)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        let status = Status::parse(&row.try_get::<String, _>("status")?)?;
        let count: i64 = row.try_get("window_count")?;
        if count > i64::from(req.max_per_day) {
            tx.commit().await?;
            return Ok(SubscribeOutcome::RateLimited);
        }
        if status == Status::Active {
            tx.commit().await?;
            return Ok(SubscribeOutcome::AlreadyActive);
        }

        sqlx::query(
            "UPDATE subscribers SET requested_at = $1, request_ip = $2, request_user_agent = $3,
                    updated_at = $1
             WHERE id = $4",
        )
        .bind(req.now_ms)
        .bind(req.ip)
        .bind(req.user_agent)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO tokens (hash, purpose, subscriber_id, created_at, expires_at, name)
             VALUES ($1, 'confirm', $2, $3, $4, $5)",
        )
        .bind(req.confirm_hash)
        .bind(id)
        .bind(req.now_ms)
        .bind(req.confirm_expires_ms)
        .bind(req.name)
        .execute(&mut *tx)
        .await?;
        let data = serde_json::json!({ "confirm_nonce": req.confirm_nonce, "expires_at_ms": req.confirm_expires_ms });
        SingleMail {
            key: format!("confirm:{id}:{}", &req.confirm_hash[..16]),
            kind: "confirm",
            template: "confirm",
            data,
            subscriber_id: id,
            now_ms: req.now_ms,
            training: None,
            not_after_ms: None,
        }
        .insert(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(SubscribeOutcome::ConfirmationQueued)
    }

    /// What a confirm link would do, without doing it (for the GET page).
    pub async fn confirm_token_state(&self, hash: &str, now_ms: i64) -> Result<TokenState> {
        let row = sqlx::query(
            "SELECT expires_at, used_at FROM tokens WHERE hash = $1 AND purpose = 'confirm'",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            None => TokenState::Unknown,
            Some(row) => {
                let used: Option<i64> = row.try_get("used_at")?;
                let expires: i64 = row.try_get("expires_at")?;
                if used.is_some() {
                    TokenState::Used
                } else if expires <= now_ms {
                    TokenState::Expired
                } else {
                    TokenState::Valid
                }
            }
        })
    }

    /// Spends a confirm token: activates the subscriber, records consent, queues the welcome
    /// with `welcome` as its data (the next training and the reminders, as of now).
    pub async fn confirm(
        &self,
        hash: &str,
        ip: Option<&str>,
        user_agent: Option<&str>,
        now_ms: i64,
        welcome: &serde_json::Value,
    ) -> Result<ConfirmOutcome> {
        let mut tx = self.begin().await?;
        // The conditional UPDATE is the single-use guarantee: of two racing clicks, one
        // matches the row and the other finds used_at already set.
        let spent = sqlx::query(
            "UPDATE tokens SET used_at = $1
             WHERE hash = $2 AND purpose = 'confirm' AND used_at IS NULL AND expires_at > $1
             RETURNING subscriber_id, name",
        )
        .bind(now_ms)
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = spent else {
            tx.rollback().await?;
            return Ok(ConfirmOutcome::Refused(
                self.confirm_token_state(hash, now_ms).await?,
            ));
        };
        let id: i64 = row.try_get("subscriber_id")?;
        // The person who clicked proved the address: their request's name is the one kept
        // (a returning member who typed none keeps the one they had).
        let name: Option<String> = row.try_get("name")?;
        sqlx::query(
            "UPDATE subscribers SET status = 'active', confirmed_at = $1, confirm_ip = $2,
                    confirm_user_agent = $3, unsubscribed_at = NULL, unsubscribe_reason = NULL,
                    bounce_score = 0, bounce_raised_at = NULL, bounce_scored_day = NULL, updated_at = $1,
                    name = COALESCE($5, name)
             WHERE id = $4",
        )
        .bind(now_ms)
        .bind(ip)
        .bind(user_agent)
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        // Older confirmation links for the same person die with this one.
        sqlx::query("UPDATE tokens SET used_at = $1 WHERE subscriber_id = $2 AND used_at IS NULL")
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        SingleMail {
            key: format!("welcome:{id}:{}", &hash[..16]),
            kind: "welcome",
            template: "welcome",
            data: welcome.clone(),
            subscriber_id: id,
            now_ms,
            training: None,
            not_after_ms: None,
        }
        .insert(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(ConfirmOutcome::Confirmed { subscriber_id: id })
    }

    /// Whether an unsubscribe link is known (for the GET page). A link is known by the
    /// subscriber's current hash, or by one kept from before a key rotation.
    pub async fn unsubscribe_link_known(&self, unsub_hash: &str) -> Result<bool> {
        Ok(
            sqlx::query(concat!("SELECT id FROM subscribers WHERE ", unsub_link!()))
                .bind(unsub_hash)
                .fetch_optional(self.pool())
                .await?
                .is_some(),
        )
    }

    /// Unsubscribes at once; repeating it changes nothing.
    pub async fn unsubscribe(
        &self,
        unsub_hash: &str,
        now_ms: i64,
        send_goodbye: bool,
    ) -> Result<UnsubscribeOutcome> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(concat!(
            "SELECT id, email, status FROM subscribers WHERE ",
            unsub_link!()
        ))
        .bind(unsub_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(UnsubscribeOutcome::Unknown);
        };
        let id: i64 = row.try_get("id")?;
        let email: String = row.try_get("email")?;
        let status = Status::parse(&row.try_get::<String, _>("status")?)?;
        let changed = status != Status::Unsubscribed;
        if changed {
            self.set_unsubscribed(&mut tx, id, now_ms).await?;
            if send_goodbye && status == Status::Active {
                SingleMail {
                    key: format!("goodbye:{id}:{now_ms}"),
                    kind: "goodbye",
                    template: "goodbye",
                    data: serde_json::json!({}),
                    subscriber_id: id,
                    now_ms,
                    training: None,
                    not_after_ms: None,
                }
                .insert(&mut tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(UnsubscribeOutcome::Done { email, changed })
    }

    /// Unsubscribes in the caller's transaction; shared by the web flow and `subscribers remove`.
    pub(super) async fn set_unsubscribed(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: i64,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        spend_open_tokens(tx, id, now_ms).await
    }

    /// Every subscriber, oldest first, for `harborlist subscribers list` (people who only
    /// registered for a training are not on the list: see [`ON_LIST`]).
    pub async fn list_subscribers(&self) -> Result<Vec<SubscriberRow>> {
        self.list_subscribers_by(None).await
    }

    /// The subscribers with `status` (everyone, if `None`), oldest first, each bouncing one
    /// with their most recent report.
    pub async fn list_subscribers_by(&self, status: Option<Status>) -> Result<Vec<SubscriberRow>> {
        // The report is looked up only for bouncing rows, each by the
        // `bounce_events_by_subscriber` index. Only fixed text is spliced in.
        let filter = if status.is_some() {
            " AND s.status = $2"
        } else {
            ""
        };
        let query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT s.email, s.name, s.status, s.source, s.created_at, s.confirmed_at,
                    e.received_at AS bounce_at, e.status AS bounce_status, e.diagnostic AS bounce_diagnostic
             FROM subscribers s
             LEFT JOIN bounce_events e ON s.status = $1 AND e.id =
                 (SELECT x.id FROM bounce_events x WHERE x.subscriber_id = s.id
                  ORDER BY x.received_at DESC, x.id DESC LIMIT 1)
             WHERE {ON_LIST}{filter} ORDER BY s.id"
        )))
        .bind(Status::Bouncing.as_str());
        let query = match status {
            Some(status) => query.bind(status.as_str()),
            None => query,
        };
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let status = Status::parse(&row.try_get::<String, _>("status")?)?;
                let last_bounce = (status == Status::Bouncing)
                    .then(|| -> Result<LastBounce> {
                        Ok(LastBounce {
                            last_bounce_at: row
                                .try_get::<Option<i64>, _>("bounce_at")?
                                .map(rfc3339),
                            last_status: row.try_get("bounce_status")?,
                            last_diagnostic: row.try_get("bounce_diagnostic")?,
                        })
                    })
                    .transpose()?;
                Ok(SubscriberRow {
                    email: row.try_get("email")?,
                    name: row.try_get("name")?,
                    status,
                    source: row.try_get("source")?,
                    created_at: rfc3339(row.try_get("created_at")?),
                    confirmed_at: row.try_get::<Option<i64>, _>("confirmed_at")?.map(rfc3339),
                    last_bounce,
                })
            })
            .collect()
    }

    /// Counts by status, for metrics and `status` (list members only: see [`ON_LIST`]).
    pub async fn subscriber_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT status, COUNT(*) AS n FROM subscribers s WHERE {ON_LIST} GROUP BY status ORDER BY status"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>("status")?, r.try_get::<i64, _>("n")?)))
            .collect()
    }

    /// People who registered for a training without being on the list.
    pub async fn registrants_off_list(&self) -> Result<i64> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM subscribers s WHERE NOT ({ON_LIST})"
        )))
        .fetch_one(self.pool())
        .await?
        .try_get("n")?)
    }
}

/// A subscriber as a member's one-click Register link needs them: the nonce the link is
/// checked against, their status, and what their registration is made from.
#[derive(Debug, Clone)]
pub struct LinkSubscriber {
    pub id: i64,
    pub email: String,
    pub email_key: String,
    pub name: Option<String>,
    pub status: Status,
    pub unsub_nonce: String,
    pub unsub_hash: String,
}

impl Store {
    /// The subscriber with this id, for checking a member link against their nonce.
    pub async fn subscriber_for_link(&self, id: i64) -> Result<Option<LinkSubscriber>> {
        let row = sqlx::query(
            "SELECT id, email, email_key, name, status, unsub_nonce, unsub_hash
             FROM subscribers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(LinkSubscriber {
                id: r.try_get("id")?,
                email: r.try_get("email")?,
                email_key: r.try_get("email_key")?,
                name: r.try_get("name")?,
                status: Status::parse(&r.try_get::<String, _>("status")?)?,
                unsub_nonce: r.try_get("unsub_nonce")?,
                unsub_hash: r.try_get("unsub_hash")?,
            })
        })
        .transpose()
    }
}

use crate::clock::rfc3339;

/// What happened to one imported address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Added,
    /// Already known (any state): left as it is, so an import never re-subscribes someone
    /// who left.
    Existing,
    /// Forgotten earlier at the person's request: not re-added.
    Suppressed,
}

/// An address arriving from another list, already consented there.
#[derive(Debug)]
pub struct ImportRow<'a> {
    pub email: &'a str,
    pub email_key: &'a str,
    pub name: Option<&'a str>,
    pub unsub_nonce: &'a str,
    pub unsub_hash: &'a str,
    pub now_ms: i64,
}

/// The suppression-list form of an address: a hash, so the list of forgotten people is not
/// itself a list of addresses.
pub fn suppression_hash(email_key: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::domain::hex(&Sha256::digest(
        format!("harborlist-suppression:{email_key}").as_bytes(),
    ))
}

impl Store {
    /// Adds an active subscriber with consent source "import", unless the address is known
    /// or suppressed.
    pub async fn import_subscriber(&self, row: &ImportRow<'_>) -> Result<ImportOutcome> {
        let mut tx = self.begin().await?;
        let suppressed = sqlx::query("SELECT hash FROM suppressions WHERE hash = $1")
            .bind(suppression_hash(row.email_key))
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if suppressed {
            tx.rollback().await?;
            return Ok(ImportOutcome::Suppressed);
        }
        let res = sqlx::query(
            "INSERT INTO subscribers (email, email_key, name, status, source, unsub_nonce, unsub_hash, created_at, updated_at, confirmed_at)
             VALUES ($1, $2, $3, 'active', 'import', $4, $5, $6, $6, $6)
             ON CONFLICT (email_key) DO NOTHING",
        )
        .bind(row.email)
        .bind(row.email_key)
        .bind(row.name)
        .bind(row.unsub_nonce)
        .bind(row.unsub_hash)
        .bind(row.now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if res.rows_affected() > 0 {
            ImportOutcome::Added
        } else {
            ImportOutcome::Existing
        })
    }
}

/// Spends every open link of one subscriber: a pending confirmation link must not
/// re-subscribe someone who just left (by their own click, by staff, or by a complaint).
pub(super) async fn spend_open_tokens(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    subscriber_id: i64,
    now_ms: i64,
) -> Result<()> {
    sqlx::query("UPDATE tokens SET used_at = $1 WHERE subscriber_id = $2 AND used_at IS NULL")
        .bind(now_ms)
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
