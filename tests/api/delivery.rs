//! The outbox under trouble: a relay that is down (a relay fault: no attempt spent), then
//! up; one that answers 4xx, 5xx.

use crate::{
    both_backends,
    helpers::{Backend, Behaviour, MailSink, app, eventually},
};

both_backends!(
    mail_waits_for_a_relay_that_is_down_and_arrives_once,
    temporary_failures_are_retried_permanent_ones_recorded,
    shutdown_loses_nothing_and_restart_sends_it,
);

async fn mail_waits_for_a_relay_that_is_down_and_arrives_once(backend: Backend) {
    let port = MailSink::reserve_port();
    let app = app(backend).smtp_port(port).spawn().await;
    assert_eq!(
        app.subscribe("patient@example.org", "").await.status(),
        200,
        "the request does not wait on SMTP"
    );
    // The sender has tried and failed (connection refused): a relay fault, which leaves
    // the delivery queued without spending an attempt.
    relay_fault_recorded(&app.store).await;
    let late_sink = MailSink::start_on_port(port);
    let got = late_sink.wait_for(1, 30).await;
    assert_eq!(got[0].to, vec!["patient@example.org".to_owned()]);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(late_sink.count(), 1, "delivered exactly once");
    let state: String = sqlx::query_scalar("SELECT state FROM deliveries")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(state, "sent");
}

async fn temporary_failures_are_retried_permanent_ones_recorded(backend: Backend) {
    let sink = MailSink::start();
    sink.set(Behaviour::TempFail);
    let app = app(backend).sink(sink.clone()).spawn().await;
    app.subscribe("later@example.org", "").await;
    eventually(20, "two temporary failures", || async {
        (sink.attempts() >= 2).then_some(())
    })
    .await;
    assert_eq!(sink.count(), 0);
    sink.set(Behaviour::Accept);
    sink.wait_for(1, 20).await;

    sink.set(Behaviour::Reject(["nobody@example.org".to_owned()].into()));
    app.subscribe("nobody@example.org", "").await;
    let (state, error): (String, Option<String>) = eventually(20, "a permanent failure", || async {
        let row: (String, Option<String>) = sqlx::query_as(
            "SELECT d.state, d.last_error FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id WHERE s.email = 'nobody@example.org'",
        )
        .fetch_one(app.store.pool())
        .await
        .ok()?;
        (row.0 == "failed").then_some(row)
    })
    .await;
    assert_eq!(state, "failed");
    assert!(error.unwrap_or_default().contains("550"));
    let attempts: i64 = sqlx::query_scalar(
        "SELECT d.attempts FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id WHERE s.email = 'nobody@example.org'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(attempts, 1, "a 5xx is not retried");
}

async fn shutdown_loses_nothing_and_restart_sends_it(backend: Backend) {
    let port = MailSink::reserve_port();
    let mut app = app(backend).smtp_port(port).spawn().await;
    app.subscribe("kept@example.org", "").await;
    relay_fault_recorded(&app.store).await;
    app.stop().await;
    let sink = MailSink::start_on_port(port);
    let app = app.restart().await;
    sink.wait_for(1, 30).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(sink.count(), 1);
    drop(app);
}

/// Waits until the only delivery is back in the queue after a relay fault, and checks that
/// the fault cost it no attempt.
async fn relay_fault_recorded(store: &harborlist::store::Store) {
    let attempts = eventually(20, "a relay fault to be recorded", || async {
        let (state, attempts, error): (String, i64, Option<String>) =
            sqlx::query_as("SELECT state, attempts, last_error FROM deliveries")
                .fetch_one(store.pool())
                .await
                .ok()?;
        (state == "queued" && error.is_some_and(|e| e.starts_with("relay fault at connect")))
            .then_some(attempts)
    })
    .await;
    assert_eq!(
        attempts, 0,
        "a relay that is down costs the message no attempt"
    );
}
