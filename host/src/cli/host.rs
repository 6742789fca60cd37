//! `kiln run`: the long-running host process, until SIGINT or SIGTERM.
//!
//! The first signal starts a graceful shutdown (`host::run`'s shutdown future resolves); a
//! second one exits at once (jobs still running then come back to their queues when their
//! leases expire).

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;

/// Exit status when a second signal cuts the graceful shutdown short (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

pub async fn run(config: Arc<Config>) -> anyhow::Result<ExitCode> {
    crate::host::run(config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits the process at once.
async fn shutdown_signal() {
    signal().await;
    tracing::info!("signal received: finishing running jobs (signal again to exit now)");
    tokio::spawn(async {
        signal().await;
        tracing::warn!(
            "second signal: exiting now; unfinished jobs return when their leases expire"
        );
        std::process::exit(EXIT_INTERRUPTED);
    });
}

async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!("cannot listen for SIGTERM: {error}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
