//! Announcements never go late by surprise: one more than `announcements.max_late` past its
//! `send_at` when the planner would send it is skipped with the reason, unless
//! `send_late = true`; `check` says so first, and `status` shows it. Driven by a manual
//! clock.

use chrono::{Datelike, Duration, Utc};

use crate::{
    announcements::announcement,
    both_backends,
    cli::harborlist,
    helpers::{Backend, assert_success},
    schedule::World,
};

both_backends!(
    a_stale_announcement_on_a_new_database_is_skipped_with_the_reason,
    a_stale_announcement_on_an_existing_database_is_skipped,
    send_late_sends_a_stale_announcement,
    one_within_max_late_is_sent,
    fixing_the_year_plans_a_skipped_announcement_again,
    status_shows_a_skipped_announcement_and_why,
    check_notes_an_announcement_already_sent,
    the_daemon_on_a_new_database_skips_a_stale_announcement_and_sends_one_marked_send_late,
);

/// The whole daemon, on a fresh database: a two-day-old announcement reaches nobody, the
/// same one marked `send_late` reaches everyone.
async fn the_daemon_on_a_new_database_skips_a_stale_announcement_and_sends_one_marked_send_late(
    backend: Backend,
) {
    let stale = Utc::now() - Duration::days(2);
    let app = crate::helpers::app(backend)
        .with(move |s| {
            s.announcements
                .push(announcement("stale", stale, "Stale news"));
            let mut late = announcement("late", stale, "Late on purpose");
            late.send_late = true;
            s.announcements.push(late);
        })
        .spawn()
        .await;
    let key = harborlist::domain::TokenKey::parse(
        app.settings
            .security
            .token_key
            .as_ref()
            .map(harborlist::domain::Secret::expose)
            .unwrap(),
    )
    .unwrap();
    crate::helpers::seed(&app.store, &key, "a@example.org", "active").await;
    app.sink.wait_for(1, 20).await;
    let skipped = crate::helpers::eventually(10, "the stale one skipped", || async {
        let m = app
            .store
            .mailing_by_key("announcement:stale")
            .await
            .ok()??;
        (m.state == "skipped").then_some(m)
    })
    .await;
    assert_eq!(skipped.state, "skipped");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let subjects: Vec<String> = app
        .sink
        .messages()
        .iter()
        .map(|m| {
            crate::helpers::parse(&m.bytes)
                .subject()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(subjects, vec!["Late on purpose".to_owned()]);
}

/// Staff meant 2027 and wrote 2026; the planner first sees it on 1 December 2026.
const TYPO: &str = "2026-05-01T14:00:00Z";
const NOW: &str = "2026-12-01T12:00:00Z";

async fn reason(w: &World, key: &str) -> Option<String> {
    sqlx::query_scalar("SELECT reason FROM mailings WHERE key = $1")
        .bind(key)
        .fetch_one(w.store.pool())
        .await
        .unwrap()
}

async fn a_stale_announcement_on_a_new_database_is_skipped_with_the_reason(backend: Backend) {
    let mut w = World::new(backend, NOW).await;
    w.reconfigure(|s| {
        s.announcements
            .push(announcement("may", TYPO.parse().unwrap(), "May topics"))
    });
    let report = w.turn_at(NOW).await;
    assert_eq!(report.skipped, 1, "{report:?}");
    assert_eq!(
        w.state("announcement:may").await.as_deref(),
        Some("skipped")
    );
    assert_eq!(
        reason(&w, "announcement:may").await.as_deref(),
        Some("send_at Fri May 1 2026 9:00 AM CDT was 213 days ago")
    );
    w.turn_at("2026-12-01T13:00:00Z").await;
    assert!(
        w.deliveries("announcement:may").await.is_empty(),
        "nobody is mailed"
    );
}

async fn a_stale_announcement_on_an_existing_database_is_skipped(backend: Backend) {
    let mut w = World::new(backend, "2026-11-01T00:00:00Z").await;
    w.turn_at("2026-11-01T00:00:00Z").await;
    w.reconfigure(|s| {
        s.announcements.push(announcement(
            "soon",
            "2026-11-20T15:00:00Z".parse().unwrap(),
            "Soon",
        ))
    });
    w.turn_at("2026-11-20T15:00:00Z").await;
    assert_eq!(
        w.deliveries("announcement:soon").await.len(),
        2,
        "sent on time"
    );
    w.reconfigure(|s| {
        s.announcements
            .push(announcement("may", TYPO.parse().unwrap(), "May topics"))
    });
    let report = w.turn_at(NOW).await;
    assert_eq!(report.skipped, 1, "{report:?}");
    assert_eq!(
        w.state("announcement:may").await.as_deref(),
        Some("skipped")
    );
    assert!(w.deliveries("announcement:may").await.is_empty());
    assert_eq!(
        w.state("announcement:soon").await.as_deref(),
        Some("fanned")
    );
}

async fn send_late_sends_a_stale_announcement(backend: Backend) {
    let mut w = World::new(backend, NOW).await;
    w.reconfigure(|s| {
        let mut a = announcement("may", TYPO.parse().unwrap(), "May topics");
        a.send_late = true;
        s.announcements.push(a);
    });
    let report = w.turn_at(NOW).await;
    assert_eq!((report.skipped, report.fanned_out), (0, 1), "{report:?}");
    assert_eq!(w.deliveries("announcement:may").await.len(), 2);
}

async fn one_within_max_late_is_sent(backend: Backend) {
    let mut w = World::new(backend, NOW).await;
    w.reconfigure(|s| {
        s.announcement_rules.max_late = "2h".parse().unwrap();
        s.announcements.push(announcement(
            "recent",
            "2026-12-01T10:30:00Z".parse().unwrap(),
            "Recent",
        ));
        s.announcements.push(announcement(
            "older",
            "2026-12-01T09:30:00Z".parse().unwrap(),
            "Older",
        ));
    });
    let report = w.turn_at(NOW).await;
    assert_eq!((report.skipped, report.fanned_out), (1, 1), "{report:?}");
    assert_eq!(
        w.deliveries("announcement:recent").await.len(),
        2,
        "90 minutes late, within 2h"
    );
    assert_eq!(
        reason(&w, "announcement:older").await.as_deref(),
        Some("send_at Tue Dec 1 2026 3:30 AM CST was 2 hours ago")
    );
}

async fn fixing_the_year_plans_a_skipped_announcement_again(backend: Backend) {
    let mut w = World::new(backend, NOW).await;
    w.reconfigure(|s| {
        s.announcements
            .push(announcement("may", TYPO.parse().unwrap(), "May topics"))
    });
    w.turn_at(NOW).await;
    assert_eq!(
        w.state("announcement:may").await.as_deref(),
        Some("skipped")
    );
    w.reconfigure(|s| {
        s.announcements[0].send_at =
            harborlist::config::SendAt::Instant("2027-05-01T14:00:00Z".parse().unwrap())
    });
    let report = w.turn_at("2026-12-01T12:01:00Z").await;
    assert_eq!(report.planned, 1, "{report:?}");
    assert_eq!(
        w.state("announcement:may").await.as_deref(),
        Some("planned")
    );
    assert_eq!(reason(&w, "announcement:may").await, None);
    w.turn_at("2027-05-01T14:00:00Z").await;
    assert_eq!(
        w.deliveries("announcement:may").await.len(),
        2,
        "sent in 2027"
    );
}

async fn status_shows_a_skipped_announcement_and_why(backend: Backend) {
    let mut w = World::new(backend, NOW).await;
    w.reconfigure(|s| {
        s.announcements
            .push(announcement("may", TYPO.parse().unwrap(), "May topics"))
    });
    w.turn_at(NOW).await;
    let out = harborlist()
        .arg("status")
        .env("HARBORLIST__DATABASE__URL", &w.settings.database.url)
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Skipped, not sent")
            && text.contains(
                "Announcement 'may': send_at Fri May 1 2026 9:00 AM CDT was 213 days ago"
            ),
        "{text}"
    );
    let out = harborlist()
        .args(["status", "--json"])
        .env("HARBORLIST__DATABASE__URL", &w.settings.database.url)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["skipped"][0]["key"], "announcement:may");
    assert_eq!(
        doc["skipped"][0]["reason"],
        "send_at Fri May 1 2026 9:00 AM CDT was 213 days ago"
    );
}

