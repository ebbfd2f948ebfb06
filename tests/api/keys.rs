//! The token key is pinned: a database keeps its key's fingerprint, and a `serve`, reload
//! or CLI command with another key refuses to run; a key file is created only on a fresh
//! install; `security.previous_token_keys` rotates the key with links in mail already sent
//! still working. And a reload applies what it can, warning about what is fixed at start.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use harborlist::{domain::TokenKey, store::Store};

use crate::{
    both_backends,
    helpers::{
        Backend, Daemon, DaemonSetup, MailSink, TestDb, app, eventually, free_port, link_in, parse,
        seed,
    },
};

both_backends!(
    serve_and_cli_commands_refuse_a_key_that_does_not_match,
    a_reload_with_another_key_is_refused_and_the_running_key_keeps_working,
    no_key_file_is_created_once_a_fingerprint_exists,
    rotation_keeps_old_links_working_and_new_mail_uses_the_new_key,
    a_reload_applies_what_it_can_and_warns_about_fixed_settings,
    a_confirmation_still_queued_at_a_rotation_goes_out_with_a_working_link,
);

const WORKERS: &str = "[schedule]\nwatch = \"0s\"\npoll = \"200ms\"\ntick = \"1s\"";

/// The same link on another daemon's port (links carry the address they were made for).
fn on(daemon: &Daemon, link: &str) -> String {
    let path = link
        .splitn(4, '/')
        .nth(3)
        .unwrap_or_else(|| panic!("no path in {link}"));
    format!("{}/{path}", daemon.address)
}

async fn post(url: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Subscribes `email` through the web form and returns the confirmation link it was sent.
async fn request(daemon: &Daemon, sink: &MailSink, email: &str) -> String {
    assert_eq!(daemon.subscribe(email, "").await, 200);
    let mail = eventually(20, "the confirmation mail", || async {
        sink.to(email).first().cloned()
    })
    .await;
    link_in(&mail.bytes, "/confirm/")
}

/// Confirms `link` and returns the unsubscribe link in the welcome that follows.
async fn confirm(daemon: &Daemon, sink: &MailSink, email: &str, link: &str) -> String {
    let before = sink.to(email).len();
    let (status, page) = post(&on(daemon, link)).await;
    assert_eq!(status, 200, "{page}");
    let welcome = eventually(20, "the welcome mail", || async {
        sink.to(email).get(before).cloned()
    })
    .await;
    link_in(&welcome.bytes, "/unsubscribe/")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_refused(out: &std::process::Output, what: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what} ran with another key:\n{err}");
    assert!(
        err.contains("security.token_key")
            && err.contains("security.token_key_file")
            && err.contains("mail already sent")
            && err.contains("This link isn't valid")
            && err.contains("security.previous_token_keys"),
        "{what}: the error names the keys, the harm and the fix:\n{err}"
    );
}

async fn serve_and_cli_commands_refuse_a_key_that_does_not_match(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let setup = DaemonSetup::new(&db.url, &sink.url(), WORKERS);
    let daemon = setup.launch().await;
    assert!(daemon.stop().await.success());
    let store = Store::connect(&db.url, 2).await.unwrap();
    let pinned = store.state("token_key_fingerprint").await.unwrap().unwrap();
    let key = TokenKey::parse(&setup.token_key).unwrap();
    assert_eq!(
        pinned.value,
        key.fingerprint(),
        "the first start pins its key"
    );
    assert!(!pinned.value.contains(&setup.token_key));

    let mut other = setup.clone();
    other.token_key = TokenKey::generate_text();
    assert_refused(&other.run(&["serve"]).await, "serve");
    for args in [
        &["status"][..],
        &["subscribers", "list"],
        &["subscribers", "export"],
        &["subscribers", "remove", "someone@example.org"],
        &["subscribers", "forget", "someone@example.org"],
    ] {
        assert_refused(&other.run(args).await, &args.join(" "));
    }
    let csv = setup.dir().join("people.csv");
    std::fs::write(&csv, "email\nnew@example.org\n").unwrap();
    assert_refused(
        &other
            .run(&["subscribers", "import", csv.to_str().unwrap()])
            .await,
        "subscribers import",
    );
    assert!(store.list_subscribers().await.unwrap().is_empty());

    let out = setup.run(&["status"]).await;
    assert!(
        out.status.success(),
        "the right key still works: {}",
        stderr(&out)
    );
}

async fn a_reload_with_another_key_is_refused_and_the_running_key_keeps_working(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let mut daemon = Daemon::start(&db.url, &sink, WORKERS).await;
    let confirm_link = request(&daemon, &sink, "early@example.org").await;

    let old = daemon.token_key.clone();
    daemon.edit_config(|text| text.replace(&old, &TokenKey::generate_text()));
    daemon.signal("HUP");
    eventually(10, "the refusal in the log", || async {
        daemon.log().contains("reload refused").then_some(())
    })
    .await;
    let log = daemon.log();
    assert!(
        log.contains("security.token_key") && log.contains("This link isn't valid"),
        "{log}"
    );
    assert!(!log.contains(&old), "the key never reaches the log");
    assert!(daemon.is_running());

    // The link from before the reload works, and so does the link in the mail after it.
    let unsubscribe = confirm(&daemon, &sink, "early@example.org", &confirm_link).await;
    let (status, page) = post(&unsubscribe).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("unsubscribed"), "{page}");
    assert!(daemon.stop().await.success());
}

