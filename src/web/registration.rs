//! A registration's own links, from its mails: `/registrations/{token}/confirm`,
//! `/registrations/{token}/cancel` (give up the seat, leave the waiting list or decline an
//! offer, worded by where the registration stands) and `/registrations/{token}/claim`.
//!
//! The token is `derive(Registration, nonce)`; its hash finds the registration. GET changes
//! nothing (mail scanners fetch links): it shows one POST form to the same URL, or where
//! the registration stands when there is nothing to do. POST makes one store call under
//! the session's seat lock and shows what came of it.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};

use super::{
    AppState,
    client::Client,
    pages::{self, Page},
    register::session_seats,
};
use crate::{
    calendar::{Session, human},
    clock::to_millis,
    domain::Token,
    schedule::content::registration_open,
    store::registrations::{
        ClaimOutcome, Evidence, GiveUpOutcome, LinkedRegistration, RegStatus, SeatOutcome,
    },
};

/// What the link is for: its last path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Confirm,
    Cancel,
    Claim,
}

impl Action {
    fn parse(segment: &str) -> Option<Self> {
        match segment {
            "confirm" => Some(Self::Confirm),
            "cancel" => Some(Self::Cancel),
            "claim" => Some(Self::Claim),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Confirm => "confirm",
            Self::Cancel => "cancel",
            Self::Claim => "claim",
        }
    }
}

/// The registration and session a link names.
struct Found {
    token: Token,
    reg: LinkedRegistration,
    session: Session,
    /// "Number N" on the waiting list, when they are waiting.
    rank: Option<i64>,
}

/// Looks the link up; the page to answer with when it names nothing we can act on (or the
/// training has begun).
async fn find(state: &AppState, token: &str, action: &str) -> Result<(Found, Action), Response> {
    let (Some(token), Some(action)) = (Token::parse(token), Action::parse(action)) else {
        return Err(unknown_link(state));
    };
    let reg = match state.store.registration_by_link(&token.hash()).await {
        Ok(Some(reg)) => reg,
        Ok(None) => return Err(unknown_link(state)),
        Err(e) => return Err(pages::unavailable(state, &e)),
    };
    let Some(session) = state.live.calendar().session_by_id(&reg.session_id) else {
        return Err(Page::new(
            "This training is no longer on the calendar",
            StatusCode::GONE,
        )
        .message("The training this link is about has been removed from the calendar.")
        .link("See the upcoming trainings", "/trainings")
        .render(state));
    };
    if begun(state, &session) {
        return Err(taken_place(state, &session));
    }
    let rank = match state.store.waiting_rank(&reg).await {
        Ok(rank) => rank,
        Err(e) => return Err(pages::unavailable(state, &e)),
    };
    Ok((
        Found {
            token,
            reg,
            session,
            rank,
        },
        action,
    ))
}

/// Whether the training has begun: its links have nothing left to do.
fn begun(state: &AppState, session: &Session) -> bool {
    session.start.with_timezone(&chrono::Utc) <= state.clock.now()
}

fn taken_place(state: &AppState, session: &Session) -> Response {
    Page::new("This training has taken place", StatusCode::GONE)
        .message(about(session))
        .message("Registration links stop working once the training has begun.")
        .link("See the upcoming trainings", "/trainings")
        .render(state)
}

