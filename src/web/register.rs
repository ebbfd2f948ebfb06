//! `GET /trainings/{id}` (a session, its seats and the public registration form) and
//! `POST /trainings/{id}` (the request).
//!
//! Like `/subscribe`, the answer to a valid request is the same "check your inbox" page
//! whatever the address's state (new, pending, registered, waiting, offered, over its
//! per-address limit, on the list or not), after the same answer floor, so neither the page
//! nor its timing tells an outsider who is registered. The seat is taken only when the
//! mail's link is confirmed (`registration.rs`). Ticking "news" also starts the list's
//! double opt-in, as `/subscribe` does.

use axum::{
    Form,
    extract::{Path, State, rejection::FormRejection},
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState,
    client::Client,
    pages::{self, Page},
    subscribe,
    trainings::{self, Availability},
};
use crate::{
    calendar::Session,
    clock::to_millis,
    domain::{Organisation, SubscriberEmail, SubscriberName, TokenPurpose, new_nonce},
    schedule::content::{self, training_json},
    store::{
        StoreError,
        registrations::{Evidence, NewLink, Registrant, SessionSeats},
    },
};

/// The form's fields, as typed.
#[derive(Debug, Default, Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    organisation: String,
    /// The "also send me news of future trainings" box: present (`on`) when ticked.
    #[serde(default)]
    news: Option<String>,
}

/// The form parsed into domain types.
struct Parsed {
    email: SubscriberEmail,
    name: Option<SubscriberName>,
    organisation: Option<Organisation>,
    news: bool,
}

impl RegisterForm {
    fn parse(&self, smtputf8: bool) -> Result<Parsed, String> {
        let email =
            SubscriberEmail::parse_with(&self.email, smtputf8).map_err(|e| e.to_string())?;
        let name = SubscriberName::parse(&self.name).map_err(|e| format!("Name: {e}"))?;
        let organisation =
            Organisation::parse(&self.organisation).map_err(|e| format!("Organisation: {e}"))?;
        Ok(Parsed {
            email,
            name,
            organisation,
            news: self.news.is_some(),
        })
    }
}

pub async fn page(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(session) = state.live.calendar().session_by_id(&id) else {
        return unknown(&state);
    };
    match availability(&state, &session).await {
        Ok(a) => session_page(
            &state,
            StatusCode::OK,
            &session,
            a,
            &RegisterForm::default(),
            None,
        ),
        Err(e) => pages::unavailable(&state, &e),
    }
}

pub async fn submit(
    State(state): State<AppState>,
    client: Client,
    Path(id): Path<String>,
    form: Result<Form<RegisterForm>, FormRejection>,
) -> Response {
    let Some(session) = state.live.calendar().session_by_id(&id) else {
        return unknown(&state);
    };
    let a = match availability(&state, &session).await {
        Ok(a) => a,
        Err(e) => return pages::unavailable(&state, &e),
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(_) => RegisterForm::default(),
    };
    if !a.takes_registrations() {
        // Whether a session is open is public: saying so reveals nothing about anyone.
        return session_page(&state, StatusCode::CONFLICT, &session, a, &form, None);
    }
    let parsed = match form.parse(state.live.settings().mail.smtputf8) {
        Ok(p) => p,
        Err(why) => {
            return session_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                &session,
                a,
                &form,
                Some(why),
            );
        }
    };
    subscribe::floored(&state, request(&state, &client, &session, &parsed)).await
}

