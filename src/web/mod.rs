//! The HTTP side: the subscribe form, the trainings and their registration form, and the
//! links in mail.
//!
//! Handlers parse input into domain types, make one store call (one transaction), nudge
//! the sender, and render a page. They never wait on SMTP. No GET changes state, because
//! mail security scanners fetch every link; state changes are POSTs from buttons (or an
//! RFC 8058 one-click POST from a mail provider).

mod client;
mod confirm;
mod guard;
mod limit;
mod member;
mod pages;
mod register;
mod registration;
pub mod server;
mod subscribe;
mod trainings;
mod unsubscribe;

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::Notify;
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer, trace::TraceLayer};

pub use limit::IpLimiter;
pub use pages::{PAGES, Page, samples as page_samples};

use crate::{
    clock::SharedClock,
    health::{Health, RelayState, RelayStatus},
    runtime::Live,
    store::Store,
};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub live: Live,
    pub clock: SharedClock,
    /// Wakes the sender as soon as a request has queued mail.
    pub wake: Arc<Notify>,
    pub per_ip: Arc<IpLimiter>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The service's own health, for `/healthz`.
    pub health: Health,
}

impl AppState {
    pub fn per_ip_limiter(per_hour: u32) -> Arc<IpLimiter> {
        Arc::new(IpLimiter::per_hour(per_hour))
    }
}

/// The security headers as raw lines, for the answers hyper writes by itself (see
/// `server.rs`): the same ones the middleware sets, HSTS included when it applies.
pub fn bare_headers(settings: &crate::config::Settings) -> server::BareHeaders {
    let mut lines = String::new();
    for (name, value) in guard::STATIC_HEADERS {
        lines.push_str(&format!("{name}: {value}\r\n"));
    }
    if settings.server.public_url.scheme() == "https" {
        lines.push_str(&format!("strict-transport-security: {}\r\n", guard::HSTS));
    }
    lines.into_bytes().into()
}

/// The private listener's routes (`server.metrics_bind`): only `/metrics`, which must not
/// be public (its counters move with what other people do).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The public listener's routes. `/metrics` is not among them: it answers 404 here.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(subscribe::form))
        .route("/subscribe", get(subscribe::form).post(subscribe::submit))
        .route("/confirm/{token}", get(confirm::page).post(confirm::submit))
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe::page).post(unsubscribe::submit),
        )
        .route("/trainings", get(trainings::page))
        .route(
            "/trainings/{id}",
            get(register::page).post(register::submit),
        )
        .route(
            "/registrations/{token}/{action}",
            get(registration::page).post(registration::submit),
        )
        .route("/trainings.ics", get(trainings::feed))
        .route(
            "/trainings/{id}/register/{link}",
            get(member::page).post(member::submit),
        )
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::refuse_cross_site,
        ))
        .layer(RequestBodyLimitLayer::new(16 * 1024))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            server::REQUEST_TIMEOUT,
        ))
        // Outside the limits, so their 413 and 408 carry the headers too.
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            guard::security_headers,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // The path carries tokens; log only its first segment.
                let route = req.uri().path().split('/').nth(1).unwrap_or("").to_owned();
                tracing::info_span!("http", method = %req.method(), route = %format!("/{route}"))
            }),
        )
        .with_state(state)
}

/// `/healthz`: 200 when the service can do its work, 503 with the reason when it can't (the
/// database is unreachable, a task has stopped, or the planner has not finished a turn in
/// three ticks). The second line names the relay's state, which alone is no reason for a
/// 503: mail waits in the queue until the relay is back, and staff see it in `status`.
async fn healthz(State(state): State<AppState>) -> Response {
    let problem = match state.store.ping().await {
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            Some("database unreachable".to_owned())
        }
        Ok(()) => state.health.stopped().or_else(|| planner_stalled(&state)),
    };
    let relay = relay_line(&state.health.relay());
    match problem {
        None => (StatusCode::OK, format!("ok\n{relay}\n")).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n{relay}\n")).into_response(),
    }
}

fn planner_stalled(state: &AppState) -> Option<String> {
    let tick = state.live.settings().schedule.tick.std();
    let limit = i64::try_from(tick.as_millis().saturating_mul(3)).unwrap_or(i64::MAX);
    let silent = state
        .health
        .planner_silent_for_ms(crate::clock::to_millis(state.clock.now()));
    (silent > limit).then(|| format!("the planner has not finished a turn in {}s", silent / 1000))
}

fn relay_line(relay: &RelayStatus) -> String {
    match (relay.state, &relay.last_error) {
        (RelayState::Ok, _) => "relay: ok".into(),
        (RelayState::Failing, Some(error)) => format!("relay: failing ({error})"),
        (RelayState::Failing, None) => "relay: failing".into(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response(),
    }
}

async fn not_found(State(state): State<AppState>) -> Response {
    Page::new("Page not found", StatusCode::NOT_FOUND)
        .message("There is nothing at this address.")
        .link("Join the trainings list", "/")
        .render(&state)
}
