//! Wiring: from validated settings to a running service, and back down again.
//!
//! The configuration's derived state ([`Runtime`], behind [`Live`]) lives in
//! `crate::runtime`; this module only composes the pieces.
//!
//! [`Application::build`] opens the store (running migrations), binds the HTTP port and
//! prepares the tasks; [`Application::run_until_stopped`] runs the web server, the sender
//! and the planner until the shutdown token fires, then stops them in order: stop taking
//! requests, let in-flight mail finish and be recorded, close the pool.

use std::{
    collections::HashMap, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration,
};

use tokio::{net::TcpListener, sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::runtime::{KeyFile, keys};
pub use crate::runtime::{Live, Runtime, RuntimeError};
use crate::{
    clock::SharedClock,
    config::{Settings, Sources},
    health::Health,
    mail::Transport,
    reload::Reloader,
    schedule::Planner,
    send::{Sender, SenderConfig},
    store::{Store, StoreError},
    telemetry,
    web::{self, AppState},
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Transport(String),
    #[error("server.bind: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server.metrics_bind: cannot listen on {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bounces.listen: cannot listen on {addr}: {source}")]
    BounceListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bounces.imap_url {0}")]
    BounceMailbox(String),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("the {task} stopped ({why}); harborlist stopped with it")]
    TaskStopped { task: &'static str, why: String },
}

pub struct Application {
    listener: TcpListener,
    /// `server.metrics_bind`, if metrics are on.
    metrics_listener: Option<TcpListener>,
    port: u16,
    state: AppState,
    sender: Sender,
    planner: Planner,
    reloader: Option<Reloader>,
    /// Tasks added with [`Application::supervise`].
    extra: Vec<(&'static str, BoxedTask)>,
    /// `bounces.imap_url`: the reader of the return path's mailbox.
    bounce_reader: Option<crate::bounce::imap::Reader>,
    /// `bounces.listen`, bound: the SMTP listener the site's MTA hands bounces to.
    bounce_listener: Option<crate::bounce::listen::Listener>,
}

impl Application {
    pub async fn build(settings: Settings, clock: SharedClock) -> Result<Self, StartupError> {
        let store =
            Store::connect(&settings.database.url, settings.database.max_connections).await?;
        let now_ms = crate::clock::to_millis(clock.now());
        let mut runtime = keyed_runtime(&store, settings, now_ms).await?;
        // What `check` checks: every template rendered with data of the real shape.
        crate::preflight::verify(&runtime, clock.now())?;
        runtime.loaded_ms = Some(now_ms);
        let settings = runtime.settings.clone();
        let transport =
            Transport::from_settings(&settings.mail).map_err(StartupError::Transport)?;
        let listener = TcpListener::bind(settings.server.bind)
            .await
            .map_err(|source| StartupError::Bind {
                addr: settings.server.bind,
                source,
            })?;
        let port = listener.local_addr().map_err(StartupError::Serve)?.port();
        let metrics_listener = match settings.server.metrics_addr() {
            Ok(Some(addr)) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::MetricsBind { addr, source })?,
            ),
            _ => None,
        };
        let bounce_tcp = match settings.bounces.as_ref().and_then(|b| b.listen) {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::BounceListen { addr, source })?,
            ),
            None => None,
        };
        let live = Live::new(runtime);
        let wake = Arc::new(Notify::new());
        let health = Health::new();
        health.set_started(crate::clock::to_millis(clock.now()));
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
        )
        .with_health(health.clone());
        let planner = Planner::new(store.clone(), live.clone(), clock.clone(), wake.clone())
            .with_health(health.clone());
        let ingest = settings.bounces.is_some().then(|| {
            crate::bounce::ingest::Ingest::new(store.clone(), live.clone(), clock.clone())
        });
        let bounce_reader =
            bounce_reader(&settings, ingest.as_ref())?.map(|r| r.with_health(health.clone()));
        let bounce_listener = bounce_tcp
            .zip(ingest)
            .map(|(tcp, ingest)| crate::bounce::listen::Listener::new(tcp, ingest, live.clone()));
        let state = AppState {
            store,
            live,
            clock,
            wake,
            per_ip: AppState::per_ip_limiter(settings.subscriptions.max_requests_per_ip_per_hour),
            metrics: telemetry::metrics_handle(),
            health,
        };
        Ok(Self {
            listener,
            metrics_listener,
            port,
            state,
            sender,
            planner,
            reloader: None,
            extra: Vec::new(),
            bounce_reader,
            bounce_listener,
        })
    }

    /// Lets the running app reload `sources` on file changes; the returned handle reloads
    /// on demand (SIGHUP).
    pub fn enable_reload(&mut self, sources: Sources) -> Reloader {
        let reloader = Reloader::new(
            sources,
            self.state.live.clone(),
            self.planner.clone(),
            self.state.store.clone(),
        );
        self.reloader = Some(reloader.clone());
        reloader
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `/metrics` is served on, if metrics are on.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// The port `bounces.listen` is served on, if it is set.
    pub fn bounce_listener_port(&self) -> Option<u16> {
        self.bounce_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The service's health, shared with its tasks (planner turns, relay state).
    pub fn health(&self) -> &Health {
        &self.state.health
    }

    pub fn live(&self) -> &Live {
        &self.state.live
    }

    /// Runs one more task under the same supervision as the built-in ones: if it ends
    /// before the stop, the daemon stops and [`Application::run_until_stopped`] fails. For
    /// embedding harborlist, and for tests that need a task that dies.
    pub fn supervise(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.extra.push((name, Box::pin(task)));
    }

    /// Runs until `shutdown` fires, then stops gracefully: stop taking requests (draining
    /// for at most `server.shutdown_timeout`), let in-flight mail finish and be recorded,
    /// close the pool. If any task ends or panics first, the same stop follows and the
    /// result is [`StartupError::TaskStopped`], so the process exits non-zero and systemd's
    /// `Restart=on-failure` brings it back.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let Self {
            listener,
            metrics_listener,
            state,
            sender,
            planner,
            reloader,
            extra,
            bounce_reader,
            bounce_listener,
            ..
        } = self;
        let store = state.store.clone();
        let health = state.health.clone();
        let settings = state.live.settings();
        tracing::info!(
            bind = %listener.local_addr().map_err(StartupError::Serve)?,
            public_url = %settings.server.public_url,
            backend = ?store.backend(),
            "harborlist is running"
        );
        let limits = web::server::Limits {
            header_timeout: settings.server.header_timeout.std(),
            idle_timeout: web::server::IDLE_TIMEOUT,
            shutdown_timeout: settings.server.shutdown_timeout.std(),
        };
        let http_stop = CancellationToken::new();
        let workers = CancellationToken::new();
        let mut tasks = Tasks::default();
        if let Some(listener) = metrics_listener {
            let metrics = web::metrics_router(state.clone());
            let bare = web::bare_headers(&settings);
            let serving = web::server::serve(listener, metrics, limits, bare, http_stop.clone());
            tasks.spawn("metrics server", async move {
                if let Err(e) = serving.await {
                    tracing::error!(error = %e, "the metrics server failed");
                }
            });
        }
        let app = web::router(state);
        let bare = web::bare_headers(&settings);
        let http = web::server::serve(listener, app, limits, bare, http_stop.clone());
        tasks.spawn("HTTP server", async move {
            if let Err(e) = http.await {
                tracing::error!(error = %e, "the HTTP server failed");
            }
        });
        tasks.spawn("sender", sender.run(workers.clone()));
        tasks.spawn(
            "planner",
            planner.run(workers.clone(), settings.schedule.tick.std()),
        );
        if let Some(reloader) = reloader {
            tasks.spawn("reload watcher", reloader.watch(workers.clone()));
        }
        if let Some(reader) = bounce_reader {
            tracing::info!(mailbox = %reader.describe(), "bounces.imap_url: reading the bounce mailbox");
            tasks.spawn("bounce mailbox reader", reader.run(workers.clone()));
        }
        if let Some(listener) = bounce_listener {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "bounces.listen: taking reports over SMTP");
            }
            tasks.spawn("bounce listener", listener.run(workers.clone()));
        }
        for (name, task) in extra {
            tasks.spawn(name, task);
        }
        let failure = tokio::select! {
            _ = shutdown.cancelled() => None,
            ended = tasks.next_ended() => Some(ended),
        };
        if let Some((task, why)) = &failure {
            tracing::error!(task, why, "a task stopped; stopping harborlist");
            health.task_stopped(task, why);
        }
        tracing::info!("stopping: finishing messages in flight");
        http_stop.cancel();
        tasks.wait_for("HTTP server").await;
        workers.cancel();
        tasks.wait_all().await;
        // Give the pool a bounded time to close: a wedged database must not hang shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(10), store.close()).await;
        tracing::info!("stopped");
        match failure {
            Some((task, why)) => Err(StartupError::TaskStopped { task, why }),
            None => Ok(()),
        }
    }
}

