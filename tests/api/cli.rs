//! The binary itself: exit codes and output.

use std::process::Command;

use crate::{
    both_backends,
    helpers::{Backend, parse, spawn_app},
};

fn harborlist() -> Command {
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

both_backends!(subscribers_list_prints_json_with_email_and_status);

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
fn check_passes_on_the_defaults_and_fails_with_the_key_named() {
    let out = harborlist().arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

#[test]
fn preview_writes_the_exact_message() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("reminder.eml");
    let out = harborlist()
        .args([
            "preview",
            "--template",
            "reminder",
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&out_file).unwrap();
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

async fn subscribers_list_prints_json_with_email_and_status(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("listed@example.org").await;
    app.subscribe("waiting@example.org", "W").await;
    let out = harborlist()
        .args(["subscribers", "list", "--json"])
        .env("HARBORLIST__DATABASE__URL", &app.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("listed@example.org") && table.contains("2 subscriber(s)"),
        "{table}"
    );
}
