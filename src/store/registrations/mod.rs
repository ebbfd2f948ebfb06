//! Registrations for limited seats, and the waiting list: the rows the registration pages,
//! the planner and staff commands write.
//!
//! Every change to a session's seats is one transaction that first writes the session's
//! row in `seats` (the seat lock: `seats::lock_seats`). That write serialises the changes
//! of one session on both backends — SQLite takes its write lock at the first write, and
//! PostgreSQL locks the row until commit — so the count of seats taken, read next, is
//! never stale, nobody is overbooked, and waiting-list positions have no gap or repeat.
//!
//! A seat is taken by a row in `registered`, `offered` (held for the person it was offered
//! to until the offer expires) or `attended`. Whenever a seat may have come free (someone
//! gave it up, an offer expired or was declined, the capacity was raised), `seats::fill` offers
//! the free seats to the waiting list, first in line first, in the same transaction. The
//! mail each change causes (`mail.rs`) is a `SingleMail` written in that transaction too, so it goes
//! out exactly when the change commits.
//!
//! The person behind a registration is a `subscribers` row, whatever their list status:
//! someone who registers without joining stays `pending`, which never receives list mail.
//!
//! This module holds the types and the `Store` methods, each one transaction; `seats.rs`
//! the steps they are made of, under the seat lock; `mail.rs` the mail they write.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

mod mail;
mod seats;

pub use mail::{KIND_REGISTRATION, mail_data};
use mail::{Letter, queue_mail};
use seats::{
    Reg, ensure_person, expire_offer, fill, give_seat, lock_seats, registration, retry_unique,
    take_seat, upsert_registration,
};

use super::{Result, Store, StoreError};

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegStatus {
    /// Asked for on the public form; the confirmation link isn't used yet.
    Pending,
    Registered,
    Waitlisted,
    /// A seat that came free is held for them until `offer_expires_at`.
    Offered,
    /// They gave up the seat, left the waiting list or declined an offer (or staff
    /// cancelled it).
    Cancelled,
    /// An offer they did not claim in time.
    Expired,
    /// Marked by staff after the day.
    Attended,
}

impl RegStatus {
    pub const ALL: [RegStatus; 7] = [
        Self::Pending,
        Self::Registered,
        Self::Waitlisted,
        Self::Offered,
        Self::Cancelled,
        Self::Expired,
        Self::Attended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Registered => "registered",
            Self::Waitlisted => "waitlisted",
            Self::Offered => "offered",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Attended => "attended",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown registration status {s:?}")))
    }

    /// Whether the row takes one of the session's seats.
    pub fn holds_seat(self) -> bool {
        matches!(self, Self::Registered | Self::Offered | Self::Attended)
    }

    /// Whether the person is still in: registered, waiting, or offered a seat.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Self::Registered | Self::Waitlisted | Self::Offered | Self::Attended
        )
    }
}

/// How a registration came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegSource {
    /// The public form, confirmed by mail.
    Web,
    /// A list member's one-click link.
    Link,
    /// Staff, by `registrations add` (a phone registration).
    Staff,
}

impl RegSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Link => "link",
            Self::Staff => "staff",
        }
    }
}

/// One session as far as its seats go, from the running configuration.
#[derive(Debug, Clone)]
pub struct SessionSeats {
    /// The session's stable id (`2027-01-20`).
    pub id: String,
    pub capacity: u32,
    /// A cancelled session takes no registrations, offers no seats and lets none be claimed.
    pub cancelled: bool,
    /// Registration and offers stop at this instant (`registration.closes_before`).
    pub closes_at_ms: i64,
    /// How long an offer holds (`registration.offer_ttl`), never past the close.
    pub offer_ttl_ms: i64,
    /// What registration mail carries about the session: `{"training": …, "calendar": …}`
    /// (the `.ics` goes only with "You're registered").
    pub data: Value,
}

impl SessionSeats {
    /// Whether registrations, offers and claims have stopped: the close, or a cancellation.
    fn stopped(&self, now_ms: i64) -> bool {
        self.cancelled || now_ms >= self.closes_at_ms
    }