/// A task to supervise, boxed so tasks of different types can wait in one list.
type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The supervised tasks by name. Any of them ending before the stop is a failure.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// The first task to end, and how: "ended" or the panic's message.
    async fn next_ended(&mut self) -> (&'static str, String) {
        let Some(ended) = self.set.join_next_with_id().await else {
            return ("supervisor", "no tasks were running".into());
        };
        let (id, why) = match ended {
            Ok((id, ())) => (id, "ended unexpectedly".to_owned()),
            Err(e) => (e.id(), describe(e)),
        };
        (self.names.remove(&id).unwrap_or("task"), why)
    }

    /// Waits for the task called `name` to end, leaving the others running.
    async fn wait_for(&mut self, name: &'static str) {
        while self.names.values().any(|n| *n == name) {
            match self.next_ended().await {
                (_, why) if why.starts_with("panicked") => {
                    tracing::error!(why, "a task panicked while stopping");
                }
                _ => {}
            }
        }
    }

    async fn wait_all(&mut self) {
        while !self.set.is_empty() {
            let (task, why) = self.next_ended().await;
            if why.starts_with("panicked") {
                tracing::error!(task, why, "a task panicked while stopping");
            }
        }
    }
}

fn describe(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "was cancelled".into();
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("panicked: {text}")
}

