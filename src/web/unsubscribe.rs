//! `GET /unsubscribe/{token}` shows a button; `POST /unsubscribe/{token}` unsubscribes.
//!
//! The POST accepts both our button and RFC 8058 one-click (`List-Unsubscribe=One-Click`,
//! posted by mail providers cross-site with no cookies), and ignores the body either way:
//! the token alone authorises it. It is idempotent.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};

use super::{
    AppState,
    pages::{self, Page},
};
use crate::{clock::to_millis, domain::Token, store::subscriptions::UnsubscribeOutcome};

pub async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(token) = Token::parse(&token) else {
        return unknown(&state);
    };
    match state.store.unsubscribe_link_known(&token.hash()).await {
        Ok(true) => Page::new("Leave the list?", StatusCode::OK)
            .message(format!(
                "Press the button to stop getting messages from {}.",
                state.live.settings().list.name
            ))
            .button(format!("/unsubscribe/{}", token.as_str()), "Unsubscribe")
            .render(&state),
        Ok(false) => unknown(&state),
        Err(e) => pages::unavailable(&state, &e),
    }
}

pub async fn submit(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(token) = Token::parse(&token) else {
        return unknown(&state);
    };
    let settings = state.live.settings();
    let outcome = state
        .store
        .unsubscribe(
            &token.hash(),
            to_millis(state.clock.now()),
            settings.subscriptions.send_goodbye,
        )
        .await;
    match outcome {
        Ok(UnsubscribeOutcome::Done { email, changed }) => {
            if changed {
                metrics::counter!("harborlist_unsubscribes_total").increment(1);
                state.wake.notify_one();
            }
            Page::new("You're unsubscribed", StatusCode::OK)
                .message(format!(
                    "{email} won't get any more messages from {}.",
                    settings.list.name
                ))
                .message(
                    "Changed your mind? You can join again; we'll send a new confirmation link.",
                )
                .button("/subscribe", "Subscribe again")
                .hidden("email", &email)
                .render(&state)
        }
        Ok(UnsubscribeOutcome::Unknown) => unknown(&state),
        Err(e) => pages::unavailable(&state, &e),
    }
}

fn unknown(state: &AppState) -> Response {
    Page::new("This link isn't valid", StatusCode::NOT_FOUND)
        .message("We don't recognise this unsubscribe link. It may have been copied incompletely.")
        .message("If you keep getting messages you don't want, reply to one of them and we'll take you off the list.")
        .link("Back to the sign-up page", "/")
        .render(state)
}