/// The request past parsing: the per-IP limit, the registration request, and the list's
/// opt-in if asked for; the same page for every outcome.
async fn request(state: &AppState, client: &Client, session: &Session, form: &Parsed) -> Response {
    if let Some(refused) = subscribe::over_ip_limit(state, client) {
        return refused;
    }
    let result = async {
        let seats = session_seats(state, session).await?;
        register(state, client, &seats, form).await?;
        if form.news {
            // Its own outcome (a mail, or none for an active or over-limit address) is
            // not told either.
            subscribe::start_subscription(state, client, &form.email, form.name.as_ref()).await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    match result {
        Ok(()) => {
            metrics::counter!("harborlist_registration_requests_total").increment(1);
            check_inbox(state, session, form)
        }
        Err(e) => pages::unavailable(state, &e),
    }
}

/// One store call: a confirmation mail for a new request, the news again for one already in.
async fn register(
    state: &AppState,
    client: &Client,
    seats: &SessionSeats,
    form: &Parsed,
) -> Result<(), StoreError> {
    let settings = state.live.settings();
    let key = state.live.token_key();
    let (unsub_nonce, link_nonce) = (new_nonce(), new_nonce());
    let unsub_hash = key.derive(TokenPurpose::Unsubscribe, &unsub_nonce).hash();
    let link_hash = key.derive(TokenPurpose::Registration, &link_nonce).hash();
    let email_key = form.email.key();
    let org_key = form.organisation.as_ref().map(Organisation::key);
    let who = Registrant {
        email: form.email.as_str(),
        email_key: &email_key,
        name: form.name.as_ref().map(SubscriberName::as_str),
        organisation: form.organisation.as_ref().map(Organisation::as_str),
        org_key: org_key.as_deref(),
        unsub_nonce: &unsub_nonce,
        unsub_hash: &unsub_hash,
    };
    let ip = client.ip.map(|ip| ip.to_string());
    let evidence = Evidence {
        ip: ip.as_deref(),
        user_agent: client.user_agent.as_deref(),
    };
    let link = NewLink {
        nonce: &link_nonce,
        hash: &link_hash,
    };
    let now_ms = to_millis(state.clock.now());
    let max = settings.subscriptions.max_confirmations_per_day;
    let outcome = state
        .store
        .request_registration(seats, &who, link, evidence, max, now_ms)
        .await?;
    tracing::debug!(?outcome, to = %form.email.redacted(), "registration request");
    Ok(())
}

/// The session's seats from the running settings, with the SEQUENCE its invitations carry.
pub(super) async fn session_seats(
    state: &AppState,
    session: &Session,
) -> Result<SessionSeats, StoreError> {
    let sequence = trainings::sequence(state, session).await?;
    Ok(content::seats(
        &state.live.settings(),
        session,
        sequence,
        state.clock.now(),
    ))
}

async fn availability(state: &AppState, session: &Session) -> Result<Availability, StoreError> {
    let rows = trainings::with_availability(state, vec![session.clone()]).await?;
    Ok(rows.first().map_or(Availability::Closed, |(_, a)| *a))
}

/// The same page for every valid request.
fn check_inbox(state: &AppState, session: &Session, form: &Parsed) -> Response {
    let mut page = Page::new("Check your inbox", StatusCode::OK)
        .message(format!(
            "A message about your registration for {} on {} is on its way to {}.",
            session.title,
            crate::calendar::human::date(session),
            form.email
        ))
        .message(
            "If it asks you to confirm, open its link and press the button on the page: \
             your registration counts once you have confirmed.",
        );
    if form.news {
        page = page.message(
            "Unless you're on the list already, a second message asks you to confirm that you want news of future trainings.",
        );
    }
    page.message("Nothing arrived after a few minutes? Check your spam or junk folder.")
        .link("See the upcoming trainings", "/trainings")
        .render(state)
}

fn session_page(
    state: &AppState,
    status: StatusCode,
    session: &Session,
    a: Availability,
    form: &RegisterForm,
    error: Option<String>,
) -> Response {
    pages::render(
        state,
        status,
        "training",
        page_data(session, a, form, error),
    )
}

/// What `training.html.hbs` is rendered with.
pub(super) fn page_data(
    session: &Session,
    a: Availability,
    form: &RegisterForm,
    error: Option<String>,
) -> Value {
    let notice = match a {
        Availability::Closed => Some("Registration for this training has closed."),
        Availability::Cancelled => Some("This training has been cancelled."),
        _ => None,
    };
    json!({
        "title": session.title,
        "training": training_json(session),
        "availability": a.json(),
        "action": format!("/trainings/{}", session.id),
        "notice": notice,
        "form": {
            "email": form.email,
            "name": form.name,
            "organisation": form.organisation,
            "news": form.news.is_some(),
        },
        "error": error,
    })
}

/// A sample form as typed, for `check`.
pub(super) fn sample_form() -> RegisterForm {
    RegisterForm {
        email: "a@example.org".into(),
        name: "A".into(),
        organisation: "An organisation".into(),
        news: Some("on".into()),
    }
}

pub(super) fn unknown(state: &AppState) -> Response {
    Page::new("No such training", StatusCode::NOT_FOUND)
        .message("There is no training at this address. It may have been moved or removed.")
        .link("See the upcoming trainings", "/trainings")
        .render(state)
}
