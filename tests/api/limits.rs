//! Out-of-range settings are refused alike by `check`, `serve` and a reload, with the key
//! and the range named (the table of cases is `config_errors::OUT_OF_RANGE`).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    cli::harborlist,
    config_errors::OUT_OF_RANGE,
    helpers::{Backend, DaemonSetup, MailSink, TestDb, eventually},
};

#[test]
fn check_refuses_each_out_of_range_value_with_key_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    for (toml, key, problem) in OUT_OF_RANGE {
        std::fs::write(&file, toml).unwrap();
        let out = harborlist()
            .arg("--config")
            .arg(&file)
            .arg("check")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{toml:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{key}: ")) && stderr.contains(problem),
            "{toml:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{toml:?}: {stderr}");
    }
}

/// `serve` in a directory of its own, so that a value it wrongly accepted could not touch
/// the repository's `data/`.
#[test]
fn serve_refuses_each_out_of_range_value_with_key_and_range() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::copy(
        "config/default.toml",
        dir.path().join("config/default.toml"),
    )
    .unwrap();
    let file = dir.path().join("local.toml");
    for (toml, key, problem) in OUT_OF_RANGE {
        std::fs::write(
            &file,
            format!(
                "{toml}\n[server]\nbind = \"127.0.0.1:0\"\n[templates]\ndir = \"{}\"\n",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("templates")
                    .display()
            ),
        )
        .unwrap();
        let (code, stderr) = serve_until_exit(dir.path(), &file);
        assert!(code != Some(0), "{toml:?}: serve exited 0");
        assert!(
            stderr.contains(&format!("{key}: ")) && stderr.contains(problem),
            "{toml:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{toml:?}: {stderr}");
    }
}

/// Runs `serve` and waits (at most 20 s) for it to give up; a serve still running then is
/// killed and the test fails.
pub(crate) fn serve_until_exit(
    cwd: &std::path::Path,
    config: &std::path::Path,
) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harborlist"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HARBORLIST") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let log = cwd.join("serve.log");
    let mut child = cmd
        .current_dir(cwd)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve accepted {}:\n{}",
                config.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_an_out_of_range_value_and_keeps_running() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sink = MailSink::start();
    let daemon = DaemonSetup::new(&db.url, &sink.url(), "[schedule]\nwatch = \"300ms\"")
        .launch()
        .await;
    // announcements.toml is one more layer of the configuration, watched like the others.
    daemon.write_announcements("[schedule]\ntick = \"0s\"\n");
    eventually(20, "the reload to be refused", || async {
        let log = daemon.log();
        (log.contains("reload refused")
            && log.contains("schedule.tick")
            && log.contains("is out of range; use 1s to 1h"))
        .then_some(())
    })
    .await;
    let health = reqwest::get(format!("{}/healthz", daemon.address))
        .await
        .unwrap();
    assert!(health.status().is_success(), "still serving");
}
