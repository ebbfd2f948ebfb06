//! The seat machinery every registration change runs inside its transaction: the seat
//! lock, the person's and the registration's rows, taking a seat or a waiting-list place,
//! and `fill`, which offers free seats to the waiting list in order.

use sqlx::{Any, Row, Transaction};

use super::{
    Letter, NewLink, RANK_SQL, RegSource, RegStatus, Registrant, Result, SeatOutcome, SessionSeats,
    StoreError, queue_mail,
};
use crate::store::is_unique_violation;

/// A registration row inside a transaction.
#[derive(Debug, Clone)]
pub(super) struct Reg {
    pub(super) id: i64,
    pub(super) session_id: String,
    pub(super) subscriber_id: i64,
    pub(super) status: RegStatus,
    pub(super) nonce: String,
    pub(super) offers: i64,
    pub(super) offer_expires_ms: Option<i64>,
}

/// Writes the session's `seats` row first thing: the seat lock (see the module's doc).
/// Returns the last waiting-list position given out.
pub(super) async fn lock_seats(
    tx: &mut Transaction<'static, Any>,
    session_id: &str,
    now_ms: i64,
) -> Result<i64> {
    Ok(sqlx::query(
        "INSERT INTO seats (session_id, next_position, updated_at) VALUES ($1, 0, $2)
         ON CONFLICT (session_id) DO UPDATE SET updated_at = excluded.updated_at
         RETURNING next_position",
    )
    .bind(session_id)
    .bind(now_ms)
    .fetch_one(&mut **tx)
    .await?
    .try_get("next_position")?)
}

/// A concurrent first insert of the same address or registration can lose the unique
/// race; one retry sees the winner's row.
pub(super) async fn retry_unique<T, F, Fut>(f: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match f().await {
        Err(StoreError::Sql(e)) if is_unique_violation(&e) => f().await,
        other => other,
    }
}

/// The person's subscriber row, created `pending` (not on the list) if the address is new.
pub(super) async fn ensure_person(
    tx: &mut Transaction<'static, Any>,
    who: &Registrant<'_>,
    now_ms: i64,
) -> Result<i64> {
    sqlx::query(
        "INSERT INTO subscribers (email, email_key, name, status, source, unsub_nonce, unsub_hash, created_at, updated_at)
         VALUES ($1, $2, NULL, 'pending', 'web', $3, $4, $5, $5)
         ON CONFLICT (email_key) DO NOTHING",
    )
    .bind(who.email)
    .bind(who.email_key)
    .bind(who.unsub_nonce)
    .bind(who.unsub_hash)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(
        sqlx::query("SELECT id FROM subscribers WHERE email_key = $1")
            .bind(who.email_key)
            .fetch_one(&mut **tx)
            .await?
            .try_get("id")?,
    )
}

/// The (session, person) row, created `pending` if new.
pub(super) async fn upsert_registration(
    tx: &mut Transaction<'static, Any>,
    seats: &SessionSeats,
    subscriber_id: i64,
    who: &Registrant<'_>,
    link: NewLink<'_>,
    source: RegSource,
    now_ms: i64,
) -> Result<Reg> {
    let id: Option<i64> = sqlx::query(
        "INSERT INTO registrations (session_id, subscriber_id, name, organisation, org_key, status, source,
                                    nonce, link_hash, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $9)
         ON CONFLICT (session_id, subscriber_id) DO NOTHING
         RETURNING id",
    )
    .bind(&seats.id)
    .bind(subscriber_id)
    .bind(who.name)
    .bind(who.organisation)
    .bind(who.org_key)
    .bind(source.as_str())
    .bind(link.nonce)
    .bind(link.hash)
    .bind(now_ms)
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| r.try_get("id"))
    .transpose()?;
    let id = match id {
        Some(id) => id,
        None => {
            sqlx::query("SELECT id FROM registrations WHERE session_id = $1 AND subscriber_id = $2")
                .bind(&seats.id)
                .bind(subscriber_id)
                .fetch_one(&mut **tx)
                .await?
                .try_get("id")?
        }
    };
    registration(tx, id).await
}

pub(super) async fn registration(tx: &mut Transaction<'static, Any>, id: i64) -> Result<Reg> {
    let r = sqlx::query(
        "SELECT id, session_id, subscriber_id, status, nonce, offers, offer_expires_at
         FROM registrations WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let subscriber_id: Option<i64> = r.try_get("subscriber_id")?;
    let nonce: Option<String> = r.try_get("nonce")?;
    Ok(Reg {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        // A forgotten person's row has neither; nothing acts on it any more.
        subscriber_id: subscriber_id
            .ok_or_else(|| StoreError::Corrupt("registration of a forgotten person".into()))?,
        status: RegStatus::parse(&r.try_get::<String, _>("status")?)?,
        nonce: nonce.unwrap_or_default(),
        offers: r.try_get("offers")?,
        offer_expires_ms: r.try_get("offer_expires_at")?,
    })
}

/// Seats taken in the session (under the seat lock).
pub(super) async fn taken(tx: &mut Transaction<'static, Any>, session_id: &str) -> Result<i64> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM registrations
         WHERE session_id = $1 AND status IN ('registered', 'offered', 'attended')",
    )
    .bind(session_id)
    .fetch_one(&mut **tx)
    .await?
    .try_get("n")?)
}

