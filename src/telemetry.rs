//! Logs and metrics.
//!
//! Logs go through `tracing`, as text for people or JSON for collectors (`log.format`).
//! Addresses are logged only in redacted form ([`crate::domain::email::redact`]), so logs
//! never amount to a copy of the subscriber list. Metrics use the `metrics` facade with a
//! Prometheus recorder, rendered at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(directives(&log.level)));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match log.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        // Colour only for a person at a terminal: codes in a file or the journal are noise.
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// A bare level ("debug") applies to harborlist's own code; libraries stay at `warn`,
/// because some (SMTP, SQL) would log recipients or message bodies at debug level. Full
/// directives ("harborlist=debug,tower_http=info") are taken as written.
fn directives(level: &str) -> String {
    if level.contains('=') || level.contains(',') {
        level.to_owned()
    } else {
        format!("warn,harborlist={level}")
    }
}

// Histograms with their own buckets, named once here: a name recorded elsewhere that drifted
// from these would silently fall back to the coarse default buckets.
pub(crate) const RELAY_REPLY: &str = "harborlist_relay_reply_seconds";
pub(crate) const UNRECORDED_WAIT: &str = "harborlist_unrecorded_wait_seconds";
pub(crate) const RECORD: &str = "harborlist_record_seconds";

/// Buckets for the steps of sending one message, in seconds.
const FAST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .ok()?
                // The crash-bound cycle's two halves and the record take well under a
                // millisecond when healthy: buckets from 100 µs show where a slowdown is.
                .set_buckets_for_metric(Matcher::Full(RELAY_REPLY.into()), FAST_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full(UNRECORDED_WAIT.into()), FAST_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full(RECORD.into()), FAST_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "harborlist_bounces_total",
        "Bounce reports read back (DSNs, plain-text bounces, refusals at send time), by kind: hard, soft, delayed."
    );
    metrics::describe_counter!(
        "harborlist_complaints_total",
        "Complaint (feedback-loop) reports read back; a matched one unsubscribes its subscriber."
    );
    metrics::describe_counter!(
        "harborlist_reports_unmatched_total",
        "Reports that matched nothing harborlist sent (no valid VERP tag, no Message-ID of ours to that address): they changed no one."
    );
    metrics::describe_gauge!(
        "harborlist_bounce_mailbox_up",
        "1 while harborlist is logged in to the bounce mailbox (bounces.imap_url), 0 while it cannot read it."
    );
    metrics::describe_counter!(
        "harborlist_bounce_mailbox_errors_total",
        "Sessions with the bounce mailbox that failed, by reason: connect, tls, login, folder, protocol, store."
    );
    metrics::describe_counter!(
        "harborlist_bounce_mailbox_messages_total",
        "Messages read from the bounce mailbox, by the folder they were moved to: processed (a report) or unknown."
    );
    metrics::describe_counter!(
        "harborlist_messages_sent_total",
        "Messages accepted by the relay (or written to the outbox)."
    );
    metrics::describe_counter!(
        "harborlist_messages_failed_total",
        "Deliveries given up, by reason: bounce (the address), rejected (policy or content), retries_exhausted."
    );
    metrics::describe_counter!(
        "harborlist_messages_retried_total",
        "Temporary failures that were scheduled for a retry."
    );
    metrics::describe_histogram!(
        "harborlist_send_seconds",
        "Time to hand one message to the relay."
    );
    metrics::describe_histogram!(
        RELAY_REPLY,
        "Time from writing a message (on a pipelining session) to the relay's reply to it."
    );
    metrics::describe_histogram!(
        UNRECORDED_WAIT,
        "Time a session waited, before letting the relay accept a message, for an earlier outcome to be stored (the crash bound)."
    );
    metrics::describe_histogram!(
        RECORD,
        "Time to store one group of delivery outcomes (one statement or transaction)."
    );
    metrics::describe_histogram!(
        "harborlist_record_group_size",
        "Outcomes stored together by one group commit."
    );
    metrics::describe_gauge!("harborlist_queue_depth", "Deliveries queued or in flight.");
    metrics::describe_gauge!(
        "harborlist_relay_up",
        "1 while the mail relay takes mail, 0 while it fails before RCPT (connect, TLS, AUTH, MAIL FROM) and all sending is paused."
    );
    metrics::describe_gauge!(
        "harborlist_scheduler_lag_seconds",
        "How late the planner ran relative to the earliest due mailing."
    );
    metrics::describe_counter!(
        "harborlist_subscribe_requests_total",
        "Accepted subscribe requests."
    );
    metrics::describe_counter!("harborlist_confirmations_total", "Confirmed subscriptions.");
    metrics::describe_counter!("harborlist_unsubscribes_total", "Unsubscribes.");
    metrics::describe_counter!(
        "harborlist_rate_limited_total",
        "Subscribe requests refused by a rate limit."
    );
}
