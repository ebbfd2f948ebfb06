//! The binary itself: exit codes and output.

use std::process::Command;

use crate::{
    both_backends,
    helpers::{Backend, DaemonSetup, MailSink, TestDb, assert_success, parse, spawn_app},
};

pub(crate) fn harborlist() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harborlist"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    // Keep the developer's environment out of it.
    for (k, _) in std::env::vars() {
        if k.starts_with("HARBORLIST") {
            cmd.env_remove(k);
        }
    }
    cmd
}

both_backends!(
    subscribers_list_prints_json_with_email_and_status,
    status_shows_upcoming_and_recent_mailings_with_counts,
    serve_on_two_threads_sends_and_stops_cleanly
);

#[test]
fn threads_must_be_a_positive_number() {
    let out = harborlist()
        .args(["--threads", "0", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--threads"), "{stderr}");

    let out = harborlist()
        .arg("check")
        .env("HARBORLIST_THREADS", "2")
        .output()
        .unwrap();
    assert_success(&out);
}

/// Every other daemon test runs on the default single thread; this one on two.
async fn serve_on_two_threads_sends_and_stops_cleanly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let daemon = DaemonSetup::new(&db.url, &sink.url(), "")
        .env("HARBORLIST_THREADS", "2")
        .launch()
        .await;
    assert_eq!(
        daemon
            .subscribe("two.threads@example.org", "Two Threads")
            .await,
        200
    );
    let mail = sink.wait_for(1, 20).await;
    assert_eq!(mail.len(), 1);
    let message = parse(&mail[0].bytes);
    let text = message.body_text(0).unwrap_or_default().into_owned();
    assert!(text.contains("/confirm/"), "no confirmation link:\n{text}");
    // Logged to a file: no colour codes, and no per-turn dumps at INFO.
    let log = daemon.log();
    assert!(daemon.stop().await.success(), "a clean exit on SIGTERM");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI codes in a redirected log:\n{log}"
    );
    assert!(!log.contains("TurnReport"), "{log}");
}

#[test]
fn help_teaches() {
    let out = harborlist().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "serve",
        "check",
        "trainings",
        "preview",
        "subscribers",
        "HARBORLIST__MAIL__SMTP_URL",
        "Examples:",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}

#[test]
fn serve_help_names_the_signals_port_logs_and_threads_and_only_it_has_the_threads_note() {
    let help = |args: &[&str]| {
        let out = harborlist().args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serve = help(&["serve", "--help"]);
    for word in [
        "SIGHUP",
        "SIGTERM",
        "server.bind",
        "8080",
        "journalctl",
        "--threads N",
    ] {
        assert!(serve.contains(word), "serve --help lacks {word}:\n{serve}");
    }
    for args in [&["status", "--help"][..], &["check", "--help"], &["--help"]] {
        let text = help(args);
        assert!(
            !text.contains("less CPU per message"),
            "{args:?} repeats the --threads note:\n{text}"
        );
    }
}

#[test]
fn preview_and_send_test_help_list_every_email_template() {
    let names: Vec<String> = std::fs::read_dir("templates/email")
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".subject.hbs")?.to_owned())
        })
        .collect();
    assert!(names.len() >= 12, "{names:?}");
    for command in ["preview", "send-test"] {
        let out = harborlist().args([command, "--help"]).output().unwrap();
        // clap wraps long help; compare without line breaks.
        let text = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for name in &names {
            assert!(
                text.contains(name.as_str()),
                "{command} --help lacks {name}:\n{text}"
            );
        }
    }
}

