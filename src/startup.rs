//! Wiring: from validated settings to a running service, and back down again.
//!
//! The configuration's derived state ([`Runtime`], behind [`Live`]) lives in
//! `crate::runtime`; this module only composes the pieces.
//!
//! [`Application::build`] opens the store (running migrations), binds the HTTP port and
//! prepares the tasks; [`Application::run_until_stopped`] runs the web server, the sender
//! and the planner until the shutdown token fires, then stops them in order: stop taking
//! requests, let in-flight mail finish and be recorded, close the pool.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

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
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
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
        // What `check` checks: every template rendered with data of the real shape.
        crate::preflight::verify(&runtime, clock.now())?;
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
        let health = Health::new();
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
