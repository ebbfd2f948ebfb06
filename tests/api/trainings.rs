//! The calendar as people see it: the page, the feed, the command, and throttled sending.

use std::time::Duration;

use chrono::Utc;
use harborlist::domain::TokenKey;

use crate::{
    both_backends,
    helpers::{Backend, app, assert_success, seed, spawn_app},
};

both_backends!(
    the_trainings_page_and_feed_list_upcoming_sessions,
    sending_follows_max_per_second
);

#[test]
fn trainings_command_prints_sessions_with_offsets() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harborlist"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "trainings",
            "--from",
            "2027-01-01",
            "--count",
            "4",
            "--json",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let starts: Vec<&str> = list.iter().map(|s| s["start"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        [
            "2027-01-20T11:00:00-06:00",
            "2027-03-17T11:00:00-05:00",
            "2027-05-19T11:00:00-05:00",
            "2027-07-21T11:00:00-05:00"
        ]
    );
    assert_eq!(list[0]["end"], "2027-01-20T12:30:00-06:00");
    assert_eq!(list[0]["cancelled"], false);
    assert!(
        list[0]["location"]
            .as_str()
            .unwrap()
            .contains("1605 Eustis Street")
    );
    assert!(list[0]["title"].as_str().is_some());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harborlist"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["trainings", "--from", "2027-01-01", "--count", "2"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("Wednesday, January 20, 2027") && table.contains("11:00 AM – 12:30 PM CST"),
        "{table}"
    );
    assert!(
        table.contains("Wednesday, March 17, 2027") && table.contains("11:00 AM – 12:30 PM CDT"),
        "{table}"
    );
}

async fn the_trainings_page_and_feed_list_upcoming_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let page = app.get(&app.url("/trainings")).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Wednesday, January 20, 2027") && html.contains("11:00 AM – 12:30 PM CST"),
        "{html}"
    );
    assert!(html.contains("href=\"/trainings.ics\""));

    let feed = app.get(&app.url("/trainings.ics")).await;
    assert_eq!(feed.status(), 200);
    assert!(
        feed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/calendar")
    );
    let body = feed.text().await.unwrap();
    let cal = ical::IcalParser::new(body.as_bytes())
        .next()
        .unwrap()
        .expect("the feed parses");
    assert_eq!(cal.events.len(), 12);
    let uid = |e: &ical::parser::ical::component::IcalEvent| {
        e.properties
            .iter()
            .find(|p| p.name == "UID")
            .and_then(|p| p.value.clone())
            .unwrap()
    };
    assert_eq!(
        uid(&cal.events[0]),
        "training-20270120@trainings.harborlist.example.org"
    );
    assert!(body.contains("METHOD:PUBLISH"));
    assert!(body.contains("DTSTART:20270120T170000Z"));
}

async fn sending_follows_max_per_second(backend: Backend) {
    let send_at = Utc::now() + chrono::Duration::seconds(1);
    let app = app(backend)
        .with(move |s| {
            s.mail.max_per_second = 4.0;
            s.announcements.push(crate::announcements::announcement(
                "throttled",
                send_at,
                "Throttled",
            ));
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
    for i in 0..12 {
        seed(&app.store, &key, &format!("r{i}@example.org"), "active").await;
    }
    let first = crate::helpers::eventually(20, "the first message", || async {
        (app.sink.count() >= 1).then(std::time::Instant::now)
    })
    .await;
    app.sink.wait_for(12, 30).await;
    let span = first.elapsed();
    // 12 messages at 4/s with a burst of 4: at least (12 - 4) / 4 = 2 s after the first.
    assert!(
        span >= Duration::from_millis(1800),
        "12 messages took only {span:?} at 4 per second"
    );
}