    fn offer_deadline(&self, now_ms: i64) -> i64 {
        now_ms
            .saturating_add(self.offer_ttl_ms)
            .min(self.closes_at_ms)
    }
}

/// Evidence of a request or a confirmation, as for the list.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// A new registration's link: the nonce it is derived from and its token's hash. The
/// caller derives both (the store never sees the key); they are used only if the row is new.
#[derive(Debug, Clone, Copy)]
pub struct NewLink<'a> {
    pub nonce: &'a str,
    pub hash: &'a str,
}

/// The person registering, already parsed.
#[derive(Debug, Clone, Copy)]
pub struct Registrant<'a> {
    pub email: &'a str,
    pub email_key: &'a str,
    pub name: Option<&'a str>,
    pub organisation: Option<&'a str>,
    pub org_key: Option<&'a str>,
    /// For a person not yet known: their subscriber row's unsubscribe nonce and hash.
    pub unsub_nonce: &'a str,
    pub unsub_hash: &'a str,
}

/// What taking a seat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatOutcome {
    Registered,
    /// On the waiting list; `rank` is how many are waiting up to and including them.
    Waitlisted {
        rank: i64,
    },
    /// Nothing changed: they were already in this state.
    Already(RegStatus),
    /// Registration for this session has closed.
    Closed,
}

/// What a public request did (the page is the same for every outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    MailQueued,
    RateLimited,
}

/// A registration found by its link.
#[derive(Debug, Clone)]
pub struct LinkedRegistration {
    pub id: i64,
    pub session_id: String,
    pub status: RegStatus,
    pub offer_expires_ms: Option<i64>,
    /// Its waiting-list position as stored (see [`Store::waiting_rank`] for "number N").
    pub position: Option<i64>,
}

fn linked(r: &sqlx::any::AnyRow) -> Result<LinkedRegistration> {
    Ok(LinkedRegistration {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        status: RegStatus::parse(&r.try_get::<String, _>("status")?)?,
        offer_expires_ms: r.try_get("offer_expires_at")?,
        position: r.try_get("position")?,
    })
}

/// What giving up, leaving or declining did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpOutcome {
    /// Cancelled; it was in this state before.
    Done(RegStatus),
    /// Nothing to give up (already cancelled, expired, never confirmed, or after the day).
    Nothing(RegStatus),
}

/// What claiming an offer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    Registered,
    /// Already registered by this offer (a second press of the button).
    Already,
    /// The offer ran out before the claim; the seat went on.
    Expired,
    /// Registration has closed.
    Closed,
    /// There is no offer to claim.
    NotOffered(RegStatus),
}

/// The counts behind "N seats left".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SeatCounts {
    pub registered: i64,
    pub waitlisted: i64,
    pub offered: i64,
    pub attended: i64,
}

impl SeatCounts {
    /// Seats taken: registered, offered (held) or attended.
    pub fn taken(&self) -> i64 {
        self.registered + self.offered + self.attended
    }

    /// Seats left, never below zero (a lowered capacity keeps everyone registered).
    pub fn left(&self, capacity: u32) -> i64 {
        (i64::from(capacity) - self.taken()).max(0)
    }
}

/// One row of `registrations list`.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationRow {
    pub email: Option<String>,
    pub name: Option<String>,
    pub organisation: Option<String>,
    pub status: RegStatus,
    pub position: Option<i64>,
    /// When they took the seat (or asked to, for those not registered), RFC 3339 UTC.
    pub registered_at: Option<String>,
    #[serde(skip)]
    pub registered_ms: Option<i64>,
    pub source: String,
}

const DAY_MS: i64 = 86_400_000;

/// How many wait up to and including a position ($2) in a session ($1): "number N".
const RANK_SQL: &str = "SELECT COUNT(*) AS n FROM registrations
     WHERE session_id = $1 AND status = 'waitlisted' AND position <= $2";