pub async fn page(
    State(state): State<AppState>,
    Path((token, action)): Path<(String, String)>,
) -> Response {
    let (found, action) = match find(&state, &token, &action).await {
        Ok(f) => f,
        Err(page) => return page,
    };
    let now = state.clock.now();
    let open = registration_open(&state.live.settings(), &found.session, now);
    let status = found.reg.status;
    let (title, text, button) = match (action, status) {
        (Action::Confirm, RegStatus::Pending) if open => (
            "Confirm your registration",
            "Press the button to register. If the training is full, you'll join the waiting list, and get an email if a seat frees up.",
            "Confirm my registration",
        ),
        (Action::Cancel, RegStatus::Registered) => (
            "Give up your seat?",
            "If you can't come, give up your seat so that someone on the waiting list can have it.",
            "Give up my seat",
        ),
        (Action::Cancel, RegStatus::Waitlisted) => (
            "Leave the waiting list?",
            "You won't be offered a seat for this training.",
            "Leave the waiting list",
        ),
        (Action::Cancel, RegStatus::Offered) => (
            "Decline the seat?",
            "The seat you were offered goes to the next person on the waiting list.",
            "Decline the seat",
        ),
        (Action::Claim, RegStatus::Offered)
            if open
                && found
                    .reg
                    .offer_expires_ms
                    .is_some_and(|t| t > to_millis(now)) =>
        {
            (
                "Claim your seat",
                "Press the button to take the seat that was offered to you.",
                "Claim my seat",
            )
        }
        _ => return standing(&state, &found),
    };
    let mut page = Page::new(title, StatusCode::OK)
        .message(about(&found.session))
        .message(text);
    if let (Action::Claim, Some(ms)) = (action, found.reg.offer_expires_ms) {
        page = page.message(format!("The offer holds until {}.", local_time(&state, ms)));
    }
    if let Some(n) = found.rank {
        page = page.message(format!("You're number {n} on the waiting list."));
    }
    page.button(link(&found, action), button).render(&state)
}

pub async fn submit(
    State(state): State<AppState>,
    client: Client,
    Path((token, action)): Path<(String, String)>,
) -> Response {
    let (found, action) = match find(&state, &token, &action).await {
        Ok(f) => f,
        Err(page) => return page,
    };
    let now = state.clock.now();
    let seats = match session_seats(&state, &found.session).await {
        Ok(s) => s,
        Err(e) => return pages::unavailable(&state, &e),
    };
    let now_ms = to_millis(now);
    let id = found.reg.id;
    let response = match action {
        Action::Confirm => {
            if found.session.cancelled {
                return closed(&state, &found.session);
            }
            let ip = client.ip.map(|ip| ip.to_string());
            let evidence = Evidence {
                ip: ip.as_deref(),
                user_agent: client.user_agent.as_deref(),
            };
            match state
                .store
                .confirm_registration(&seats, id, evidence, now_ms)
                .await
            {
                Ok(outcome) => confirmed(&state, &found, outcome),
                Err(e) => return pages::unavailable(&state, &e),
            }
        }
        Action::Cancel => match state.store.give_up(&seats, id, now_ms).await {
            Ok(GiveUpOutcome::Done(before)) => given_up(&state, &found, before),
            Ok(GiveUpOutcome::Nothing(_)) => standing(&state, &found),
            Err(e) => return pages::unavailable(&state, &e),
        },
        Action::Claim => match state.store.claim_offer(&seats, id, now_ms).await {
            Ok(outcome) => claimed(&state, &found, outcome),
            Err(e) => return pages::unavailable(&state, &e),
        },
    };
    // Whatever changed queued its mail (and maybe an offer to the next person).
    state.wake.notify_one();
    response
}

fn confirmed(state: &AppState, found: &Found, outcome: SeatOutcome) -> Response {
    match outcome {
        SeatOutcome::Registered => registered(state, found),
        SeatOutcome::Waitlisted { rank } => waitlisted(state, found, Some(rank)),
        SeatOutcome::Closed => closed(state, &found.session),
        SeatOutcome::Already(_) => standing(state, found),
    }
}

fn claimed(state: &AppState, found: &Found, outcome: ClaimOutcome) -> Response {
    match outcome {
        ClaimOutcome::Registered => registered(state, found),
        ClaimOutcome::Already => Page::new("You're registered already", StatusCode::OK)
            .message(about(&found.session))
            .message("This seat is already yours.")
            .render(state),
        ClaimOutcome::Expired => expired(state, found),
        ClaimOutcome::Closed => closed(state, &found.session),
        ClaimOutcome::NotOffered(_) => standing(state, found),
    }
}

fn given_up(state: &AppState, found: &Found, before: RegStatus) -> Response {
    let (title, text) = match before {
        RegStatus::Waitlisted => (
            "You've left the waiting list",
            "You won't be offered a seat for this training.",
        ),
        RegStatus::Offered => (
            "You've declined the seat",
            "It goes to the next person on the waiting list. Thank you for letting us know.",
        ),
        _ => (
            "You've given up your seat",
            "Thank you for letting us know: someone on the waiting list can have it now.",
        ),
    };
    Page::new(title, StatusCode::OK)
        .message(about(&found.session))
        .message(text)
        .link("See the upcoming trainings", "/trainings")
        .render(state)
}

