//! Wiring: from validated settings to a running service, and back down again.
//!
//! [`Runtime`] is everything derived from one configuration (templates, token key,
//! calendar, composer). It sits behind [`Live`], which every task reads from and which a
//! reload swaps in one step, so a request or a batch always sees one consistent version.
//!
//! [`Application::build`] opens the store (running migrations), binds the HTTP port and
//! prepares the tasks; [`Application::run_until_stopped`] runs the web server, the sender
//! and the planner until the shutdown token fires, then stops them in order: stop taking
//! requests, let in-flight mail finish and be recorded, close the pool.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

use crate::{
    calendar::Calendar,
    clock::SharedClock,
    config::{ConfigError, Settings, Sources},
    domain::TokenKey,
    mail::{Composer, Identity, MailError, Transport, dkim},
    reload::Reloader,
    schedule::Planner,
    send::{Sender, SenderConfig},
    store::{Store, StoreError},
    telemetry,
    templates::{EmailTemplates, TemplateError, WebTemplates},
    web::{self, AppState},
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Transport(String),
    #[error("server.bind: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Everything derived from one version of the configuration.
#[derive(Debug)]
pub struct Runtime {
    pub settings: Arc<Settings>,
    pub composer: Composer,
    pub web: Arc<WebTemplates>,
    pub key: TokenKey,
    pub calendar: Arc<Calendar>,
    /// When this process loaded the configuration, by its clock; `None` if not stamped.
    /// Several instances can hold different configurations for a moment (one has reloaded
    /// an edit, another not yet), and the planner acts on its view only where that view
    /// is newer than the rows it would change (see [`Runtime::config_ms`]).
    pub loaded_ms: Option<i64>,
}

impl Runtime {
    /// Loads and checks everything the settings point at, creating the token key file if
    /// it is missing (the daemon's first start). Fails without other side effects, so a
    /// reload can try it and keep the old runtime on error.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, KeyFile::Create)
    }

    /// As [`Runtime::build`], but never writes: a missing key file gives a throwaway key.
    /// For `check`, `preview` and `send-test`, which staff may run as another user.
    pub fn build_read_only(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, KeyFile::Ephemeral)
    }

    /// The newest row a planner may change or close from this configuration: rows written
    /// later were written by an instance that had loaded a newer one. An unstamped runtime
    /// (tests that build their own) is not limited.
    pub fn config_ms(&self) -> i64 {
        self.loaded_ms.unwrap_or(i64::MAX)
    }

    fn build_with(settings: Settings, key_file: KeyFile) -> Result<Self, StartupError> {
        let calendar = settings.calendar()?;
        let email = Arc::new(EmailTemplates::load(&settings.templates.dir)?);
        let web = Arc::new(WebTemplates::load(&settings.templates.dir)?);
        for required in [
            "confirm",
            "welcome",
            "goodbye",
            "announcement",
            "update",
            "cancellation",
        ]
        .into_iter()
        .chain(settings.reminders.iter().map(|r| r.template.as_str()))
        .chain(
            settings
                .announcements
                .iter()
                .filter_map(|a| a.template.as_deref()),
        ) {
            if !email.has(required) {
                return Err(ConfigError::invalid(
                    "templates.dir",
                    format!(
                        "{} has no email template {required:?}",
                        settings.templates.dir.display()
                    ),
                )
                .into());
            }
        }
        let key = token_key(&settings, key_file)?;
        let dkim = settings.mail.dkim.as_ref().map(dkim::load).transpose()?;
        let composer = Composer::new(Identity::from_settings(&settings), email, key.clone(), dkim);
        Ok(Self {
            settings: Arc::new(settings),
            composer,
            web,
            key,
            calendar: Arc::new(calendar),
            loaded_ms: None,
        })
    }
}

/// The token key: `security.token_key` if set, else the key file (created on first use,
/// readable only by us). Several instances must share one key: set it in config or point
/// them at the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFile {
    Create,
    Ephemeral,
}

fn token_key(settings: &Settings, key_file: KeyFile) -> Result<TokenKey, StartupError> {
    if let Some(text) = &settings.security.token_key {
        return TokenKey::parse(text)
            .map_err(|e| StartupError::Key(format!("security.token_key: {e}")));
    }
    let path = settings
        .security
        .token_key_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("data/harborlist.key"));
    let key_err = |what: String| StartupError::Key(format!("security.token_key_file: {what}"));
    if !path.exists() && key_file == KeyFile::Ephemeral {
        return TokenKey::parse(&TokenKey::generate_text()).map_err(|e| key_err(e.to_string()));
    }
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| key_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        write_private(&path, &TokenKey::generate_text())
            .map_err(|e| key_err(format!("cannot create {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "created a new token key");
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| key_err(format!("cannot read {}: {e}", path.display())))?;
    TokenKey::parse(&text).map_err(|e| key_err(format!("{}: {e}", path.display())))
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The current [`Runtime`], swappable by a reload.
#[derive(Clone, Debug)]
pub struct Live(Arc<RwLock<Arc<Runtime>>>);

impl Live {
    pub fn new(runtime: Runtime) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(runtime))))
    }

    pub fn current(&self) -> Arc<Runtime> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, runtime: Runtime) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runtime);
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.current().settings.clone()
    }

    pub fn composer(&self) -> Composer {
        self.current().composer.clone()
    }

    pub fn web(&self) -> Arc<WebTemplates> {
        self.current().web.clone()
    }

    pub fn token_key(&self) -> TokenKey {
        self.current().key.clone()
    }

    pub fn calendar(&self) -> Arc<Calendar> {
        self.current().calendar.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    sender: Sender,
    planner: Planner,
    reloader: Option<Reloader>,
}