/// A seat for `reg` if one is free (after the waiting list has had its offers), the
/// waiting list otherwise; or nothing once registration has closed.
pub(super) async fn take_seat(
    tx: &mut Transaction<'static, Any>,
    seats: &SessionSeats,
    reg: &Reg,
    over_capacity: bool,
    now_ms: i64,
) -> Result<SeatOutcome> {
    // Staff may seat someone after the close (a walk-in), never for a cancelled training.
    let staff_walk_in = over_capacity && !seats.cancelled;
    if seats.stopped(now_ms) && !staff_walk_in {
        return Ok(SeatOutcome::Closed);
    }
    // Those already waiting go first: free seats are theirs to be offered.
    fill(tx, seats, now_ms).await?;
    if over_capacity || taken(tx, &seats.id).await? < i64::from(seats.capacity) {
        give_seat(tx, seats, reg, now_ms).await?;
        return Ok(SeatOutcome::Registered);
    }
    let position: i64 = sqlx::query(
        "UPDATE seats SET next_position = next_position + 1 WHERE session_id = $1 RETURNING next_position",
    )
    .bind(&seats.id)
    .fetch_one(&mut **tx)
    .await?
    .try_get("next_position")?;
    sqlx::query(
        "UPDATE registrations SET status = 'waitlisted', position = $1, updated_at = $2 WHERE id = $3",
    )
    .bind(position)
    .bind(now_ms)
    .bind(reg.id)
    .execute(&mut **tx)
    .await?;
    let rank = rank(tx, &seats.id, position).await?;
    queue_mail(
        tx,
        seats,
        reg,
        Letter::Waitlisted,
        reg.subscriber_id,
        now_ms,
    )
    .await?;
    Ok(SeatOutcome::Waitlisted { rank })
}

/// How many are waiting up to and including `position`: "number N" on the waiting list.
pub(super) async fn rank(
    tx: &mut Transaction<'static, Any>,
    session_id: &str,
    position: i64,
) -> Result<i64> {
    Ok(sqlx::query(RANK_SQL)
        .bind(session_id)
        .bind(position)
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?)
}

/// Gives `reg` its seat and queues "You're registered" (with the `.ics` and the give-up
/// link), in the caller's transaction under the seat lock.
pub(super) async fn give_seat(
    tx: &mut Transaction<'static, Any>,
    seats: &SessionSeats,
    reg: &Reg,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE registrations SET status = 'registered', registered_at = $1, offer_expires_at = NULL, updated_at = $1
         WHERE id = $2",
    )
    .bind(now_ms)
    .bind(reg.id)
    .execute(&mut **tx)
    .await?;
    queue_mail(
        tx,
        seats,
        reg,
        Letter::Registered,
        reg.subscriber_id,
        now_ms,
    )
    .await
}

pub(super) async fn expire_offer(
    tx: &mut Transaction<'static, Any>,
    id: i64,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE registrations SET status = 'expired', offer_expires_at = NULL, updated_at = $1 WHERE id = $2",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Offers every free seat to the waiting list, first in line first, each to a different
/// person, until the seats or the list run out. Nothing is offered once registration has
/// closed. Must run under the seat lock. Returns the offers made.
pub(super) async fn fill(
    tx: &mut Transaction<'static, Any>,
    seats: &SessionSeats,
    now_ms: i64,
) -> Result<u64> {
    if seats.stopped(now_ms) {
        return Ok(0);
    }
    let free = i64::from(seats.capacity) - taken(tx, &seats.id).await?;
    if free <= 0 {
        return Ok(0);
    }
    let rows = sqlx::query(
        "SELECT id FROM registrations
         WHERE session_id = $1 AND status = 'waitlisted' AND subscriber_id IS NOT NULL
         ORDER BY position, id LIMIT $2",
    )
    .bind(&seats.id)
    .bind(free)
    .fetch_all(&mut **tx)
    .await?;
    let deadline = seats.offer_deadline(now_ms);
    let mut made = 0;
    for r in rows {
        let id: i64 = r.try_get("id")?;
        sqlx::query(
            "UPDATE registrations SET status = 'offered', offers = offers + 1, offer_expires_at = $1, updated_at = $2
             WHERE id = $3",
        )
        .bind(deadline)
        .bind(now_ms)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        let reg = registration(tx, id).await?;
        queue_mail(tx, seats, &reg, Letter::Offer, reg.subscriber_id, now_ms).await?;
        made += 1;
    }
    Ok(made)
}
