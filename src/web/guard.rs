//! What every response carries, and which requests are refused before any handler runs.
//!
//! * [`security_headers`] wraps every response, errors from the middleware included
//!   (413, 408): a CSP that allows no scripts or framing, `nosniff`, no referrer, no
//!   caching, HSTS when the public URL is https, and `Retry-After` on every 429.
//! * [`refuse_cross_site`] refuses a state-changing form post sent from another site, so
//!   a web page can't make its visitors' browsers subscribe addresses (with the visitors'
//!   IPs recorded as consent). A request without `Origin` or `Sec-Fetch-Site` (curl, old
//!   browsers) passes. One-click unsubscribe (RFC 8058) is open to any origin: a mail
//!   provider posts it from its own.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::Response,
};

use super::{AppState, Page};

/// One year, the least HSTS preload lists accept.
pub const HSTS: &str = "max-age=31536000";
/// A 429 that doesn't say: the per-IP window is an hour.
const DEFAULT_RETRY_AFTER: &str = "3600";

pub async fn security_headers(State(state): State<AppState>, mut res: Response) -> Response {
    let https = state.live.settings().server.public_url.scheme() == "https";
    let too_many = res.status() == StatusCode::TOO_MANY_REQUESTS;
    let h = res.headers_mut();
    for (name, value) in STATIC_HEADERS {
        h.entry(*name).or_insert(HeaderValue::from_static(value));
    }
    if https {
        h.entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static(HSTS));
    }
    if too_many {
        h.entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from_static(DEFAULT_RETRY_AFTER));
    }
    res
}

/// Headers that make the pages safe to open from a mail client; also written into the
/// answers hyper gives on its own (see `server.rs`).
pub const STATIC_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
];

pub async fn refuse_cross_site(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == Method::POST
        && !req.uri().path().starts_with("/unsubscribe/")
        && !same_site(&state, req.headers())
    {
        metrics::counter!("harborlist_cross_site_refused_total").increment(1);
        return Page::new(
            "This form can't be sent from another site",
            StatusCode::FORBIDDEN,
        )
        .message("For your safety, this form only works on our own pages.")
        .link("Open the form", "/")
        .render(&state);
    }
    next.run(req).await
}

/// Whether a form post comes from our own pages (or an origin listed in
/// `server.form_origins`), as far as the browser says.
///
/// `Origin: null` says nothing about where a post came from, and our own pages cause it:
/// they send `Referrer-Policy: no-referrer` (their URLs hold tokens), and the Fetch
/// standard then has the browser send `Origin: null` with their form posts. So `null`
/// counts as no origin, and the browser's own `Sec-Fetch-Site`, which no page can forge,
/// decides.
fn same_site(state: &AppState, headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("").trim())
        .filter(|o| !o.eq_ignore_ascii_case("null"));
    let settings = state.live.settings();
    let allowed = |origin: &str| {
        let ours = settings.server.public_url.origin().ascii_serialization();
        origin.eq_ignore_ascii_case(&ours)
            || settings
                .server
                .form_origins
                .iter()
                .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    };
    match origin {
        Some(origin) => allowed(origin),
        // No origin to go by: only a browser's own word that it is cross-site refuses it.
        None => fetch_site != Some("cross-site"),
    }
}
