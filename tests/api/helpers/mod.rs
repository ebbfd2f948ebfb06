//! Test harness: databases, an SMTP sink, and `spawn_app`.

#![allow(dead_code)]

mod app;
mod bounces;
mod daemon;
mod db;
mod dovecot;
mod mail;
mod nginx;
mod registration;
mod relay;
mod sink;

pub use app::*;
#[allow(unused_imports)]
pub use bounces::*;
#[allow(unused_imports)]
pub use daemon::*;
pub use db::*;
#[allow(unused_imports)]
pub use dovecot::*;
pub use mail::*;
#[allow(unused_imports)]
pub use nginx::*;
#[allow(unused_imports)]
pub use registration::*;
#[allow(unused_imports)]
pub use relay::*;
pub use sink::*;

/// Stops a server the test started (Dovecot, nginx) with SIGTERM, so its master process
/// takes its workers with it, and waits for it.
pub fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// Runs an async test body once per backend, as two separate `#[tokio::test]`s.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Backend::Postgres).await }
            )*
        }
    };
}

/// Polls `check` until it returns Some or `secs` pass.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A command's exit was a success; if not, its stderr says why.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
