//! Live reload: new configuration and templates without a restart.
//!
//! Triggered by SIGHUP (see `cli/serve.rs`) or by the watcher noticing that a config file
//! or a template changed (mtime, size or presence). A reload builds a complete new
//! [`Runtime`] first; only if that succeeds is it swapped in and the planner nudged, so a
//! broken edit is refused with the file, key and problem logged, and the daemon carries on
//! with the last good configuration.
//!
//! Polling rather than inotify: editors save by rename, configs may sit on network
//! filesystems, and a stat of a few dozen files every couple of seconds costs nothing.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use tokio_util::sync::CancellationToken;

use crate::{
    config::{Settings, Sources},
    runtime::{Live, Runtime},
    schedule::Planner,
};

#[derive(Clone)]
pub struct Reloader {
    sources: Sources,
    live: Live,
    planner: Planner,
}

impl Reloader {
    pub fn new(sources: Sources, live: Live, planner: Planner) -> Self {
        Self {
            sources,
            live,
            planner,
        }
    }

    /// Tries to load everything again. Returns the error text if the new configuration
    /// was refused.
    pub fn reload(&self, why: &str) -> Result<(), String> {
        let files: Vec<String> = self
            .sources
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        let files = files.join(" + ");
        let built = self
            .sources
            .load()
            .map_err(|e| e.to_string())
            .and_then(|settings| {
                // The same checks as `check` and start-up: templates meet real-shaped data.
                let runtime = Runtime::build(settings).map_err(|e| e.to_string())?;
                crate::preflight::verify(&runtime, chrono::Utc::now())
                    .map_err(|e| e.to_string())?;
                Ok(runtime)
            });
        match built {
            Ok(mut runtime) => {
                runtime.loaded_ms = Some(self.planner.now_ms());
                let restart = needs_restart(&self.live.settings(), &runtime.settings);
                self.live.replace(runtime);
                self.planner.nudge();
                metrics::counter!("harborlist_reloads_total", "result" => "ok").increment(1);
                tracing::info!(trigger = why, %files, "configuration reloaded");
                if !restart.is_empty() {
                    tracing::warn!(keys = %restart.join(", "), "these settings changed but take effect only after a restart");
                }
                Ok(())
            }
            Err(error) => {
                metrics::counter!("harborlist_reloads_total", "result" => "refused").increment(1);
                tracing::error!(trigger = why, %files, %error, "reload refused; still running on the last good configuration");
                Err(error)
            }
        }
    }

    /// Polls the config files and the template directory until shutdown.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut last = self.fingerprint();
        loop {
            let every = self.live.settings().schedule.watch.std();
            if every.is_zero() {
                shutdown.cancelled().await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            let now = self.fingerprint();
            if now != last {
                // Give an editor that writes in several steps a moment to finish.
                tokio::time::sleep(Duration::from_millis(200)).await;
                last = self.fingerprint();
                let _ = self.reload("file change");
            }
        }
    }

    fn fingerprint(&self) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
        let mut paths = self.sources.files();
        paths.push(self.sources.announcements_file());
        collect(&self.live.settings().templates.dir, &mut paths);
        paths.sort();
        paths.dedup();
        paths
            .into_iter()
            .map(|p| {
                let meta = std::fs::metadata(&p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())));
                (p, meta)
            })
            .collect()
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Settings read once at start; a reload can't apply them to running parts.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.server.bind != new.server.bind {
        keys.push("server.bind");
    }
    if old.database.url != new.database.url
        || old.database.max_connections != new.database.max_connections
    {
        keys.push("database");
    }
    let (a, b) = (&old.mail, &new.mail);
    if a.transport != b.transport
        || a.smtp_url != b.smtp_url
        || a.outbox_dir != b.outbox_dir
        || a.pool_size != b.pool_size
        || a.max_per_second != b.max_per_second
        || a.max_attempts != b.max_attempts
        || a.smtp_timeout != b.smtp_timeout
        || a.lease != b.lease
    {
        keys.push("mail (transport, pool, rate, retries)");
    }
    if old.subscriptions.max_requests_per_ip_per_hour
        != new.subscriptions.max_requests_per_ip_per_hour
    {
        keys.push("subscriptions.max_requests_per_ip_per_hour");
    }
    if old.log.format != new.log.format || old.log.level != new.log.level {
        keys.push("log");
    }
    keys
}
