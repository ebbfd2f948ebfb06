//! PostgreSQL restarted in the middle of a mailing: the daemon recovers by itself, without a
//! restart of its own, and loses nothing.
//!
//! This is its own test binary because it restarts the shared PostgreSQL server; cargo runs
//! test binaries one after another, so no other test sees the outage.

#[path = "api/helpers/mod.rs"]
mod helpers;

use std::{collections::HashMap, process::Command, time::Duration};

use chrono::Utc;
use harborlist::{
    config::{AnnouncementSettings, SendAt},
    domain::TokenKey,
};
use helpers::{Backend, app, eventually, parse, seed};

fn pg_ctl(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a PostgreSQL cluster under /etc/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL version");
    let status = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_mid_mailing_loses_nothing() {
    const N: usize = 300;
    // Far enough ahead that every subscriber is seeded first (the audience is fixed at the
    // due time).
    let send_at = Utc::now() + chrono::Duration::seconds(10);
    let app = app(Backend::Postgres)
        .with(move |s| {
            // Slow enough that the restart lands in the middle of the mailing.
            s.mail.max_per_second = 40.0;
            s.announcements.push(AnnouncementSettings {
                id: "pg-restart".into(),
                send_at: SendAt::Instant(send_at),
                subject: "Restart test".into(),
                markdown: Some("Hello.".into()),
                template: None,
                vars: Default::default(),
                training: None,
                send_late: false,
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
    for i in 0..N {
        seed(&app.store, &key, &format!("r{i}@example.org"), "active").await;
    }
    assert!(
        Utc::now() < send_at,
        "seeding took too long for this test's timing"
    );
    eventually(30, "the mailing to be under way", || async {
        (app.sink.count() >= 40).then_some(())
    })
    .await;
    pg_ctl("stop");
    let during = app.sink.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg_ctl("start");
    eprintln!("PostgreSQL was down for 3 s with {during}/{N} messages delivered");

    eventually(120, "every subscriber's message", || async {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for m in app.sink.messages() {
            for to in m.to {
                *seen.entry(to).or_default() += 1;
            }
        }
        (seen.len() >= N).then_some(())
    })
    .await;
    let msgs = app.sink.messages();
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for m in &msgs {
        per.entry(m.to[0].clone())
            .or_default()
            .push(parse(&m.bytes).message_id().unwrap_or_default().to_owned());
    }
    let duplicates: usize = per.values().map(|ids| ids.len() - 1).sum();
    eprintln!(
        "delivered {} messages to {} subscribers, {duplicates} duplicates",
        msgs.len(),
        per.len()
    );
    assert_eq!(per.len(), N, "nobody lost");
    assert!(
        duplicates <= app.settings.mail.pool_size as usize,
        "{duplicates} duplicates"
    );
    assert!(
        per.values().all(|ids| ids.iter().all(|id| id == &ids[0])),
        "a repeat carries the same Message-ID"
    );
    let unsent: i64 = eventually(30, "every delivery recorded", || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE state <> 'sent'")
            .fetch_one(app.store.pool())
            .await
            .ok()?;
        (n == 0).then_some(n)
    })
    .await;
    assert_eq!(unsent, 0);
    // Still serving after the outage, without having been restarted.
    assert_eq!(app.get(&app.url("/healthz")).await.status(), 200);
}