#[test]
fn check_passes_on_the_defaults_and_fails_with_the_key_named() {
    let out = harborlist().arg("check").output().unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok   email template reminder") && stdout.contains("all good"),
        "{stdout}"
    );

    let out = harborlist()
        .arg("check")
        .env("HARBORLIST__SUBSCRIPTIONS__CONFIRM_TTL", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("subscriptions.confirm_ttl") && stderr.contains("not a duration"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("email")).unwrap();
    for f in std::fs::read_dir("templates/email").unwrap() {
        let f = f.unwrap();
        if f.path().is_file() {
            std::fs::copy(f.path(), dir.path().join("email").join(f.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(dir.path().join("email/partials")).unwrap();
    for f in std::fs::read_dir("templates/email/partials").unwrap() {
        let f = f.unwrap();
        std::fs::copy(
            f.path(),
            dir.path().join("email/partials").join(f.file_name()),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("email/welcome.txt.hbs"),
        "Hi {{subscriber.nmae}}\n",
    )
    .unwrap();
    let out = harborlist()
        .arg("check")
        .env("HARBORLIST__TEMPLATES__DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a misspelt variable fails check"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("welcome") && stderr.contains("nmae"),
        "{stderr}"
    );
}

/// The bytes `harborlist preview --template <template>` writes.
fn preview(template: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join(format!("{template}.eml"));
    let out = harborlist()
        .args([
            "preview",
            "--template",
            template,
            "--to",
            "staff@example.org",
            "--out",
        ])
        .arg(&out_file)
        .env(
            "HARBORLIST__SECURITY__TOKEN_KEY",
            harborlist::domain::TokenKey::generate_text(),
        )
        .output()
        .unwrap();
    assert_success(&out);
    std::fs::read(&out_file).unwrap()
}

#[test]
fn preview_writes_the_exact_message() {
    let bytes = preview("reminder");
    crate::format::assert_wire_format(&bytes);
    let msg = parse(&bytes);
    assert!(msg.subject().unwrap().starts_with("Reminder: "));
    assert!(
        crate::helpers::calendar_part(&bytes)
            .unwrap()
            .contains("BEGIN:VEVENT")
    );

    let out = harborlist()
        .args([
            "preview",
            "--template",
            "nope",
            "--to",
            "a@example.org",
            "--out",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no template \"nope\""));
    let out = harborlist()
        .args([
            "preview",
            "--template",
            "welcome",
            "--to",
            "not-an-address",
            "--out",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to"));
}

#[test]
fn preview_of_an_update_shows_the_old_time_beside_the_new() {
    let bytes = preview("update");
    let text = parse(&bytes).body_text(0).unwrap().into_owned();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|s| s.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"))
    };
    let now = line("When:");
    let was = line("It was:");
    assert!(
        !now.is_empty() && !was.starts_with(&now),
        "the sample update moved nothing: now {now:?}, was {was:?}"
    );
}

async fn subscribers_list_prints_json_with_email_and_status(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("listed@example.org").await;
    app.subscribe("waiting@example.org", "W").await;
    let out = harborlist()
        .args(["subscribers", "list", "--json"])
        .env("HARBORLIST__DATABASE__URL", &app.db.url)
        .env("HARBORLIST__SECURITY__TOKEN_KEY", app.token_key())
        .output()
        .unwrap();
    assert_success(&out);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON array");
    let find = |e: &str| {
        rows.iter()
            .find(|r| r["email"] == e)
            .map(|r| r["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(find("listed@example.org").as_deref(), Some("active"));
    assert_eq!(find("waiting@example.org").as_deref(), Some("pending"));
    let out = harborlist()
        .args(["subscribers", "list"])
        .env("HARBORLIST__DATABASE__URL", &app.db.url)
        .env("HARBORLIST__SECURITY__TOKEN_KEY", app.token_key())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("listed@example.org") && table.contains("2 subscriber(s)"),
        "{table}"
    );
}

#[test]
fn check_warns_about_placeholders_and_refuses_a_cancelled_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    let check = |toml: &str| {
        std::fs::write(&file, toml).unwrap();
        harborlist()
            .arg("--config")
            .arg(&file)
            .arg("check")
            .output()
            .unwrap()
    };
    let entry =
        "[[announcements]]\nid = \"may\"\nsend_at = \"2027-05-01T09:00\"\nsubject = \"May\"\n";
    let out = check(&format!(
        "{entry}markdown = \"Hello {{{{name}}}}, see you\"\n"
    ));
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "warn announcement may: its markdown has \"{{name}}\", which is sent exactly as written"
        ) && stdout.contains("sends Sat May 1 2027, 9:00 AM CDT"),
        "{stdout}"
    );

    let cancelled = "[[trainings.change]]\ndate = \"2027-05-19\"\ncancelled = true\n";
    let out = check(&format!(
        "{cancelled}{entry}markdown = \"Hi\"\ntraining = \"2027-05-19\"\n"
    ));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "FAIL announcement may: attaches the training 2027-05-19 (Wednesday, May 19, 2027"
        ) && stderr.contains("which is cancelled")
            && stderr.contains("Remove `training = \"2027-05-19\"`"),
        "{stderr}"
    );
}

#[test]
fn check_names_a_bad_announcement() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    std::fs::write(
        &file,
        "[[announcements]]\nid = \"may\"\nsend_at = \"2027-05-01T09:00\"\nsubject = \"May\"\nmarkdown = \"Hi\"\ntraining = \"2027-05-20\"\n",
    )
    .unwrap();
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "announcement \"may\" (the 1st [[announcements]] entry, in {}): training: ",
            file.display()
        )) && stderr.contains("2027-05-20"),
        "{stderr}"
    );

    std::fs::write(
        &file,
        "[[announcements]]\nid = \"may\"\nsend_at = \"2027-05-01T09:00\"\nsubject = \"May\"\nmarkdown = \"Hi **all**\"\ntraining = \"2027-05-19\"\n",
    )
    .unwrap();
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .arg("check")
        .output()
        .unwrap();
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("ok   announcement may (sends Sat May 1 2027, 9:00 AM CDT)")
    );

    let eml = dir.path().join("may.eml");
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .args([
            "preview",
            "--announcement",
            "may",
            "--to",
            "staff@example.org",
            "--out",
        ])
        .arg(&eml)
        .env(
            "HARBORLIST__SECURITY__TOKEN_KEY",
            harborlist::domain::TokenKey::generate_text(),
        )
        .output()
        .unwrap();
    assert_success(&out);
    let bytes = std::fs::read(&eml).unwrap();
    assert_eq!(parse(&bytes).subject(), Some("May"));
    assert!(crate::helpers::html_of(&bytes).contains("<strong>all</strong>"));
    assert!(crate::helpers::calendar_part(&bytes).is_some());
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .args([
            "preview",
            "--announcement",
            "june",
            "--to",
            "a@example.org",
            "--out",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no announcement \"june\""));
}

