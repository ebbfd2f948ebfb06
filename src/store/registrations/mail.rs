//! The mail a registration change causes: which letter, its data (the session's, plus the
//! registration's nonce, deadline and place in line), and its key, written as a
//! `SingleMail` in the change's own transaction.

use serde_json::{Value, json};
use sqlx::{Any, Row, Transaction};

use super::{Reg, Result, SessionSeats, registration, seats::rank};
use crate::store::queue::SingleMail;

/// The registration mail a change causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Letter {
    /// "Please confirm your registration" (the public form).
    Confirm,
    /// "You're registered", with the `.ics` and the give-up link.
    Registered,
    /// "You're on the waiting list, number N", with the leave link.
    Waitlisted,
    /// "A seat is yours if you claim it by …", with the claim link.
    Offer,
}

impl Letter {
    fn template(self) -> &'static str {
        match self {
            Self::Confirm => "registration_confirm",
            Self::Registered => "registered",
            Self::Waitlisted => "waitlisted",
            Self::Offer => "seat_offer",
        }
    }
}

/// What a registration mail of `template` carries: the session's data (its `.ics` only for
/// "You're registered") and the registration's nonce, close, offer deadline and (waitlisted)
/// rank. Also what `check` and `preview` render the templates with.
pub fn mail_data(
    seats: &SessionSeats,
    template: &str,
    nonce: &str,
    offer_expires_ms: Option<i64>,
    rank: Option<i64>,
) -> Value {
    let mut data = seats.data.clone();
    if template != Letter::Registered.template()
        && let Some(obj) = data.as_object_mut()
    {
        obj.remove("calendar");
    }
    data["registration"] = json!({
        "nonce": nonce,
        "session": seats.id,
        "closes_at_ms": seats.closes_at_ms,
        "offer_expires_at_ms": offer_expires_ms,
    });
    if let Some(n) = rank {
        data["registration"]["rank"] = json!(n);
    }
    data
}

/// The mailing kind of every registration mail: transactional, to the one person, with the
/// registration's own links and no list footer.
pub const KIND_REGISTRATION: &str = "registration";

/// Queues `letter` for the registration's person, in the caller's transaction. Each has a
/// key that makes it once per event: the offer by its number, the others by the instant.
pub(super) async fn queue_mail(
    tx: &mut Transaction<'static, Any>,
    seats: &SessionSeats,
    reg: &Reg,
    letter: Letter,
    subscriber_id: i64,
    now_ms: i64,
) -> Result<()> {
    let current = registration(tx, reg.id).await?;
    let mut data = mail_data(
        seats,
        letter.template(),
        &current.nonce,
        current.offer_expires_ms,
        None,
    );
    let mut not_after_ms = None;
    let key = match letter {
        Letter::Offer => {
            not_after_ms = current.offer_expires_ms;
            format!("offer:{}:{}", reg.id, current.offers)
        }
        Letter::Waitlisted => {
            let position: Option<i64> =
                sqlx::query("SELECT position FROM registrations WHERE id = $1")
                    .bind(reg.id)
                    .fetch_one(&mut **tx)
                    .await?
                    .try_get("position")?;
            let n = match position {
                Some(p) => rank(tx, &seats.id, p).await?,
                None => 0,
            };
            data["registration"]["rank"] = json!(n);
            format!("waitlisted:{}:{now_ms}", reg.id)
        }
        Letter::Confirm => format!("regconfirm:{}:{now_ms}", reg.id),
        Letter::Registered => format!("registered:{}:{now_ms}", reg.id),
    };
    SingleMail {
        key,
        kind: KIND_REGISTRATION,
        template: letter.template(),
        data,
        subscriber_id,
        now_ms,
        training: Some(seats.id.clone()),
        not_after_ms,
    }
    .insert(tx)
    .await
}
