//! The real binary as a separate process, for what only a process has: signals.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use harborlist::domain::TokenKey;

use super::{MailSink, eventually, free_port};

pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    pub address: String,
    pub token_key: String,
}

impl Daemon {
    /// Starts `harborlist --config local.toml serve` in a fresh directory holding a copy of
    /// config/default.toml, pointed at `db_url` and `sink`, with `extra` appended to the
    /// local config.
    pub async fn start(db_url: &str, sink: &MailSink, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::copy(root.join("config/default.toml"), dir.path().join("config/default.toml")).unwrap();
        let port = free_port();
        let token_key = TokenKey::generate_text();
        let local = format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [database]\nurl = \"{db_url}\"\n\
             [mail]\ntransport = \"smtp\"\nsmtp_url = \"{}\"\nretry_base = \"200ms\"\nsmtp_timeout = \"3s\"\n\
             [security]\ntoken_key = \"{token_key}\"\n\
             [templates]\ndir = \"{}\"\n\
             [log]\nformat = \"text\"\nlevel = \"info\"\n{extra}\n",
            sink.url(),
            root.join("templates").display()
        );
        std::fs::write(dir.path().join("local.toml"), local).unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_harborlist"));
        for (k, _) in std::env::vars() {
            if k.starts_with("HARBORLIST") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .current_dir(dir.path())
            .args(["--config", "local.toml", "serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn harborlist serve");
        let daemon = Self { child, dir, address: format!("http://127.0.0.1:{port}"), token_key };
        let health = format!("{}/healthz", daemon.address);
        eventually(30, "the daemon to answer /healthz", || async {
            let ok = reqwest::get(&health).await.ok()?.status().is_success();
            ok.then_some(())
        })
        .await;
        daemon
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn write_announcements(&self, toml: &str) {
        // Write then rename, as editors do, so the daemon never reads half a file.
        let tmp = self.config_dir().join(".announcements.toml.tmp");
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(tmp, self.config_dir().join("announcements.toml")).unwrap();
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -s {signal}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, and the exit status once it has stopped.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        panic!("the daemon did not stop within 30 s of SIGTERM:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