#[test]
fn send_test_sends_one_real_message_outside_the_ledger() {
    let sink = crate::helpers::MailSink::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    let db = dir.path().join("untouched.db");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[mail]\ntransport = \"smtp\"\nsmtp_url = \"{}\"\n\
             [[announcements]]\nid = \"june\"\nsend_at = \"2027-06-01T09:00\"\nsubject = \"June news\"\nmarkdown = \"Hi\"\n",
            db.display(),
            sink.url()
        ),
    )
    .unwrap();
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .args([
            "send-test",
            "--announcement",
            "june",
            "--to",
            "staff@example.org",
        ])
        .env(
            "HARBORLIST__SECURITY__TOKEN_KEY",
            harborlist::domain::TokenKey::generate_text(),
        )
        .output()
        .unwrap();
    assert_success(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sent a test message to staff@example.org")
    );
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].to, vec!["staff@example.org".to_owned()]);
    assert_eq!(parse(&msgs[0].bytes).subject(), Some("June news"));
    assert!(!db.exists(), "send-test writes nothing to the database");

    let dead = crate::helpers::MailSink::reserve_port();
    let out = harborlist()
        .arg("--config")
        .arg(&file)
        .args([
            "send-test",
            "--template",
            "welcome",
            "--to",
            "staff@example.org",
        ])
        .env(
            "HARBORLIST__MAIL__SMTP_URL",
            format!("smtp://127.0.0.1:{dead}"),
        )
        .env(
            "HARBORLIST__SECURITY__TOKEN_KEY",
            harborlist::domain::TokenKey::generate_text(),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a dead relay is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sending to staff@example.org"));
}

