//! Live reload: new configuration and templates without a restart.
//!
//! Triggered by SIGHUP (see `cli/serve.rs`) or by the watcher noticing that a config file
//! or a template changed (mtime, size or presence). A reload builds a complete new
//! [`Runtime`] first; only if that succeeds is it swapped in and the planner nudged, so a
//! broken edit is refused with the file, key and problem logged, and the daemon carries on
//! with the last good configuration. A token key that does not match the database's
//! fingerprint is refused the same way (`crate::runtime::keys`).
//!
//! Some settings are read once at start (the listener, the pool, the sender's timing, the
//! keys). A reload applies everything else, keeps those at their running values so that
//! [`Live::settings`] says what is in effect, and logs each one that changed at WARN. The
//! token key never changes while running.
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
    runtime::{KeyFile, Live, Runtime, keys},
    schedule::Planner,
    store::Store,
};

#[derive(Clone)]
pub struct Reloader {
    sources: Sources,
    live: Live,
    planner: Planner,
    store: Store,
}

impl Reloader {
    pub fn new(sources: Sources, live: Live, planner: Planner, store: Store) -> Self {
        Self {
            sources,
            live,
            planner,
            store,
        }
    }

    /// Tries to load everything again. Returns the error text if the new configuration
    /// was refused: it does not load, or its token key does not match the database's.
    /// Settings fixed at start keep their running values (each changed one is logged at
    /// WARN), and the running token keys are kept whatever the file says.
    pub async fn reload(&self, why: &str) -> Result<(), String> {
        let files: Vec<String> = self
            .sources
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        let files = files.join(" + ");
        match self.build().await {
            Ok((mut runtime, kept)) => {
                runtime.loaded_ms = Some(self.planner.now_ms());
                self.live.replace(runtime);
                self.planner.nudge();
                metrics::counter!("harborlist_reloads_total", "result" => "ok").increment(1);
                tracing::info!(trigger = why, %files, "configuration reloaded");
                for key in kept {
                    tracing::warn!(
                        key,
                        "{key} changed, but is read only at start: not applied; restart to apply it"
                    );
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

    /// The new runtime, and the fixed settings it kept from the running one.
    async fn build(&self) -> Result<(Runtime, Vec<&'static str>), String> {
        let mut settings = self.sources.load().map_err(|e| e.to_string())?;
        let running = self.live.current();
        // The new file's keys must still fit the database, even though they are not
        // applied: a file that would be refused at the next start is refused now.
        let ring = keys::load(&settings, KeyFile::MustExist).map_err(|e| e.to_string())?;
        let pinned = match keys::pinned(&self.store).await {
            Ok(Some(pinned)) => pinned,
            // Unreadable now, or gone: the running key was checked against it at start.
            Ok(None) | Err(_) => running.key.fingerprint(),
        };
        keys::agreement(Some(&pinned), &ring, &keys::key_source(&settings))
            .map_err(|e| e.to_string())?;
        let kept = keep_fixed(&running.settings, &mut settings);
        let runtime =
            Runtime::build_keyed(settings, running.key_ring()).map_err(|e| e.to_string())?;
        // The same checks as `check` and start-up: templates meet real-shaped data.
        crate::preflight::verify(&runtime, chrono::Utc::now()).map_err(|e| e.to_string())?;
        Ok((runtime, kept))
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
                let _ = self.reload("file change").await;
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

/// Puts back into `new` each setting that is read only at start (the parts built from it
/// keep running), so that the live settings say what is in effect; returns the keys that
/// had changed.
fn keep_fixed(running: &Settings, new: &mut Settings) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! fixed {
        ($($key:literal => $($field:ident).+;)*) => {$(
            if new.$($field).+ != running.$($field).+ {
                new.$($field).+ = running.$($field).+.clone();
                kept.push($key);
            }
        )*};
    }
    fixed! {
        "server.bind" => server.bind;
        "database.url" => database.url;
        "database.max_connections" => database.max_connections;
        "mail.transport" => mail.transport;
        "mail.smtp_url" => mail.smtp_url;
        "mail.outbox_dir" => mail.outbox_dir;
        "mail.pool_size" => mail.pool_size;
        "mail.max_per_second" => mail.max_per_second;
        "mail.max_attempts" => mail.max_attempts;
        "mail.retry_base" => mail.retry_base;
        "mail.retry_max" => mail.retry_max;
        "mail.smtp_timeout" => mail.smtp_timeout;
        "mail.lease" => mail.lease;
        "schedule.poll" => schedule.poll;
        "schedule.tick" => schedule.tick;
        "subscriptions.max_requests_per_ip_per_hour" => subscriptions.max_requests_per_ip_per_hour;
        "log.format" => log.format;
        "log.level" => log.level;
        "security.token_key" => security.token_key;
        "security.token_key_file" => security.token_key_file;
        "security.previous_token_keys" => security.previous_token_keys;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::keep_fixed;

    #[test]
    fn fixed_settings_keep_their_running_values_and_the_rest_applies() {
        let running = crate::config::load_from(std::path::Path::new("config"), None)
            .expect("default config loads");
        let mut new = running.clone();
        new.schedule.tick = "5s".parse().expect("duration");
        new.security.token_key = Some("x".repeat(44).into());
        new.list.name = "Renamed".into();
        let kept = keep_fixed(&running, &mut new);
        assert_eq!(kept, ["schedule.tick", "security.token_key"]);
        assert_eq!(new.schedule.tick, running.schedule.tick);
        assert_eq!(new.security.token_key, None);
        assert_eq!(new.list.name, "Renamed");
        assert!(keep_fixed(&running, &mut running.clone()).is_empty());
    }
}
