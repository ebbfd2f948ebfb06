//! The HTTP side: the subscribe form and the links in mail.
//!
//! Handlers parse input into domain types, make one store call (one transaction), nudge
//! the sender, and render a page. They never wait on SMTP. No GET changes state, because
//! mail security scanners fetch every link; state changes are POSTs from buttons (or an
//! RFC 8058 one-click POST from a mail provider).

mod client;
mod confirm;
mod pages;
mod subscribe;
mod trainings;
mod unsubscribe;

use std::{net::IpAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;
use tower_http::{limit::RequestBodyLimitLayer, trace::TraceLayer};

pub use pages::{PAGES, Page, samples as page_samples};

use crate::{clock::SharedClock, health::Health, runtime::Live, store::Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub live: Live,
    pub clock: SharedClock,
    /// Wakes the sender as soon as a request has queued mail.
    pub wake: Arc<Notify>,
    pub per_ip: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The service's own health, for `/healthz`.
    pub health: Health,
}

impl AppState {
    pub fn per_ip_limiter(per_hour: u32) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
        let n = std::num::NonZeroU32::new(per_hour).unwrap_or(std::num::NonZeroU32::MIN);
        Arc::new(RateLimiter::keyed(Quota::per_hour(n)))
    }
}

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
        .route("/trainings.ics", get(trainings::feed))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .layer(RequestBodyLimitLayer::new(16 * 1024))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // The path carries tokens; log only its first segment.
                let route = req.uri().path().split('/').nth(1).unwrap_or("").to_owned();
                tracing::info_span!("http", method = %req.method(), route = %format!("/{route}"))
            }),
        )
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
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

/// Headers that make the pages safe to open from a mail client.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    set(h, "cache-control", "no-store");
    res
}
