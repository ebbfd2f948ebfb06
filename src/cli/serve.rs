//! `harborlist serve`: the daemon, and the signals it answers.
//!
//! SIGTERM / SIGINT stop it gracefully; SIGHUP reloads configuration and templates.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::SystemClock, config::Sources, reload::Reloader, startup::Application, telemetry,
};

pub async fn run(sources: Sources) -> anyhow::Result<ExitCode> {
    let settings = sources
        .load()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    telemetry::init(&settings.log);
    let mut app = Application::build(settings, Arc::new(SystemClock))
        .await
        .context("cannot start")?;
    let reloader = app.enable_reload(sources);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    tokio::spawn(reload_on_hangup(reloader));
    app.run_until_stopped(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP (`systemctl reload harborlist`) reloads configuration and templates.
async fn reload_on_hangup(reloader: Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload by editing the files instead");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received");
            let _ = reloader.reload("SIGHUP").await;
        }
    }
    #[cfg(not(unix))]
    drop(reloader);
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
