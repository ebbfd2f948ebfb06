//! Live reload: by SIGHUP and by file change, and a broken edit refused while the daemon
//! keeps sending on the last good configuration.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use harborlist::{domain::TokenKey, store::Store};

use crate::{
    both_backends,
    helpers::{Backend, Daemon, MailSink, TestDb, eventually, parse, seed},
};

both_backends!(
    sighup_reloads_and_a_broken_edit_is_refused,
    an_edited_file_is_picked_up_without_a_signal
);

fn entry(id: &str, in_secs: i64, subject: &str) -> String {
    let at = (Utc::now() + chrono::Duration::seconds(in_secs))
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    format!(
        "[[announcements]]\nid = \"{id}\"\nsend_at = \"{at}\"\nsubject = \"{subject}\"\nmarkdown = \"Hello from the {id} test.\"\n\n"
    )
}

fn subjects(sink: &MailSink) -> Vec<String> {
    sink.messages()
        .iter()
        .map(|m| parse(&m.bytes).subject().unwrap_or_default().to_owned())
        .collect()
}

async fn subscriber(db: &TestDb, key: &str) -> Store {
    let store = Store::connect(&db.url, 2).await.unwrap();
    seed(
        &store,
        &TokenKey::parse(key).unwrap(),
        "reader@example.org",
        "active",
    )
    .await;
    store
}

async fn sighup_reloads_and_a_broken_edit_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let mut daemon = Daemon::start(
        &db.url,
        &sink,
        "[schedule]\nwatch = \"0s\"\npoll = \"200ms\"\ntick = \"1s\"",
    )
    .await;
    let _store = subscriber(&db, &daemon.token_key).await;

    daemon.write_announcements(
        &(entry("one", 1, "Reload test one") + &entry("two", 6, "Reload test two")),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sink.messages().is_empty(),
        "without SIGHUP (and with watching off) the edit is not seen"
    );
    daemon.signal("HUP");
    eventually(20, "the first announcement", || async {
        subjects(&sink)
            .contains(&"Reload test one".to_owned())
            .then_some(())
    })
    .await;

    daemon.write_announcements("[[announcements]]\nid = \"broken\"\nsend_at = \"whenever\"\n");
    daemon.signal("HUP");
    eventually(10, "the refusal in the log", || async {
        daemon.log().contains("reload refused").then_some(())
    })
    .await;
    let log = daemon.log();
    assert!(
        log.contains("announcements.toml") && log.contains("send_at") && log.contains("whenever"),
        "{log}"
    );
    assert!(daemon.is_running());
    eventually(
        20,
        "the second announcement, from the last good config",
        || async {
            subjects(&sink)
                .contains(&"Reload test two".to_owned())
                .then_some(())
        },
    )
    .await;
    assert_eq!(sink.count(), 2);
    assert!(daemon.stop().await.success(), "a clean exit on SIGTERM");
}

async fn an_edited_file_is_picked_up_without_a_signal(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let daemon = Daemon::start(
        &db.url,
        &sink,
        "[schedule]\nwatch = \"300ms\"\npoll = \"200ms\"\ntick = \"1s\"",
    )
    .await;
    let _store = subscriber(&db, &daemon.token_key).await;
    daemon.write_announcements(&entry("watched", 1, "Watched one"));
    eventually(20, "the watched announcement", || async {
        subjects(&sink)
            .contains(&"Watched one".to_owned())
            .then_some(())
    })
    .await;

    daemon.write_announcements("[[announcements]]\nid = \"bad id!\"\nsend_at = \"2030-01-01T10:00\"\nsubject = \"x\"\nmarkdown = \"x\"\n");
    eventually(10, "the refusal in the log", || async {
        daemon.log().contains("reload refused").then_some(())
    })
    .await;
    assert!(
        daemon
            .log()
            .contains("(the 1st [[announcements]] entry, in ")
            && daemon.log().contains("announcements.toml): id: "),
        "{}",
        daemon.log()
    );

    daemon.write_announcements(
        &(entry("watched", 1, "Watched one") + &entry("fixed", 1, "Fixed two")),
    );
    eventually(20, "the announcement after the fix", || async {
        subjects(&sink)
            .contains(&"Fixed two".to_owned())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.count(), 2, "the first one was not sent again");
    assert!(daemon.stop().await.success());
}