async fn no_key_file_is_created_once_a_fingerprint_exists(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let setup = DaemonSetup::new(&db.url, &sink.url(), WORKERS)
        .security("token_key_file = \"data/harborlist.key\"");
    let key_file = setup.dir().join("data/harborlist.key");
    let daemon = setup.launch().await;
    assert!(key_file.exists(), "a fresh install creates its key file");
    assert!(daemon.stop().await.success());

    // `subscribers import` from another folder: its relative key file does not exist there.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(elsewhere.path().join("config")).unwrap();
    std::fs::copy(
        setup.config_dir().join("default.toml"),
        elsewhere.path().join("config/default.toml"),
    )
    .unwrap();
    let csv = elsewhere.path().join("people.csv");
    std::fs::write(&csv, "email\nnew@example.org\n").unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_harborlist"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HARBORLIST") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .current_dir(elsewhere.path())
        .args(["subscribers", "import", csv.to_str().unwrap()])
        .env("HARBORLIST__DATABASE__URL", &db.url)
        .output()
        .expect("run harborlist");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("security.token_key_file") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        !elsewhere.path().join("data").exists(),
        "no key file created"
    );

    // `serve` with the key file gone.
    std::fs::remove_file(&key_file).unwrap();
    let out = setup.run(&["serve"]).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("security.token_key_file") && err.contains("mail already sent"),
        "{err}"
    );
    assert!(!key_file.exists(), "no key file created");
    let store = Store::connect(&db.url, 2).await.unwrap();
    assert!(store.list_subscribers().await.unwrap().is_empty());
}