/// Every session's live rows by status: what [`seat_counts_of`] reads.
pub(crate) const SEAT_COUNTS_SQL: &str =
    "SELECT session_id, status, COUNT(*) AS n FROM registrations
     WHERE status IN ('registered', 'waitlisted', 'offered', 'attended')
     GROUP BY session_id, status";

/// The rows of [`SEAT_COUNTS_SQL`] as counts by session.
pub(crate) fn seat_counts_of(
    rows: &[sqlx::any::AnyRow],
) -> Result<std::collections::HashMap<String, SeatCounts>> {
    let mut out: std::collections::HashMap<String, SeatCounts> = Default::default();
    for r in rows {
        let counts = out.entry(r.try_get("session_id")?).or_default();
        let n: i64 = r.try_get("n")?;
        match RegStatus::parse(&r.try_get::<String, _>("status")?)? {
            RegStatus::Registered => counts.registered = n,
            RegStatus::Waitlisted => counts.waitlisted = n,
            RegStatus::Offered => counts.offered = n,
            RegStatus::Attended => counts.attended = n,
            _ => {}
        }
    }
    Ok(out)
}

impl Store {
    /// A public registration request: the person gets a mail whatever the state. A new or
    /// unconfirmed registration gets the confirmation link; one already registered,
    /// waiting or offered a seat gets that news again (with its links), so the page can be
    /// the same in every case and a lost mail is one form away. Counts in the same
    /// per-address window as subscribe requests.
    pub async fn request_registration(
        &self,
        seats: &SessionSeats,
        who: &Registrant<'_>,
        link: NewLink<'_>,
        evidence: Evidence<'_>,
        max_per_day: u32,
        now_ms: i64,
    ) -> Result<RequestOutcome> {
        retry_unique(|| {
            self.request_registration_once(seats, who, link, evidence, max_per_day, now_ms)
        })
        .await
    }

