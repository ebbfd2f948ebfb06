//! `harborlist serve`: the daemon.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::{clock::SystemClock, config::Sources, startup::Application, telemetry};

pub async fn run(sources: Sources) -> anyhow::Result<ExitCode> {
    let settings = sources
        .load()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    telemetry::init(&settings.log);
    let app = Application::build(settings, std::sync::Arc::new(SystemClock))
        .await
        .context("cannot start")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (systemd) or SIGINT (Ctrl-C) starts a graceful stop.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for signals; stop with kill -9");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}