impl Application {
    pub async fn build(settings: Settings, clock: SharedClock) -> Result<Self, StartupError> {
        let mut runtime = Runtime::build(settings)?;
        runtime.loaded_ms = Some(crate::clock::to_millis(clock.now()));
        let settings = runtime.settings.clone();
        let store =
            Store::connect(&settings.database.url, settings.database.max_connections).await?;
        let transport =
            Transport::from_settings(&settings.mail).map_err(StartupError::Transport)?;
        let listener = TcpListener::bind(settings.server.bind)
            .await
            .map_err(|source| StartupError::Bind {
                addr: settings.server.bind,
                source,
            })?;
        let port = listener.local_addr().map_err(StartupError::Serve)?.port();
        let live = Live::new(runtime);
        let wake = Arc::new(Notify::new());
        let sender = Sender::new(
            store.clone(),
            live.clone(),
            transport,
            clock.clone(),
            SenderConfig {
                instance: instance_name(),
                concurrency: settings.mail.pool_size as usize,
                batch: claim_batch(settings.mail.pool_size, settings.mail.max_per_second),
                max_per_second: settings.mail.max_per_second,
                max_attempts: settings.mail.max_attempts,
                retry_base: settings.mail.retry_base.std(),
                retry_max: settings.mail.retry_max.std(),
                lease: settings.mail.lease.std(),
                poll: settings.schedule.poll.std(),
            },
            wake.clone(),
        );
        let planner = Planner::new(store.clone(), live.clone(), clock.clone(), wake.clone());
        let state = AppState {
            store,
            live,
            clock,
            wake,
            per_ip: AppState::per_ip_limiter(settings.subscriptions.max_requests_per_ip_per_hour),
            metrics: telemetry::metrics_handle(),
        };
        Ok(Self {
            listener,
            port,
            state,
            sender,
            planner,
            reloader: None,
        })
    }

    /// Lets the running app reload `sources` on file changes; the returned handle reloads
    /// on demand (SIGHUP).
    pub fn enable_reload(&mut self, sources: Sources) -> Reloader {
        let reloader = Reloader::new(sources, self.state.live.clone(), self.planner.clone());
        self.reloader = Some(reloader.clone());
        reloader
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn live(&self) -> &Live {
        &self.state.live
    }

    /// Runs until `shutdown` fires, then stops gracefully.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let Self {
            listener,
            state,
            sender,
            planner,
            reloader,
            ..
        } = self;
        let store = state.store.clone();
        let settings = state.live.settings();
        tracing::info!(
            bind = %listener.local_addr().map_err(StartupError::Serve)?,
            public_url = %settings.server.public_url,
            backend = ?store.backend(),
            "harborlist is running"
        );
        let workers = CancellationToken::new();
        let sender_task = tokio::spawn(sender.run(workers.clone()));
        let planner_task = tokio::spawn(planner.run(workers.clone(), settings.schedule.tick.std()));
        let watch_task = reloader.map(|r| tokio::spawn(r.watch(workers.clone())));
        let app = web::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let http_shutdown = shutdown.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await;
        tracing::info!("stopping: finishing messages in flight");
        workers.cancel();
        let (sender_done, planner_done) = tokio::join!(sender_task, planner_task);
        if let Some(task) = watch_task {
            let _ = task.await;
        }
        for (name, done) in [("sender", sender_done), ("planner", planner_done)] {
            if let Err(e) = done {
                tracing::error!(task = name, error = %e, "task ended abnormally");
            }
        }
        // Give the pool a bounded time to close: a wedged database must not hang shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(10), store.close()).await;
        tracing::info!("stopped");
        served.map_err(StartupError::Serve)
    }
}

/// Deliveries per claim. Between two claims the connections wait while the last outcomes
/// are stored and the next rows claimed, so a bigger claim wastes less: 400 rows instead of
/// 100 made SQLite delivery 7–27 % faster. But mail that a person is waiting for (a
/// confirmation) can only start after the claim in flight, so under a send-rate limit,
/// where that pause costs nothing anyway, a claim holds about two seconds of sending.
fn claim_batch(pool_size: u32, max_per_second: f64) -> i64 {
    let connections = i64::from(pool_size.max(1));
    let unthrottled = connections * 100;
    if max_per_second > 0.0 {
        ((max_per_second * 2.0).ceil() as i64).clamp(connections, unthrottled)
    } else {
        unthrottled
    }
}

/// Identifies this process in lease owners: host, pid and a random suffix.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &crate::domain::new_nonce()[..6]
    )
}

#[cfg(test)]
mod tests {
    use super::claim_batch;

    #[test]
    fn a_claim_is_large_unthrottled_and_about_two_seconds_under_a_rate_limit() {
        assert_eq!(claim_batch(4, 0.0), 400);
        assert_eq!(claim_batch(0, 0.0), 100, "at least one connection");
        assert_eq!(claim_batch(4, 14.0), 28, "two seconds at 14 a second");
        assert_eq!(claim_batch(4, 0.5), 4, "never fewer rows than connections");
        assert_eq!(claim_batch(4, 10_000.0), 400, "never more than unthrottled");
    }
}
