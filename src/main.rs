//! The `harborlist` binary: parse the command line, run the command, turn errors into a
//! message and an exit status. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

/// Sending allocates many short-lived strings per message (rendering, MIME encoding, SQL
/// rows); glibc's allocator was about 15% of the sender's CPU in profiles, mimalloc's
/// thread-local free lists make that a few percent.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = harborlist::cli::Cli::parse();
    // One thread by default: see `--threads`. The measurements are in docs/performance.md.
    let mut builder = match cli.threads.get() {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(harborlist::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
