//! Announcements queued in config: delivery, and what edits do.

use std::time::Duration;

use chrono::{DateTime, Utc};
use harborlist::{
    config::{AnnouncementSettings, SendAt},
    domain::TokenKey,
};

use crate::{
    both_backends,
    helpers::{Backend, app, calendar_part, html_of, parse, seed, text_of},
    schedule::World,
};

both_backends!(
    an_announcement_due_in_seconds_reaches_each_active_subscriber_once,
    editing_a_sent_announcement_does_not_resend_it,
    removing_an_unsent_announcement_cancels_it,
    changing_send_at_reschedules,
);

pub fn announcement(id: &str, send_at: DateTime<Utc>, subject: &str) -> AnnouncementSettings {
    AnnouncementSettings {
        id: id.into(),
        send_at: SendAt::Instant(send_at),
        subject: subject.into(),
        markdown: Some("Hello,\n\nThe **May training** adds a topic:\n\n- Labor trafficking\n\nSee [the dates](https://example.org/dates).".into()),
        template: None,
        vars: Default::default(),
        training: None,
        send_late: false,
    }
}

async fn an_announcement_due_in_seconds_reaches_each_active_subscriber_once(backend: Backend) {
    let send_at = Utc::now() + chrono::Duration::seconds(3);
    let app = app(backend)
        .with(move |s| {
            let mut a = announcement("may-topics", send_at, "New topic at the May training");
            a.training = Some("2027-05-19".parse().unwrap());
            s.announcements.push(a);
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
    let msgs = app.sink.wait_for(2, 30).await;
    assert!(Utc::now() >= send_at, "not before send_at");
    let mut to: Vec<_> = msgs.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, vec!["a@example.org", "b@example.org"]);
    let m = &msgs[0].bytes;
    assert_eq!(parse(m).subject(), Some("New topic at the May training"));
    let html = html_of(m);
    assert!(
        html.contains("<strong>May training</strong>")
            && html.contains("<li>Labor trafficking</li>"),
        "{html}"
    );
    let text = text_of(m);
    assert!(
        text.contains("The May training adds a topic:") && text.contains("- Labor trafficking"),
        "{text}"
    );
    assert!(text.contains("the dates (https://example.org/dates)"));
    assert!(
        text.contains("To unsubscribe, open: http") && text.contains("1605 Eustis Street"),
        "the shared footer"
    );
    let ics = calendar_part(m).expect("the training's invite");
    assert!(ics.contains("UID:training-20270519@trainings.harborlist.example.org"));

    let app = app.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.sink.count(), 2, "once each, also across a restart");
}

const SEND_AT: &str = "2027-01-06T15:00:00Z";

async fn editing_a_sent_announcement_does_not_resend_it(backend: Backend) {
    let mut w = World::new(backend, "2027-01-01T00:00:00Z").await;
    w.reconfigure(|s| {
        s.announcements.push(announcement(
            "jan",
            SEND_AT.parse().unwrap(),
            "First subject",
        ))
    });
    w.turn_at("2027-01-06T15:00:00Z").await;
    assert_eq!(
        w.deliveries("announcement:jan").await,
        vec!["a@example.org", "b@example.org"]
    );
    w.reconfigure(|s| s.announcements[0].subject = "Edited subject".into());
    let report = w.turn_at("2027-01-06T16:00:00Z").await;
    assert_eq!((report.planned, report.fanned_out), (0, 0), "{report:?}");
    assert_eq!(w.state("announcement:jan").await.as_deref(), Some("fanned"));
    let data = w
        .store
        .mailing_by_key("announcement:jan")
        .await
        .unwrap()
        .unwrap()
        .data;
    assert!(
        data.contains("First subject"),
        "the record of what was sent is unchanged"
    );
    assert_eq!(w.deliveries("announcement:jan").await.len(), 2);
}

async fn removing_an_unsent_announcement_cancels_it(backend: Backend) {
    let mut w = World::new(backend, "2027-01-01T00:00:00Z").await;
    w.reconfigure(|s| {
        s.announcements
            .push(announcement("gone", SEND_AT.parse().unwrap(), "Never mind"))
    });
    w.turn_at("2027-01-02T00:00:00Z").await;
    assert_eq!(
        w.state("announcement:gone").await.as_deref(),
        Some("planned")
    );
    w.reconfigure(|s| s.announcements.clear());
    let report = w.turn_at("2027-01-03T00:00:00Z").await;
    assert_eq!(report.cancelled, 1);
    assert_eq!(
        w.state("announcement:gone").await.as_deref(),
        Some("cancelled")
    );
    w.turn_at("2027-01-07T00:00:00Z").await;
    assert!(
        w.deliveries("announcement:gone").await.is_empty(),
        "nothing went out"
    );
}

async fn changing_send_at_reschedules(backend: Backend) {
    let mut w = World::new(backend, "2027-01-01T00:00:00Z").await;
    w.reconfigure(|s| {
        s.announcements
            .push(announcement("moving", SEND_AT.parse().unwrap(), "Moving"))
    });
    w.turn_at("2027-01-02T00:00:00Z").await;
    // A local time in the calendar's zone: 10:00 CST is 16:00 UTC.
    w.reconfigure(|s| s.announcements[0].send_at = SendAt::parse("2027-01-08T10:00").unwrap());
    w.turn_at("2027-01-06T15:30:00Z").await;
    let m = w
        .store
        .mailing_by_key("announcement:moving")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.due_ms,
        "2027-01-08T16:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis()
    );
    assert!(
        w.deliveries("announcement:moving").await.is_empty(),
        "not at the old time"
    );
    w.turn_at("2027-01-08T16:00:00Z").await;
    assert_eq!(w.deliveries("announcement:moving").await.len(), 2);
}