fn registered(state: &AppState, found: &Found) -> Response {
    Page::new("You're registered", StatusCode::OK)
        .message(about(&found.session))
        .message("A message with the details and a calendar invitation is on its way.")
        .link("Can't come? Give up your seat", link(found, Action::Cancel))
        .render(state)
}

fn waitlisted(state: &AppState, found: &Found, rank: Option<i64>) -> Response {
    let title = match rank {
        Some(n) => format!("You're on the waiting list, number {n}"),
        None => "You're on the waiting list".to_owned(),
    };
    Page::new(title, StatusCode::OK)
        .message(about(&found.session))
        .message("The training is full. When a seat frees up, the first person on the waiting list is offered it by email.")
        .link("Leave the waiting list", link(found, Action::Cancel))
        .render(state)
}

fn expired(state: &AppState, found: &Found) -> Response {
    Page::new("This offer has expired", StatusCode::GONE)
        .message(about(&found.session))
        .message("The seat was held for a limited time, and it has gone to the next person on the waiting list.")
        .link("See the upcoming trainings", "/trainings")
        .render(state)
}

fn closed(state: &AppState, session: &Session) -> Response {
    let text = if session.cancelled {
        "This training has been cancelled."
    } else {
        "Registration for this training has closed."
    };
    Page::new("Registration closed", StatusCode::GONE)
        .message(about(session))
        .message(text)
        .link("See the upcoming trainings", "/trainings")
        .render(state)
}

/// Where the registration stands, when the link has nothing (more) to do.
fn standing(state: &AppState, found: &Found) -> Response {
    let status = StatusCode::OK;
    let session = &found.session;
    match found.reg.status {
        RegStatus::Registered | RegStatus::Attended => registered_already(state, found),
        RegStatus::Waitlisted => waitlisted(state, found, found.rank),
        RegStatus::Offered => Page::new("A seat is offered to you", status)
            .message(about(session))
            .link("Claim your seat", link(found, Action::Claim))
            .link("Decline it", link(found, Action::Cancel))
            .render(state),
        RegStatus::Expired => expired(state, found),
        RegStatus::Pending
            if !registration_open(&state.live.settings(), session, state.clock.now()) =>
        {
            closed(state, session)
        }
        RegStatus::Pending => Page::new("Not confirmed yet", status)
            .message(about(session))
            .message("This registration hasn't been confirmed yet.")
            .link("Confirm it", link(found, Action::Confirm))
            .render(state),
        RegStatus::Cancelled => Page::new("This registration was cancelled", status)
            .message(about(session))
            .message("You can register again on the training's page while registration is open.")
            .link("Register again", format!("/trainings/{}", session.id))
            .render(state),
    }
}

fn registered_already(state: &AppState, found: &Found) -> Response {
    Page::new("You're registered", StatusCode::OK)
        .message(about(&found.session))
        .message("You have a seat at this training.")
        .link("Can't come? Give up your seat", link(found, Action::Cancel))
        .render(state)
}

/// "Safe Harbor training, Wednesday, January 20, 2027, 11:00 AM – 12:30 PM CST, at …".
fn about(session: &Session) -> String {
    format!(
        "{}: {}, at {}.",
        session.title,
        human::when(session),
        session.location
    )
}

fn link(found: &Found, action: Action) -> String {
    format!(
        "/registrations/{}/{}",
        found.token.as_str(),
        action.as_str()
    )
}

fn local_time(state: &AppState, ms: i64) -> String {
    crate::mail::context::local_time(state.live.composer().identity().timezone, ms)
}

fn unknown_link(state: &AppState) -> Response {
    Page::new("This link isn't valid", StatusCode::NOT_FOUND)
        .message("We don't recognise this registration link. It may have been copied incompletely.")
        .link("See the upcoming trainings", "/trainings")
        .render(state)
}
