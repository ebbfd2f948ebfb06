//! A list member's one-click registration: `GET /trainings/{id}/register/{link}` shows the
//! session and one "Register me" button; `POST` to the same URL registers the member, or
//! puts them on the waiting list, at once.
//!
//! The link is the member's [`MemberLink`] for that session, minted into their list mail
//! (`mail::context`). It is checked by recomputing its HMAC from the subscriber's
//! unsubscribe nonce under the current key, so nothing per (member, session) is stored,
//! and it proves the address as well as a confirmation link would: no second mail is
//! needed. The GET changes nothing (mail scanners fetch every link); only the POST acts,
//! through one store call ([`Store::register_directly`]), which also queues the "You're
//! registered" or "waiting list" mail.
//!
//! [`Store::register_directly`]: crate::store::Store::register_directly

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use serde_json::{Value, json};

use super::{
    AppState,
    client::Client,
    pages::{self, Page},
};
use crate::{
    calendar::Session,
    clock::to_millis,
    config::RegistrationMode,
    domain::{MemberLink, TokenPurpose, new_nonce},
    schedule::content::{self, training_json},
    store::{
        registrations::{Evidence, NewLink, RegSource, RegStatus, Registrant, SeatOutcome},
        subscriptions::{LinkSubscriber, Status},
    },
};

/// The page `GET` renders: `templates/web/member_register.html.hbs`.
pub const PAGE: &str = "member_register";

/// Why a link can't register anyone, each with its own clear page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Malformed, tampered with, made for another session, or its subscriber is gone.
    InvalidLink,
    /// No such session on the calendar.
    UnknownSession,
    /// The subscriber behind the link is no longer on the list.
    NotMember,
    Cancelled,
    /// Registration is elsewhere (`registration.mode = "external"`).
    External,
    Closed,
}

/// What both handlers start from: the session and the member, once the link checks out.
struct Checked {
    session: Session,
    member: LinkSubscriber,
}

pub async fn page(
    State(state): State<AppState>,
    Path((id, link)): Path<(String, String)>,
) -> Response {
    let checked = match check(&state, &id, &link).await {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => return refused(&state, why, &id),
        Err(e) => return pages::unavailable(&state, &e),
    };
    // Already in: say so, rather than offer a button that would change nothing.
    match state
        .store
        .registration_of(&checked.session.id, &checked.member.email_key)
        .await
    {
        Ok(Some(reg)) if reg.status.is_live() => {
            let when = crate::calendar::human::when(&checked.session);
            return already(reg.status, &when)
                .link("See the upcoming trainings", "/trainings")
                .render(&state);
        }
        Ok(_) => {}
        Err(e) => return pages::unavailable(&state, &e),
    }
    let counts = match state.store.seat_counts().await {
        Ok(all) => all.get(&checked.session.id).copied().unwrap_or_default(),
        Err(e) => return pages::unavailable(&state, &e),
    };
    let seats_left = counts.left(checked.session.capacity);
    let action = format!("/trainings/{id}/register/{link}");
    let data = page_data(&checked.session, seats_left, &action);
    pages::render(&state, StatusCode::OK, PAGE, data)
}

/// What `member_register.html.hbs` is rendered with.
pub(super) fn page_data(session: &Session, seats_left: i64, action: &str) -> Value {
    json!({
        "title": format!("Register for {}", session.title),
        "training": training_json(session),
        "seats_left": seats_left,
        "full": seats_left <= 0,
        "action": action,
    })
}

pub async fn submit(
    State(state): State<AppState>,
    client: Client,
    Path((id, link)): Path<(String, String)>,
) -> Response {
    let Checked { session, member } = match check(&state, &id, &link).await {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => return refused(&state, why, &id),
        Err(e) => return pages::unavailable(&state, &e),
    };
    let now = state.clock.now();
    // The SEQUENCE the planner recorded, so the "You're registered" invite agrees with
    // the invitations already sent.
    let sequence = match state.store.training(&session.uid).await {
        Ok(row) => row.map_or(0, |r| u32::try_from(r.sequence).unwrap_or(0)),
        Err(e) => return pages::unavailable(&state, &e),
    };
    let seats = content::seats(&state.live.settings(), &session, sequence, now);
    let nonce = new_nonce();
    let hash = state
        .live
        .token_key()
        .derive(TokenPurpose::Registration, &nonce)
        .hash();
    let who = Registrant {
        email: &member.email,
        email_key: &member.email_key,
        name: member.name.as_deref(),
        organisation: None,
        org_key: None,
        unsub_nonce: &member.unsub_nonce,
        unsub_hash: &member.unsub_hash,
    };
    let ip = client.ip.map(|ip| ip.to_string());
    let evidence = Evidence {
        ip: ip.as_deref(),
        user_agent: client.user_agent.as_deref(),
    };
    let link = NewLink {
        nonce: &nonce,
        hash: &hash,
    };
    let outcome = state
        .store
        .register_directly(
            &seats,
            &who,
            link,
            RegSource::Link,
            false,
            evidence,
            to_millis(now),
        )
        .await;
    match outcome {
        Ok(outcome) => {
            if matches!(
                outcome,
                SeatOutcome::Registered | SeatOutcome::Waitlisted { .. }
            ) {
                state.wake.notify_one();
                metrics::counter!("harborlist_registrations_total", "source" => "link")
                    .increment(1);
            }
            done(&state, &session, outcome)
        }
        Err(e) => pages::unavailable(&state, &e),
    }
}

