//! The real binary as separate processes, for what only a process has: signals, kill -9,
//! and several instances sharing one database.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use harborlist::domain::TokenKey;

use super::{MailSink, eventually, free_port};

/// A directory with `config/default.toml` and what every instance shares: database, relay,
/// token key and extra settings. Each [`DaemonSetup::launch`] starts one more process.
#[derive(Clone)]
pub struct DaemonSetup {
    dir: Arc<tempfile::TempDir>,
    pub token_key: String,
    db_url: String,
    smtp_url: String,
    extra: String,
    env: Vec<(String, String)>,
    launched: Arc<AtomicUsize>,
    /// The `[security]` section's body; by default `token_key = "<token_key>"`.
    security: Option<String>,
    /// The umask every process starts with, if not the test's own.
    umask: Option<u32>,
}

impl DaemonSetup {
    pub fn new(db_url: &str, smtp_url: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::copy(
            root.join("config/default.toml"),
            dir.path().join("config/default.toml"),
        )
        .unwrap();
        Self {
            dir: Arc::new(dir),
            token_key: TokenKey::generate_text(),
            db_url: db_url.to_owned(),
            smtp_url: smtp_url.to_owned(),
            extra: extra.to_owned(),
            env: Vec::new(),
            launched: Arc::new(AtomicUsize::new(0)),
            security: None,
            umask: None,
        }
    }

    /// The `[security]` section's body for every daemon launched from now on, in place of
    /// `token_key = "<token_key>"` (say, a key file, or a rotation).
    pub fn security(mut self, body: &str) -> Self {
        self.security = Some(body.to_owned());
        self
    }

    /// Every process launched from now on starts with this umask (through `sh`, which
    /// sets it and then becomes the binary).
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask);
        self
    }

    /// The setup's own directory (the daemons' working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the next instance's config on a fresh port; returns its name and the port.
    fn write_local(&self) -> (usize, String, u16, u16) {
        let n = self.launched.fetch_add(1, Ordering::SeqCst);
        let port = free_port();
        let metrics_port = free_port();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let security = self
            .security
            .clone()
            .unwrap_or_else(|| format!("token_key = \"{}\"", self.token_key));
        let local = format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nmetrics_bind = \"127.0.0.1:{metrics_port}\"\n\
             [database]\nurl = \"{}\"\n\
             [mail]\ntransport = \"smtp\"\nsmtp_url = \"{}\"\nretry_base = \"200ms\"\nretry_max = \"1s\"\nsmtp_timeout = \"3s\"\n\
             [security]\n{security}\n\
             [templates]\ndir = \"{}\"\n{}\n",
            self.db_url,
            self.smtp_url,
            root.join("templates").display(),
            self.extra
        );
        let config = format!("local-{n}.toml");
        std::fs::write(self.dir.path().join(&config), local).unwrap();
        (n, config, port, metrics_port)
    }

    /// The binary with this setup's environment, run in its directory.
    fn command(&self) -> Command {
        let bin = env!("CARGO_BIN_EXE_harborlist");
        let mut cmd = match self.umask {
            None => Command::new(bin),
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(bin);
                sh
            }
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("HARBORLIST") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Runs one command (`status`, `subscribers …`, or a `serve` expected to stop by
    /// itself) with the next instance's config, and returns its output. A command still
    /// running after 30 s is killed and the test fails.
    pub async fn run(&self, args: &[&str]) -> std::process::Output {
        let (_, config, _, _) = self.write_local();
        let mut child = self
            .command()
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn harborlist");
        for _ in 0..300 {
            if let Ok(Some(_)) = child.try_wait() {
                return child.wait_with_output().expect("output");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        panic!("harborlist {args:?} still running after 30 s");
    }

    /// An environment variable for every daemon this setup launches.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
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

    /// Starts one more `harborlist serve` on a fresh port and waits for `/healthz`.
    pub async fn launch(&self) -> Daemon {
        let (n, config, port, metrics_port) = self.write_local();
        let log_path = self.dir.path().join(format!("daemon-{n}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = self
            .command()
            .args(["--config", &config, "serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn harborlist serve");
        let daemon = Daemon {
            child,
            address: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            token_key: self.token_key.clone(),
            log_path,
            config_path: self.dir.path().join(&config),
            setup: self.clone(),
        };
        let health = format!("{}/healthz", daemon.address);
        eventually(30, "the daemon to answer /healthz", || async {
            let ok = reqwest::get(&health).await.ok()?.status().is_success();
            ok.then_some(())
        })
        .await;
        daemon
    }
}

pub struct Daemon {
    child: Child,
    pub address: String,
    /// The daemon's private `/metrics` URL (`server.metrics_bind`).
    pub metrics: String,
    pub token_key: String,
    log_path: PathBuf,
    config_path: PathBuf,
    setup: DaemonSetup,
}

impl Daemon {
    /// Posts the subscribe form, as a browser would, and answers the HTTP status.
    pub async fn subscribe(&self, email: &str, name: &str) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(format!("{}/subscribe", self.address))
            .form(&[("email", email), ("name", name)])
            .send()
            .await
            .expect("the daemon answers HTTP")
            .status()
    }

    /// One process on a fresh setup.
    pub async fn start(db_url: &str, sink: &MailSink, extra: &str) -> Self {
        DaemonSetup::new(db_url, &sink.url(), extra).launch().await
    }

    pub fn setup(&self) -> &DaemonSetup {
        &self.setup
    }

    pub fn config_dir(&self) -> PathBuf {
        self.setup.config_dir()
    }

    pub fn write_announcements(&self, toml: &str) {
        self.setup.write_announcements(toml);
    }

    /// Edits this instance's own config file (`--config`), for a reload to pick up.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, edit(text)).unwrap();
        std::fs::rename(tmp, &self.config_path).unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s {signal}");
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
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
        panic!(
            "the daemon did not stop within 30 s of SIGTERM:\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
