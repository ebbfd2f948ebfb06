//! `GET /` (the form) and `POST /subscribe` (the request).
//!
//! The answer to a valid request is the same "check your inbox" page whatever the address's
//! state, so the page never tells an outsider who is on the list. Limits: per client IP
//! per hour (in memory, per instance), and per address per day (in the database, counted
//! for every request whatever the state, so the 429 reveals nothing either).

use axum::{
    Form,
    extract::{State, rejection::FormRejection},
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, client::Client, pages};
use crate::{
    clock::to_millis,
    domain::{SubscriberEmail, SubscriberName, TokenPurpose, new_nonce},
    store::subscriptions::{SubscribeOutcome, SubscribeRequest},
};

#[derive(Debug, Deserialize)]
pub struct SubscribeForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
}

pub async fn form(State(state): State<AppState>) -> Response {
    form_page(&state, StatusCode::OK, "", "", None)
}

fn form_page(
    state: &AppState,
    status: StatusCode,
    email: &str,
    name: &str,
    error: Option<String>,
) -> Response {
    pages::render(state, status, "subscribe", form_data(email, name, error))
}

/// What `subscribe.html.hbs` is rendered with.
pub(super) fn form_data(email: &str, name: &str, error: Option<String>) -> serde_json::Value {
    json!({ "title": "Join the list", "email": email, "name": name, "error": error })
}

pub async fn submit(
    State(state): State<AppState>,
    client: Client,
    form: Result<Form<SubscribeForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return form_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            "",
            Some("Please fill in the form below.".into()),
        );
    };
    let smtputf8 = state.live.settings().mail.smtputf8;
    let email = match SubscriberEmail::parse_with(&form.email, smtputf8) {
        Ok(email) => email,
        Err(e) => {
            return form_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                &form.email,
                &form.name,
                Some(e.to_string()),
            );
        }
    };
    let name = match SubscriberName::parse(&form.name) {
        Ok(name) => name,
        Err(e) => {
            return form_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                email.as_str(),
                "",
                Some(e.to_string()),
            );
        }
    };
    floored(&state, request(&state, &client, &email, name.as_ref())).await
}

/// Runs `work` and answers no sooner than [`ANSWER_FLOOR`] after it began, then wakes the
/// sender. Every answer past parsing takes at least the floor, whatever the address's
/// state: the database does less work for an address that is already in (or over its
/// limit), and without a floor that shows in the response time. The sender is woken only
/// after the floor, for every state alike: its work (claiming, and sending a mail if one
/// was queued) then falls after the answer, not inside the floor of some states and not
/// others. Shared by `/subscribe` and the public registration form.
pub(super) async fn floored(
    state: &AppState,
    work: impl std::future::Future<Output = Response>,
) -> Response {
    let answer_at = tokio::time::Instant::now() + ANSWER_FLOOR;
    let response = work.await;
    tokio::time::sleep_until(answer_at).await;
    state.wake.notify_one();
    response
}

/// How long every subscribe answer takes at least: well above the database's work for one
/// request, so that no state can be told apart by timing, and too short for a person to
/// notice.
const ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(20);

/// The per-IP limit (in memory, per instance): the 429 page if this client is over it.
pub(super) fn over_ip_limit(state: &AppState, client: &Client) -> Option<Response> {
    let ip = client.ip?;
    state.per_ip.check(ip).is_err().then(|| {
        metrics::counter!("harborlist_rate_limited_total", "scope" => "ip").increment(1);
        too_many(state)
    })
}

/// The request past parsing: the per-IP limit, then one store call.
async fn request(
    state: &AppState,
    client: &Client,
    email: &SubscriberEmail,
    name: Option<&SubscriberName>,
) -> Response {
    if let Some(refused) = over_ip_limit(state, client) {
        return refused;
    }
    match start_subscription(state, client, email, name).await {
        Ok(SubscribeOutcome::RateLimited) => {
            metrics::counter!("harborlist_rate_limited_total", "scope" => "address").increment(1);
            tracing::info!(to = %email.redacted(), "subscribe request over the per-address limit");
            too_many(state)
        }
        Ok(_) => {
            metrics::counter!("harborlist_subscribe_requests_total").increment(1);
            let ttl = state.live.settings().subscriptions.confirm_ttl;
            pages::Page::new("Check your inbox", StatusCode::OK)
                .message(format!(
                    "Unless {email} is already on the list, a message with a link to confirm is on its way to it. \
                     The link works for {}.",
                    ttl.words()
                ))
                .message("Nothing arrived after a few minutes? Check your spam or junk folder.")
                .render(state)
        }
        Err(e) => pages::unavailable(state, &e),
    }
}

/// The double opt-in's first step for `email` (one store call): a confirmation mail unless
/// the address is already active. Also what the registration form's "news" box starts.
pub(super) async fn start_subscription(
    state: &AppState,
    client: &Client,
    email: &SubscriberEmail,
    name: Option<&SubscriberName>,
) -> Result<SubscribeOutcome, crate::store::StoreError> {
    let settings = state.live.settings();
    let key = state.live.token_key();
    let now = state.clock.now();
    let (unsub_nonce, confirm_nonce) = (new_nonce(), new_nonce());
    let unsub_hash = key.derive(TokenPurpose::Unsubscribe, &unsub_nonce).hash();
    let confirm_hash = key.derive(TokenPurpose::Confirm, &confirm_nonce).hash();
    let ip = client.ip.map(|ip| ip.to_string());
    let email_key = email.key();
    let request = SubscribeRequest {
        email: email.as_str(),
        email_key: &email_key,
        name: name.map(SubscriberName::as_str),
        ip: ip.as_deref(),
        user_agent: client.user_agent.as_deref(),
        now_ms: to_millis(now),
        unsub_nonce: &unsub_nonce,
        unsub_hash: &unsub_hash,
        confirm_nonce: &confirm_nonce,
        confirm_hash: &confirm_hash,
        confirm_expires_ms: to_millis(settings.subscriptions.confirm_ttl.after(now)),
        max_per_day: settings.subscriptions.max_confirmations_per_day,
    };
    state.store.request_subscription(&request).await
}

pub(super) fn too_many(state: &AppState) -> Response {
    pages::Page::new("Too many requests", StatusCode::TOO_MANY_REQUESTS)
        .message("We've had several requests for this recently, so we're pausing to avoid flooding anyone's inbox.")
        .message("Please try again tomorrow.")
        .render(state)
}
