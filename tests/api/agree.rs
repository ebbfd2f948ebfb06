//! `check`, `serve` and a reload agree: what one refuses, the others refuse, naming the
//! file or key. Templates are rendered with data of the shape the real path builds.

use std::path::{Path, PathBuf};

use crate::{
    cli::harborlist,
    helpers::{Backend, DaemonSetup, MailSink, TestDb, eventually},
    limits::serve_until_exit,
};

/// A copy of the committed templates, to break.
fn templates() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        dir.path(),
    );
    dir
}

/// A way of breaking the templates: what, how, and the words the refusal must say.
type Breakage = (&'static str, Box<dyn Fn(&Path)>, Vec<&'static str>);

fn breakages() -> Vec<Breakage> {
    vec![
        (
            "a removed web/page.html.hbs",
            Box::new(|d: &Path| std::fs::remove_file(d.join("web/page.html.hbs")).unwrap()),
            vec!["web page page", "page.html.hbs is missing"],
        ),
        (
            "a page using a variable only another page gets",
            Box::new(|d: &Path| append(&d.join("web/page.html.hbs"), "{{email}}")),
            vec!["web page page", "email"],
        ),
        (
            "a reminder using a variable only updates get",
            Box::new(|d: &Path| append(&d.join("email/reminder.txt.hbs"), "{{previous.when}}")),
            vec!["email template reminder", "previous"],
        ),
        (
            "an update using a variable only reminders get",
            Box::new(|d: &Path| append(&d.join("email/update.txt.hbs"), "{{reminder.before}}")),
            vec!["email template update", "reminder"],
        ),
        (
            "a broken partial",
            Box::new(|d: &Path| append(&d.join("web/partials/layout.html.hbs"), "{{#if}")),
            vec!["layout.html.hbs"],
        ),
    ]
}

fn append(file: &Path, text: &str) {
    let mut body = std::fs::read_to_string(file).unwrap();
    body.push_str(text);
    std::fs::write(file, body).unwrap();
}

#[test]
fn check_and_serve_refuse_the_same_broken_templates() {
    for (what, breakage, words) in breakages() {
        let dir = templates();
        breakage(dir.path());
        let out = harborlist()
            .arg("check")
            .env("HARBORLIST__TEMPLATES__DIR", dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: check passed:\n{stderr}"
        );
        for word in &words {
            assert!(
                stderr.contains(word),
                "{what}: check does not say {word:?}:\n{stderr}"
            );
        }

        let (code, log) = serve_in(dir.path());
        assert!(code != Some(0), "{what}: serve exited 0");
        for word in &words {
            assert!(
                log.contains(word),
                "{what}: serve does not say {word:?}:\n{log}"
            );
        }
    }
}

/// `serve` in its own directory, with templates from `templates`.
fn serve_in(templates: &Path) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::copy(
        "config/default.toml",
        dir.path().join("config/default.toml"),
    )
    .unwrap();
    let file: PathBuf = dir.path().join("local.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nbind = \"127.0.0.1:0\"\n[templates]\ndir = \"{}\"\n",
            templates.display()
        ),
    )
    .unwrap();
    serve_until_exit(dir.path(), &file)
}

#[test]
fn the_committed_templates_pass_check() {
    let out = harborlist().arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   web page page",
        "ok   web page subscribe",
        "ok   web page trainings",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_a_removed_page_template() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sink = MailSink::start();
    let dir = templates();
    let daemon = DaemonSetup::new(&db.url, &sink.url(), "[schedule]\nwatch = \"300ms\"")
        .env(
            "HARBORLIST__TEMPLATES__DIR",
            &dir.path().display().to_string(),
        )
        .launch()
        .await;
    std::fs::remove_file(dir.path().join("web/page.html.hbs")).unwrap();
    eventually(20, "the reload to be refused", || async {
        let log = daemon.log();
        (log.contains("reload refused") && log.contains("page.html.hbs is missing")).then_some(())
    })
    .await;
    let page = reqwest::get(format!("{}/unsubscribe/nonsense", daemon.address))
        .await
        .unwrap();
    assert!(
        page.status() != 500,
        "the last good templates still render pages"
    );
}