async fn check_notes_an_announcement_already_sent(backend: Backend) {
    let mut w = World::new(backend, "2027-01-01T00:00:00Z").await;
    let entry = "[[announcements]]\nid = \"jan\"\nsend_at = \"2027-01-06T15:00:00Z\"\nsubject = \"Jan\"\nmarkdown = \"Hi\"\n";
    w.reconfigure(|s| {
        s.announcements.push(announcement(
            "jan",
            "2027-01-06T15:00:00Z".parse().unwrap(),
            "Jan",
        ))
    });
    w.turn_at("2027-01-06T15:00:00Z").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    std::fs::write(&file, entry).unwrap();
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .arg("check")
        .env("HARBORLIST__DATABASE__URL", &w.settings.database.url)
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "ok   announcement jan (already sent on Wed Jan 6 2027, 9:00 AM CST; edits will not be sent again)"
        ),
        "{stdout}"
    );
}

/// A `send_at` that was meant for next year: 200 days ago, in the calendar's zone.
fn typo_now() -> (String, String) {
    let tz = chrono_tz::America::Chicago;
    let then = (Utc::now() - Duration::days(200)).with_timezone(&tz);
    let written = format!("{}-{}", then.year(), then.format("%m-%dT09:00"));
    let meant = format!("{}-{}", then.year() + 1, then.format("%m-%dT09:00"));
    (written, meant)
}

#[test]
fn check_names_a_stale_announcement_its_file_and_the_year_meant() {
    let (written, meant) = typo_now();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    let db = dir.path().join("none/harborlist.db");
    let entry = format!(
        "[database]\nurl = \"sqlite://{}\"\n[[announcements]]\nid = \"typo\"\nsend_at = \"{written}\"\nsubject = \"S\"\nmarkdown = \"Hi\"\n",
        db.display()
    );
    std::fs::write(&file, &entry).unwrap();
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FAIL announcement typo: in ")
            && stderr.contains(&file.display().to_string())
            && stderr.contains(
                "days ago, more than announcements.max_late (1 hour), so it will not be sent"
            )
            && stderr.contains(&format!("did you mean {meant}?")),
        "{stderr}"
    );
    assert!(
        !db.exists() && !db.parent().unwrap().exists(),
        "check creates no database"
    );

    std::fs::write(&file, format!("{entry}send_late = true\n")).unwrap();
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .arg("check")
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok   announcement typo (send_at ")
            && stdout.contains("send_late = true, so it goes out late"),
        "{stdout}"
    );
}
