//! What operators see: Prometheus metrics, and logs that are not a subscriber list.

use crate::{
    both_backends,
    helpers::{Backend, DaemonSetup, MailSink, TestDb, eventually, spawn_app},
};

both_backends!(
    metrics_report_sends_queue_latency_and_lag,
    json_logs_never_print_a_whole_address
);

async fn metrics_report_sends_queue_latency_and_lag(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("metrics@example.org").await;
    assert_eq!(
        app.get(&app.url("/metrics")).await.status(),
        404,
        "metrics are not on the public listener"
    );
    let metrics = app.metrics_url.as_deref().expect("metrics are on");
    // The planner's first turn (which sets the lag gauge) may finish after the welcome.
    eventually(20, "the planner's first turn", || async {
        let body = app.get(metrics).await.text().await.ok()?;
        body.contains("harborlist_scheduler_lag_seconds")
            .then_some(())
    })
    .await;
    let res = app.get(metrics).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = res.text().await.unwrap();
    for series in [
        "harborlist_messages_sent_total{kind=\"confirm\"}",
        "harborlist_messages_sent_total{kind=\"welcome\"}",
        "harborlist_send_seconds_bucket",
        "harborlist_send_seconds_count",
        "harborlist_claim_seconds_count",
        // (The relay's half, `harborlist_relay_reply_seconds`, is timed on pipelining
        // sessions only, which this relay does not offer; `mail::smtp`'s tests cover it.)
        "harborlist_unrecorded_wait_seconds_count",
        // The steps of one send take well under a millisecond: their buckets start at 100 µs.
        "harborlist_unrecorded_wait_seconds_bucket{le=\"0.0001\"}",
        "harborlist_record_seconds_bucket{le=\"0.0001\"}",
        "harborlist_queue_depth",
        "# TYPE harborlist_relay_up gauge",
        "harborlist_scheduler_lag_seconds",
        "harborlist_confirmations_total",
        "# TYPE harborlist_messages_sent_total counter",
    ] {
        assert!(body.contains(series), "/metrics lacks {series}:\n{body}");
    }
    assert!(!body.contains("metrics@example.org"));
}

async fn json_logs_never_print_a_whole_address(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = MailSink::reserve_port();
    // The relay is down, so the address is at risk of appearing in the lines about each
    // message going back to the queue too.
    let daemon = DaemonSetup::new(
        &db.url,
        &format!("smtp://127.0.0.1:{port}"),
        "[log]\nformat = \"json\"\nlevel = \"debug\"\n",
    )
    .launch()
    .await;
    assert_eq!(
        daemon
            .subscribe("private.person@example.org", "Private Person")
            .await,
        200
    );
    eventually(20, "a relay fault to be logged", || async {
        daemon
            .log()
            .contains("relay fault; back to the queue")
            .then_some(())
    })
    .await;
    let log = daemon.log();
    assert!(
        !log.contains("private.person@example.org"),
        "a whole address reached the log:\n{log}"
    );
    assert!(!log.contains("Private Person"));
    assert!(
        log.contains("p…@e…org"),
        "the redacted form identifies the delivery"
    );
    // No link tokens either: paths are logged by their first segment only.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}