async fn status_shows_upcoming_and_recent_mailings_with_counts(backend: Backend) {
    let send_at = chrono::Utc::now() + chrono::Duration::seconds(1);
    let app = crate::helpers::app(backend)
        .with(move |s| {
            s.announcements.push(crate::announcements::announcement(
                "status-test",
                send_at,
                "Status test",
            ))
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
    crate::helpers::seed(&app.store, &key, "b@example.org", "active").await;
    app.sink.wait_for(2, 20).await;
    crate::helpers::eventually(10, "both recorded as sent", || async {
        let recent = app.store.recent_mailings(5).await.ok()?;
        recent
            .iter()
            .any(|m| m.key == "announcement:status-test" && m.sent == 2)
            .then_some(())
    })
    .await;
    let out = harborlist()
        .args(["status", "--json"])
        .env("HARBORLIST__DATABASE__URL", &app.db.url)
        .env("HARBORLIST__SECURITY__TOKEN_KEY", app.token_key())
        .output()
        .unwrap();
    assert_success(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let recent = doc["recent"].as_array().unwrap();
    let m = recent
        .iter()
        .find(|m| m["key"] == "announcement:status-test")
        .expect("the announcement is listed");
    assert_eq!(
        (
            m["sent"].as_i64(),
            m["failed"].as_i64(),
            m["pending"].as_i64()
        ),
        (Some(2), Some(0), Some(0))
    );
    // Beside the machine's fields, staff's words.
    assert_eq!(
        (&m["kind"], &m["state"], &m["title"], &m["state_words"]),
        (
            &serde_json::Value::from("announcement"),
            &serde_json::Value::from("fanned"),
            &serde_json::Value::from("Announcement 'status-test'"),
            &serde_json::Value::from("sent")
        )
    );
    assert_eq!(doc["subscribers"]["active"], 2);
    let upcoming = doc["upcoming"].as_array().unwrap();
    assert!(
        upcoming.iter().any(|m| m["key"]
            .as_str()
            .unwrap()
            .starts_with("reminder:training-20270120")),
        "{upcoming:?}"
    );
    // Each planned mailing's audience now: the list's invitations reach the two active
    // subscribers; the shipped 2-day reminders are for those registered, nobody here.
    for m in upcoming {
        let key = m["key"].as_str().unwrap();
        let expected = if key.ends_with(":reminder") { 0 } else { 2 };
        assert_eq!(m["audience"], expected, "{key}");
    }
    assert_eq!(doc["trainings"].as_array().unwrap().len(), 3);

    let out = harborlist()
        .arg("status")
        .env("HARBORLIST__DATABASE__URL", &app.db.url)
        .env("HARBORLIST__SECURITY__TOKEN_KEY", app.token_key())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Next trainings")
            && text
                .lines()
                .any(|l| l.contains("Announcement 'status-test'") && l.contains(" sent "))
            && text.contains("2 active"),
        "{text}"
    );
    assert!(!text.contains("announcement:status-test"), "{text}");
}

/// A one-session relay on a thread, for `check --relay`: it offers AUTH PLAIN and answers
/// AUTH with `auth`. The thread returns the command lines it read.
fn one_session_relay(auth: &'static str) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut write = socket.try_clone().unwrap();
        let mut lines = BufReader::new(socket);
        write.write_all(b"220 relay ready\r\n").unwrap();
        let mut seen = Vec::new();
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            let command = line.trim_end().to_owned();
            line.clear();
            let reply = match command.get(..4).unwrap_or("") {
                "EHLO" => "250-relay\r\n250-AUTH PLAIN\r\n250 PIPELINING\r\n",
                "AUTH" => auth,
                "QUIT" => "221 bye\r\n",
                _ => "502 what\r\n",
            };
            let quit = command == "QUIT";
            seen.push(command);
            if write.write_all(reply.as_bytes()).is_err() || quit {
                break;
            }
        }
        seen
    });
    (port, relay)
}

fn check_relay(port: u16) -> std::process::Output {
    harborlist()
        .args(["check", "--relay"])
        .env("HARBORLIST__MAIL__TRANSPORT", "smtp")
        .env(
            "HARBORLIST__MAIL__SMTP_URL",
            format!("smtp://staff:s3cret-pw@127.0.0.1:{port}"),
        )
        .env("HARBORLIST__MAIL__SMTP_TIMEOUT", "5s")
        .output()
        .unwrap()
}

#[test]
fn check_relay_logs_in_and_quits() {
    let (port, relay) = one_session_relay("235 2.7.0 accepted\r\n");
    let out = check_relay(port);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("ok   relay 127.0.0.1:{port}")) && stdout.contains("AUTH"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret-pw"), "{stdout}");
    let seen = relay.join().unwrap();
    assert!(seen.iter().any(|c| c.starts_with("AUTH PLAIN")), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("QUIT"), "{seen:?}");
    assert!(
        !seen.iter().any(|c| c.starts_with("MAIL")),
        "nothing is sent: {seen:?}"
    );
}

#[test]
fn check_relay_names_the_failing_stage_and_the_reply() {
    let (port, relay) = one_session_relay("535 5.7.8 Authentication credentials invalid\r\n");
    let out = check_relay(port);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at AUTH: 535 5.7.8 Authentication credentials invalid"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        !all.contains("s3cret-pw"),
        "the password is never printed: {all}"
    );
    relay.join().unwrap();
}

#[test]
fn check_relay_with_the_file_transport_has_nothing_to_check() {
    let out = harborlist().args(["check", "--relay"]).output().unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no relay to check"), "{stdout}");
}

#[test]
fn check_help_says_what_relay_does() {
    let out = harborlist().args(["check", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--relay", "AUTH", "QUIT", "password"] {
        assert!(
            text.contains(word),
            "{word} missing from check --help:\n{text}"
        );
    }
}