async fn rotation_keeps_old_links_working_and_new_mail_uses_the_new_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let setup = DaemonSetup::new(&db.url, &sink.url(), WORKERS);
    let daemon = setup.launch().await;
    // Under the old key: one subscriber with an unsubscribe link, one with a confirmation
    // link not yet clicked, one added as an import would.
    let confirm_a = request(&daemon, &sink, "old-link@example.org").await;
    let old_unsubscribe = confirm(&daemon, &sink, "old-link@example.org", &confirm_a).await;
    let pending_confirm = request(&daemon, &sink, "pending@example.org").await;
    let store = Store::connect(&db.url, 2).await.unwrap();
    let old_key = TokenKey::parse(&setup.token_key).unwrap();
    seed(&store, &old_key, "new-link@example.org", "active").await;
    assert!(daemon.stop().await.success());

    let new_key_text = TokenKey::generate_text();
    let mut rotated = setup.clone().security(&format!(
        "token_key = \"{new_key_text}\"\nprevious_token_keys = [{{ key = \"{}\" }}]",
        setup.token_key
    ));
    rotated.token_key = new_key_text.clone();
    let daemon = rotated.launch().await;
    let new_key = TokenKey::parse(&new_key_text).unwrap();
    assert_eq!(
        store
            .state("token_key_fingerprint")
            .await
            .unwrap()
            .unwrap()
            .value,
        new_key.fingerprint(),
        "re-pinned to the new key"
    );

    // New mail carries links under the new key.
    let at = (Utc::now() + chrono::Duration::seconds(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    daemon.write_announcements(&format!(
        "[[announcements]]\nid = \"after-rotation\"\nsend_at = \"{at}\"\nsubject = \"After rotation\"\nmarkdown = \"Hello.\"\n"
    ));
    daemon.signal("HUP");
    let news = |email: &'static str| {
        let sink = sink.clone();
        async move {
            eventually(20, "the announcement", || async {
                sink.to(email)
                    .into_iter()
                    .find(|m| parse(&m.bytes).subject() == Some("After rotation"))
            })
            .await
        }
    };
    let renewed = link_in(&news("old-link@example.org").await.bytes, "/unsubscribe/");
    assert_ne!(
        renewed.rsplit('/').next(),
        old_unsubscribe.rsplit('/').next(),
        "new mail uses the new key"
    );
    let new_link = link_in(&news("new-link@example.org").await.bytes, "/unsubscribe/");

    // The old link unsubscribes, the new mail's link works, the old confirmation confirms.
    let (status, page) = post(&on(&daemon, &old_unsubscribe)).await;
    assert_eq!(status, 200, "the old unsubscribe link: {page}");
    assert!(page.contains("old-link@example.org"), "{page}");
    let (status, page) = post(&new_link).await;
    assert_eq!(status, 200, "the new mail's link: {page}");
    assert!(page.contains("new-link@example.org"), "{page}");
    let welcome_link = confirm(&daemon, &sink, "pending@example.org", &pending_confirm).await;
    let (status, page) = post(&welcome_link).await;
    assert_eq!(status, 200, "the welcome's link, under the new key: {page}");
    assert!(daemon.stop().await.success());

    // Done: the new key alone now starts, and the old link still works.
    let mut done = setup
        .clone()
        .security(&format!("token_key = \"{new_key_text}\""));
    done.token_key = new_key_text;
    let daemon = done.launch().await;
    let (status, page) = post(&on(&daemon, &old_unsubscribe)).await;
    assert_eq!(status, 200, "{page}");
    // And the old key alone is now refused.
    assert_refused(&setup.run(&["status"]).await, "status with the old key");
    assert!(daemon.stop().await.success());
}

async fn a_reload_applies_what_it_can_and_warns_about_fixed_settings(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let daemon = Daemon::start(
        &db.url,
        &sink,
        &format!("{WORKERS}\n[list]\nname = \"Before Reload List\""),
    )
    .await;
    let front = |daemon: &Daemon| {
        let url = format!("{}/", daemon.address);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    assert!(front(&daemon).await.contains("Before Reload List"));
    daemon.edit_config(|text| {
        text.replace("tick = \"1s\"", "tick = \"7s\"")
            .replace("Before Reload List", "After Reload List")
    });
    daemon.signal("HUP");
    eventually(10, "the reload", || async {
        daemon
            .log()
            .contains("configuration reloaded")
            .then_some(())
    })
    .await;
    assert!(
        front(&daemon).await.contains("After Reload List"),
        "the name applies"
    );
    let log = daemon.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("schedule.tick"))
        .unwrap_or_else(|| panic!("a WARN naming schedule.tick:\n{log}"));
    assert!(warning.contains("restart"), "{warning}");
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("list.name"))
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(daemon.stop().await.success());
}

/// A confirmation that could not be sent before the rotation is sent after it, with a link
/// under the new key; the rotation registered that link.
async fn a_confirmation_still_queued_at_a_rotation_goes_out_with_a_working_link(backend: Backend) {
    let sink = MailSink::start();
    let app = app(backend)
        .sink(sink.clone())
        .smtp_port(free_port())
        .spawn()
        .await;
    assert_eq!(app.subscribe("queued@example.org", "").await.status(), 200);
    let old = app.token_key().to_owned();
    let new = TokenKey::generate_text();
    let app = app
        .restart_with(|s| {
            s.mail.smtp_url = Some(format!("smtp://127.0.0.1:{}", sink.port).into());
            s.security.token_key = Some(new.clone().into());
            s.security.previous_token_keys = vec![harborlist::config::PreviousTokenKey {
                key: Some(old.into()),
                file: None,
            }];
        })
        .await;
    let mail = eventually(20, "the confirmation, once the relay answers", || async {
        sink.to("queued@example.org").first().cloned()
    })
    .await;
    let link = link_in(&mail.bytes, "/confirm/");
    let response = app.post_empty(&link).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    eventually(20, "the subscriber active", || async {
        (app.status_of("queued@example.org").await.as_deref() == Some("active")).then_some(())
    })
    .await;
}
