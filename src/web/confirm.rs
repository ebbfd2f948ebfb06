//! `GET /confirm/{token}` shows a button; `POST /confirm/{token}` subscribes.
//!
//! The GET changes nothing, so a mail scanner fetching the link can't subscribe anyone.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};

use super::{
    AppState,
    client::Client,
    pages::{self, Page},
};
use crate::{
    clock::to_millis,
    domain::Token,
    store::subscriptions::{ConfirmOutcome, TokenState},
};

pub async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(token) = Token::parse(&token) else {
        return refused(&state, TokenState::Unknown);
    };
    match state
        .store
        .confirm_token_state(&token.hash(), to_millis(state.clock.now()))
        .await
    {
        Ok(TokenState::Valid) => Page::new("Confirm your subscription", StatusCode::OK)
            .message(format!(
                "Press the button to join {} and get the training announcements and reminders.",
                state.live.settings().list.name
            ))
            .button(format!("/confirm/{}", token.as_str()), "Yes, subscribe me")
            .render(&state),
        Ok(other) => refused(&state, other),
        Err(e) => pages::unavailable(&state, &e),
    }
}

pub async fn submit(
    State(state): State<AppState>,
    client: Client,
    Path(token): Path<String>,
) -> Response {
    let Some(token) = Token::parse(&token) else {
        return refused(&state, TokenState::Unknown);
    };
    let ip = client.ip.map(|ip| ip.to_string());
    let now = state.clock.now();
    let runtime = state.live.current();
    let next = runtime
        .calendar
        .upcoming(now, 12)
        .into_iter()
        .find(|s| !s.cancelled);
    let welcome = crate::schedule::content::welcome_data(&runtime.settings, next.as_ref());
    let outcome = state
        .store
        .confirm(
            &token.hash(),
            ip.as_deref(),
            client.user_agent.as_deref(),
            to_millis(now),
            &welcome,
        )
        .await;
    match outcome {
        Ok(ConfirmOutcome::Confirmed { .. }) => {
            state.wake.notify_one();
            metrics::counter!("harborlist_confirmations_total").increment(1);
            Page::new("You're subscribed", StatusCode::OK)
                .message("Thank you. You'll hear about each training, with a reminder before it. A welcome message is on its way.")
                .message("Every message has a link at the bottom to leave the list.")
                .link("See the upcoming trainings", "/trainings")
                .render(&state)
        }
        Ok(ConfirmOutcome::Refused(why)) => refused(&state, why),
        Err(e) => pages::unavailable(&state, &e),
    }
}

fn refused(state: &AppState, why: TokenState) -> Response {
    let (status, title, text) = match why {
        TokenState::Used => (
            StatusCode::GONE,
            "This link has already been used",
            "This confirmation link has been used already. If you confirmed, you're on the list.",
        ),
        TokenState::Expired => (
            StatusCode::GONE,
            "This link has expired",
            "Confirmation links only work for a limited time, and this one has run out.",
        ),
        TokenState::Unknown | TokenState::Valid => (
            StatusCode::NOT_FOUND,
            "This link isn't valid",
            "We don't recognise this confirmation link. It may have been copied incompletely.",
        ),
    };
    Page::new(title, status)
        .message(text)
        .message("You can ask for a new link: enter your address again on the sign-up page.")
        .link("Sign up again", "/")
        .render(state)
}