/// Checks the link and the session. The outer error is the database's; the inner one
/// says why this link can't register anyone now.
async fn check(
    state: &AppState,
    id: &str,
    link: &str,
) -> Result<Result<Checked, Refusal>, crate::store::StoreError> {
    let Some(link) = MemberLink::parse(link) else {
        return Ok(Err(Refusal::InvalidLink));
    };
    let Some(session) = state.live.calendar().session_by_id(id) else {
        return Ok(Err(Refusal::UnknownSession));
    };
    let Some(member) = state.store.subscriber_for_link(link.subscriber_id).await? else {
        return Ok(Err(Refusal::InvalidLink));
    };
    // Under the current key, or one listed in `security.previous_token_keys`: invitations
    // mailed before a key rotation keep working while the old key is listed (nothing is
    // stored for these links, so there is nothing to relink).
    let runtime = state.live.current();
    let verified = std::iter::once(&runtime.key)
        .chain(&runtime.previous_keys)
        .any(|key| key.verifies_member_link(&link, &session.id, &member.unsub_nonce));
    if !verified {
        return Ok(Err(Refusal::InvalidLink));
    }
    Ok(admissible(state, &session, &member).map(|()| Checked { session, member }))
}

/// Whether this member may register for this session now.
fn admissible(state: &AppState, session: &Session, member: &LinkSubscriber) -> Result<(), Refusal> {
    let settings = state.live.settings();
    if member.status != Status::Active {
        return Err(Refusal::NotMember);
    }
    if settings.registration.mode == RegistrationMode::External {
        return Err(Refusal::External);
    }
    if session.cancelled {
        return Err(Refusal::Cancelled);
    }
    if !content::registration_open(&settings, session, state.clock.now()) {
        return Err(Refusal::Closed);
    }
    Ok(())
}

/// The page after the POST.
fn done(state: &AppState, session: &Session, outcome: SeatOutcome) -> Response {
    let when = crate::calendar::human::when(session);
    let page = match outcome {
        SeatOutcome::Registered => Page::new("You're registered", StatusCode::OK)
            .message(format!("Your seat at the training on {when} is saved. See you there!"))
            .message(format!("Where: {}", session.location))
            .message("A confirmation with a calendar invitation is on its way, with a link to give up your seat if you can't come."),
        SeatOutcome::Waitlisted { rank } => Page::new("You're on the waiting list", StatusCode::OK)
            .message(format!("The training on {when} is full. You're number {rank} on the waiting list."))
            .message("When a seat frees up, we'll offer it to the next person in line by email. A message with a link to leave the waiting list is on its way."),
        SeatOutcome::Already(status) => already(status, &when),
        SeatOutcome::Closed => return refused(state, Refusal::Closed, &session.id),
    };
    page.link("See the upcoming trainings", "/trainings")
        .render(state)
}

fn already(status: RegStatus, when: &str) -> Page {
    let (title, text) = match status {
        RegStatus::Waitlisted => (
            "You're already on the waiting list",
            format!(
                "You're on the waiting list for the training on {when}. We'll write to you when a seat frees up."
            ),
        ),
        RegStatus::Offered => (
            "A seat is waiting for you",
            format!(
                "A seat at the training on {when} is held for you. Use the link in the mail we sent you to claim it."
            ),
        ),
        _ => (
            "You're already registered",
            format!(
                "You're already registered for the training on {when}. Nothing has changed. See you there!"
            ),
        ),
    };
    Page::new(title, StatusCode::OK).message(text)
}

fn refused(state: &AppState, why: Refusal, id: &str) -> Response {
    let (status, title, text) = match why {
        Refusal::InvalidLink => (
            StatusCode::NOT_FOUND,
            "This link isn't valid",
            "We don't recognise this registration link. It may have been copied incompletely.",
        ),
        Refusal::UnknownSession => (
            StatusCode::NOT_FOUND,
            "No such training",
            "We can't find this training. It may have been moved or taken off the calendar.",
        ),
        Refusal::NotMember => (
            StatusCode::FORBIDDEN,
            "This link is for list members",
            "This one-click link only works while you're on the list. You can still register on the training's page.",
        ),
        Refusal::Cancelled => (
            StatusCode::GONE,
            "This training was cancelled",
            "This training will not take place. See the upcoming dates for the next one.",
        ),
        Refusal::External => (
            StatusCode::NOT_FOUND,
            "Registration is elsewhere",
            "Registration for our trainings is not taken here. Please see the training announcement for where to register.",
        ),
        Refusal::Closed => (
            StatusCode::GONE,
            "Registration has closed",
            "Registration for this training has closed. See the upcoming dates for the next one.",
        ),
    };
    let mut page = Page::new(title, status).message(text);
    if why == Refusal::NotMember {
        page = page.link(
            "Register on the training's page",
            format!("/trainings/{id}"),
        );
    }
    page.link("See the upcoming trainings", "/trainings")
        .render(state)
}