/// The runtime, its token key checked against the database (and pinned there on a fresh
/// install, the only time a key file may be created; see `crate::runtime::keys`).
async fn keyed_runtime(
    store: &Store,
    settings: Settings,
    now_ms: i64,
) -> Result<Runtime, StartupError> {
    let fresh = keys::pinned(store).await?.is_none();
    let source = keys::key_source(&settings);
    let key_file = if fresh {
        KeyFile::Create
    } else {
        KeyFile::MustExist
    };
    let runtime = Runtime::build_with(settings, key_file)?;
    keys::claim(store, &runtime.key_ring(), &source, now_ms).await?;
    Ok(runtime)
}

/// Deliveries per claim. Between two claims the connections wait while the last outcomes
/// are stored and the next rows claimed, so a bigger claim wastes less (400 rows rather
/// than 100; measured in docs/performance.md). But mail that a person is waiting for (a
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

/// The reader of `bounces.imap_url`, when it is set. Both ways in hand what they receive
/// to the same [`Ingest`](crate::bounce::ingest::Ingest).
fn bounce_reader(
    settings: &Settings,
    ingest: Option<&crate::bounce::ingest::Ingest>,
) -> Result<Option<crate::bounce::imap::Reader>, StartupError> {
    let (Some(bounces), Some(ingest)) = (settings.bounces.as_ref(), ingest) else {
        return Ok(None);
    };
    let Some(text) = bounces.imap_url() else {
        return Ok(None);
    };
    let url = crate::config::ImapUrl::parse(text).map_err(StartupError::BounceMailbox)?;
    Ok(Some(crate::bounce::imap::Reader::new(
        url,
        bounces,
        ingest.clone(),
    )))
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