    async fn request_registration_once(
        &self,
        seats: &SessionSeats,
        who: &Registrant<'_>,
        link: NewLink<'_>,
        evidence: Evidence<'_>,
        max_per_day: u32,
        now_ms: i64,
    ) -> Result<RequestOutcome> {
        let mut tx = self.begin().await?;
        let subscriber_id = ensure_person(&mut tx, who, now_ms).await?;
        let count: i64 = sqlx::query(
            "UPDATE subscribers SET
                 window_count = CASE WHEN $1 - window_start >= $2 THEN 1 ELSE window_count + 1 END,
                 window_start = CASE WHEN $1 - window_start >= $2 THEN $1 ELSE window_start END
             WHERE id = $3
             RETURNING window_count",
        )
        .bind(now_ms)
        .bind(DAY_MS)
        .bind(subscriber_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("window_count")?;
        if count > i64::from(max_per_day) {
            tx.commit().await?;
            return Ok(RequestOutcome::RateLimited);
        }
        let reg = upsert_registration(
            &mut tx,
            seats,
            subscriber_id,
            who,
            link,
            RegSource::Web,
            now_ms,
        )
        .await?;
        if matches!(
            reg.status,
            RegStatus::Pending | RegStatus::Cancelled | RegStatus::Expired
        ) {
            // A new request: its name and organisation wait with it until it is confirmed.
            sqlx::query(
                "UPDATE registrations SET status = 'pending', name = $1, organisation = $2, org_key = $3,
                        source = 'web', requested_at = $4, request_ip = $5, request_user_agent = $6,
                        position = NULL, offer_expires_at = NULL, updated_at = $4
                 WHERE id = $7",
            )
            .bind(who.name)
            .bind(who.organisation)
            .bind(who.org_key)
            .bind(now_ms)
            .bind(evidence.ip)
            .bind(evidence.user_agent)
            .bind(reg.id)
            .execute(&mut *tx)
            .await?;
            queue_mail(&mut tx, seats, &reg, Letter::Confirm, subscriber_id, now_ms).await?;
        } else {
            let letter = match reg.status {
                RegStatus::Registered | RegStatus::Attended => Letter::Registered,
                RegStatus::Waitlisted => Letter::Waitlisted,
                _ => Letter::Offer,
            };
            queue_mail(&mut tx, seats, &reg, letter, subscriber_id, now_ms).await?;
        }
        tx.commit().await?;
        Ok(RequestOutcome::MailQueued)
    }

    /// The registration a link token's hash names (under the current key, or an earlier one).
    pub async fn registration_by_link(&self, hash: &str) -> Result<Option<LinkedRegistration>> {
        let row = sqlx::query(
            "SELECT id, session_id, status, offer_expires_at, position FROM registrations
             WHERE id = COALESCE(
                 (SELECT id FROM registrations WHERE link_hash = $1),
                 (SELECT registration_id FROM registration_links WHERE hash = $1))",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(linked).transpose()
    }

    /// Confirms a public registration (the POST behind the mail's link): a seat if one is
    /// free, the waiting list otherwise.
    pub async fn confirm_registration(
        &self,
        seats: &SessionSeats,
        registration_id: i64,
        evidence: Evidence<'_>,
        now_ms: i64,
    ) -> Result<SeatOutcome> {
        let mut tx = self.begin().await?;
        lock_seats(&mut tx, &seats.id, now_ms).await?;
        let reg = registration(&mut tx, registration_id).await?;
        if reg.session_id != seats.id {
            return Err(StoreError::Corrupt(
                "registration for another session".into(),
            ));
        }
        if reg.status != RegStatus::Pending {
            tx.rollback().await?;
            return Ok(SeatOutcome::Already(reg.status));
        }
        sqlx::query("UPDATE registrations SET confirmed_at = $1, confirm_ip = $2, confirm_user_agent = $3 WHERE id = $4")
            .bind(now_ms)
            .bind(evidence.ip)
            .bind(evidence.user_agent)
            .bind(reg.id)
            .execute(&mut *tx)
            .await?;
        let outcome = take_seat(&mut tx, seats, &reg, false, now_ms).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// A list member's one-click registration (the link proved the address), or staff's
    /// `registrations add` (`source` says which; `over_capacity` only for staff).
    #[allow(clippy::too_many_arguments)]
    pub async fn register_directly(
        &self,
        seats: &SessionSeats,
        who: &Registrant<'_>,
        link: NewLink<'_>,
        source: RegSource,
        over_capacity: bool,
        evidence: Evidence<'_>,
        now_ms: i64,
    ) -> Result<SeatOutcome> {
        retry_unique(|| {
            self.register_directly_once(seats, who, link, source, over_capacity, evidence, now_ms)
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn register_directly_once(
        &self,
        seats: &SessionSeats,
        who: &Registrant<'_>,
        link: NewLink<'_>,
        source: RegSource,
        over_capacity: bool,
        evidence: Evidence<'_>,
        now_ms: i64,
    ) -> Result<SeatOutcome> {
        let mut tx = self.begin().await?;
        lock_seats(&mut tx, &seats.id, now_ms).await?;
        let subscriber_id = ensure_person(&mut tx, who, now_ms).await?;
        let reg =
            upsert_registration(&mut tx, seats, subscriber_id, who, link, source, now_ms).await?;
        if over_capacity && matches!(reg.status, RegStatus::Waitlisted | RegStatus::Offered) {
            // Staff give someone already waiting a seat: straight to it, with no offer on
            // the way (an offered seat is theirs already; a waiting place is left behind).
            sqlx::query(
                "UPDATE registrations SET position = NULL, name = COALESCE($1, name),
                        organisation = COALESCE($2, organisation), org_key = COALESCE($3, org_key)
                 WHERE id = $4",
            )
            .bind(who.name)
            .bind(who.organisation)
            .bind(who.org_key)
            .bind(reg.id)
            .execute(&mut *tx)
            .await?;
            give_seat(&mut tx, seats, &reg, now_ms).await?;
            tx.commit().await?;
            return Ok(SeatOutcome::Registered);
        }
        if reg.status.is_live() {
            tx.rollback().await?;
            return Ok(SeatOutcome::Already(reg.status));
        }
        sqlx::query(
            "UPDATE registrations SET name = COALESCE($1, name), organisation = COALESCE($2, organisation),
                    org_key = COALESCE($3, org_key), source = $4,
                    requested_at = $5, request_ip = $6, request_user_agent = $7,
                    confirmed_at = $5, confirm_ip = $6, confirm_user_agent = $7, updated_at = $5
             WHERE id = $8",
        )
        .bind(who.name)
        .bind(who.organisation)
        .bind(who.org_key)
        .bind(source.as_str())
        .bind(now_ms)
        .bind(evidence.ip)
        .bind(evidence.user_agent)
        .bind(reg.id)
        .execute(&mut *tx)
        .await?;
        let outcome = take_seat(&mut tx, seats, &reg, over_capacity, now_ms).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Gives up a seat, leaves the waiting list, or declines an offer. A seat that comes
    /// free is offered on at once.
    pub async fn give_up(
        &self,
        seats: &SessionSeats,
        registration_id: i64,
        now_ms: i64,
    ) -> Result<GiveUpOutcome> {
        let mut tx = self.begin().await?;
        lock_seats(&mut tx, &seats.id, now_ms).await?;
        let reg = registration(&mut tx, registration_id).await?;
        if !matches!(
            reg.status,
            RegStatus::Registered | RegStatus::Waitlisted | RegStatus::Offered
        ) {
            tx.rollback().await?;
            return Ok(GiveUpOutcome::Nothing(reg.status));
        }
        sqlx::query(
            "UPDATE registrations SET status = 'cancelled', cancelled_at = $1, offer_expires_at = NULL, updated_at = $1
             WHERE id = $2",
        )
        .bind(now_ms)
        .bind(reg.id)
        .execute(&mut *tx)
        .await?;
        if reg.status.holds_seat() {
            fill(&mut tx, seats, now_ms).await?;
        }
        tx.commit().await?;
        Ok(GiveUpOutcome::Done(reg.status))
    }

    /// Claims an offered seat, if the offer still holds and registration is open.
    pub async fn claim_offer(
        &self,
        seats: &SessionSeats,
        registration_id: i64,
        now_ms: i64,
    ) -> Result<ClaimOutcome> {
        let mut tx = self.begin().await?;
        lock_seats(&mut tx, &seats.id, now_ms).await?;
        let reg = registration(&mut tx, registration_id).await?;
        let outcome = match reg.status {
            RegStatus::Registered | RegStatus::Attended => ClaimOutcome::Already,
            RegStatus::Offered if seats.stopped(now_ms) => ClaimOutcome::Closed,
            RegStatus::Offered if reg.offer_expires_ms.is_some_and(|t| t <= now_ms) => {
                // The planner has not got to it yet: expire it here, and pass the seat on.
                expire_offer(&mut tx, reg.id, now_ms).await?;
                fill(&mut tx, seats, now_ms).await?;
                ClaimOutcome::Expired
            }
            RegStatus::Offered => {
                give_seat(&mut tx, seats, &reg, now_ms).await?;
                ClaimOutcome::Registered
            }
            RegStatus::Expired => ClaimOutcome::Expired,
            other => ClaimOutcome::NotOffered(other),
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Expires the session's offers that ran out, and offers every free seat to the waiting
    /// list in order (a capacity raise, a seat that came free). Returns the offers made.
    /// The planner runs it each turn for every session with people waiting.
    pub async fn refill(&self, seats: &SessionSeats, now_ms: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        lock_seats(&mut tx, &seats.id, now_ms).await?;
        sqlx::query(
            "UPDATE registrations SET status = 'expired', offer_expires_at = NULL, updated_at = $1
             WHERE session_id = $2 AND status = 'offered' AND offer_expires_at <= $1",
        )
        .bind(now_ms)
        .bind(&seats.id)
        .execute(&mut *tx)
        .await?;
        let made = fill(&mut tx, seats, now_ms).await?;
        tx.commit().await?;
        Ok(made)
    }

    /// Sessions with someone waiting or holding an offer: the ones [`Store::refill`] may
    /// have work for.
    pub async fn sessions_with_waiting_list(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT session_id FROM registrations WHERE status IN ('waitlisted', 'offered')",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("session_id")?)).collect()
    }

    /// The registration of the person with this address for this session, if any.
    pub async fn registration_of(
        &self,
        session_id: &str,
        email_key: &str,
    ) -> Result<Option<LinkedRegistration>> {
        let row = sqlx::query(
            "SELECT r.id, r.session_id, r.status, r.offer_expires_at, r.position FROM registrations r
             JOIN subscribers s ON s.id = r.subscriber_id
             WHERE r.session_id = $1 AND s.email_key = $2",
        )
        .bind(session_id)
        .bind(email_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(linked).transpose()
    }

    /// "Number N" on the waiting list: how many are waiting up to and including `reg`, or
    /// `None` if it is not waiting.
    pub async fn waiting_rank(&self, reg: &LinkedRegistration) -> Result<Option<i64>> {
        let (RegStatus::Waitlisted, Some(position)) = (reg.status, reg.position) else {
            return Ok(None);
        };
        Ok(Some(
            sqlx::query(RANK_SQL)
                .bind(&reg.session_id)
                .bind(position)
                .fetch_one(self.pool())
                .await?
                .try_get("n")?,
        ))
    }

    /// The seat counts of every session anyone registered for (the others are absent).
    pub async fn seat_counts(&self) -> Result<std::collections::HashMap<String, SeatCounts>> {
        let rows = sqlx::query(SEAT_COUNTS_SQL).fetch_all(self.pool()).await?;
        seat_counts_of(&rows)
    }

    /// Everyone who registered for the session, for staff: seats first, then the waiting
    /// list in order, then the rest. A registration made without a name (a one-click link,
    /// a phone registration without --name) shows the name the person has on the list.
    pub async fn registrations_for(&self, session_id: &str) -> Result<Vec<RegistrationRow>> {
        let rows = sqlx::query(
            "SELECT s.email, COALESCE(r.name, s.name) AS name, r.organisation, r.status, r.position, r.source,
                    COALESCE(r.registered_at, r.requested_at, r.created_at) AS at
             FROM registrations r LEFT JOIN subscribers s ON s.id = r.subscriber_id
             WHERE r.session_id = $1
             ORDER BY CASE r.status WHEN 'attended' THEN 0 WHEN 'registered' THEN 0 WHEN 'offered' THEN 1
                                    WHEN 'waitlisted' THEN 2 WHEN 'pending' THEN 3 ELSE 4 END,
                      r.position, at, r.id",
        )
        .bind(session_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let at: Option<i64> = r.try_get("at")?;
                Ok(RegistrationRow {
                    email: r.try_get("email")?,
                    name: r.try_get("name")?,
                    organisation: r.try_get("organisation")?,
                    status: RegStatus::parse(&r.try_get::<String, _>("status")?)?,
                    position: r.try_get("position")?,
                    registered_at: at.map(crate::clock::rfc3339),
                    registered_ms: at,
                    source: r.try_get("source")?,
                })
            })
            .collect()
    }

    /// Marks attendance after the day. Returns how many of `email_keys` were registered
    /// (and are now attended); the others are returned by key, for staff to check.
    pub async fn mark_attended(
        &self,
        session_id: &str,
        email_keys: &[String],
        now_ms: i64,
    ) -> Result<(u64, Vec<String>)> {
        let mut tx = self.begin().await?;
        let mut marked = 0;
        let mut unknown = Vec::new();
        for key in email_keys {
            let res = sqlx::query(
                "UPDATE registrations SET status = 'attended', attended_at = $1, updated_at = $1
                 WHERE session_id = $2 AND status IN ('registered', 'attended')
                   AND subscriber_id = (SELECT id FROM subscribers WHERE email_key = $3)",
            )
            .bind(now_ms)
            .bind(session_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                unknown.push(key.clone());
            }
            marked += res.rows_affected();
        }
        tx.commit().await?;
        Ok((marked, unknown))
    }
}
