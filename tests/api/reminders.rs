//! Reminders end to end: a one-off session a few seconds ahead, a reminder seconds before
//! it, real SMTP, and the invite parsed back.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use harborlist::{calendar::ExtraSettings, config::ReminderSettings, domain::TokenKey};

use crate::{
    both_backends,
    helpers::{Backend, Received, TestApp, app, calendar_part, header, parse, seed},
};

both_backends!(
    a_reminder_reaches_each_active_subscriber_once_with_an_invite,
    a_reminder_missed_while_stopped_is_sent_once_at_start
);

/// An app whose calendar has one extra session `start_in` from now, with one reminder
/// `before` it (and no other reminders).
async fn app_with_session(
    backend: Backend,
    start_in: i64,
    before: &str,
) -> (TestApp, DateTime<Utc>) {
    let start = DateTime::from_timestamp(Utc::now().timestamp() + start_in, 0).unwrap();
    let before = before.to_owned();
    let app = app(backend)
        .with(move |s| {
            s.reminders = vec![ReminderSettings {
                name: "soon".into(),
                before: before.parse().unwrap(),
                template: "reminder".into(),
                audience: Default::default(),
            }];
            s.trainings.extra.push(ExtraSettings {
                id: Some("e2e".into()),
                start: start.to_rfc3339_opts(SecondsFormat::Secs, true),
                duration: Some("1h".into()),
                topic: Some("Test session".into()),
                ..Default::default()
            });
        })
        .spawn()
        .await;
    let key = TokenKey::parse(
        app.settings
            .security
            .token_key
            .as_ref()
            .map(harborlist::domain::Secret::expose)
            .unwrap(),
    )
    .unwrap();
    for (email, status) in [
        ("a@example.org", "active"),
        ("b@example.org", "active"),
        ("p@example.org", "pending"),
        ("u@example.org", "unsubscribed"),
    ] {
        seed(&app.store, &key, email, status).await;
    }
    (app, start)
}

fn recipients(msgs: &[Received]) -> Vec<String> {
    let mut to: Vec<String> = msgs.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    to
}

async fn a_reminder_reaches_each_active_subscriber_once_with_an_invite(backend: Backend) {
    let (app, start) = app_with_session(backend, 14, "8s").await;
    let msgs = app.sink.wait_for(2, 30).await;
    let arrived = Utc::now();
    assert!(arrived < start, "the reminder arrived before the session");
    assert_eq!(
        recipients(&msgs),
        vec!["a@example.org", "b@example.org"],
        "active subscribers only"
    );

    for m in &msgs {
        let msg = parse(&m.bytes);
        assert!(
            msg.subject().unwrap().starts_with("Reminder: "),
            "{:?}",
            msg.subject()
        );
        assert!(header(&m.bytes, "List-Unsubscribe").is_some());
        let ics = calendar_part(&m.bytes).expect("a text/calendar part");
        let cal = ical::IcalParser::new(ics.as_bytes())
            .next()
            .expect("one calendar")
            .expect("the invite parses");
        let prop = |props: &[ical::property::Property], name: &str| {
            props
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.value.clone())
                .unwrap_or_default()
        };
        assert_eq!(prop(&cal.properties, "METHOD"), "PUBLISH");
        assert_eq!(prop(&cal.properties, "VERSION"), "2.0");
        assert_eq!(cal.events.len(), 1);
        let ev = &cal.events[0].properties;
        assert_eq!(
            prop(ev, "UID"),
            "training-e2e@trainings.harborlist.example.org"
        );
        assert_eq!(
            prop(ev, "DTSTART"),
            start.format("%Y%m%dT%H%M%SZ").to_string()
        );
        assert_eq!(prop(ev, "SEQUENCE"), "0");
        assert!(prop(ev, "SUMMARY").contains("Test session"));
        assert!(prop(ev, "LOCATION").contains("1605 Eustis Street"));
        assert!(!prop(ev, "DESCRIPTION").is_empty());
        assert!(!prop(ev, "DTSTAMP").is_empty());
    }
    let ids: std::collections::HashSet<_> = msgs
        .iter()
        .map(|m| parse(&m.bytes).message_id().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "one Message-ID per recipient");

    // A restart sends nothing twice.
    let app = app.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.sink.count(), 2);
}

async fn a_reminder_missed_while_stopped_is_sent_once_at_start(backend: Backend) {
    let (mut app, start) = app_with_session(backend, 12, "8s").await;
    // Down across the due time (start - 8 s).
    app.stop().await;
    let due = start - chrono::Duration::seconds(8);
    let wait = (due - Utc::now()).num_milliseconds() + 1500;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    assert_eq!(app.sink.count(), 0, "nothing went out while stopped");
    let app = app.restart().await;
    let msgs = app.sink.wait_for(2, 20).await;
    assert!(Utc::now() < start);
    assert_eq!(recipients(&msgs), vec!["a@example.org", "b@example.org"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.sink.count(), 2, "sent once");
}
