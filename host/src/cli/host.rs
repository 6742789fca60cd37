//! `kiln run`: the long-running host process, until SIGINT or SIGTERM. SIGHUP, or an edit
//! of the config file, reloads the config (see `reload::config_file`).
//!
//! The first signal starts a graceful shutdown (`host::run`'s shutdown future resolves). A
//! second one interrupts the running jobs at once and hands them back to their queues with
//! their attempt uncounted, then exits. A third one, or a store that does not take the jobs
//! back within `HAND_BACK_LIMIT`, exits at once (those jobs come back when their leases
//! expire).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use anyhow::Context as _;

use crate::config::{Config, LiveConfig};
use crate::events::Events;
use crate::reload::config_file::Reloader;

/// Exit status when a second signal cuts the graceful shutdown short (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// How long a second signal waits for the interrupted jobs to be handed back to the store
/// before exiting anyway: an unreachable store must not keep a user's Ctrl-C waiting.
const HAND_BACK_LIMIT: Duration = Duration::from_secs(5);

pub async fn run(config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let interrupt = CancellationToken::new();
    let shutdown = shutdown_signal(interrupt.clone());
    let live = LiveConfig::new(config);
    let _reloader = Reloader::start(live.clone()).context("failed to listen for SIGHUP")?;
    crate::host::run_with(live, Events::logging(), shutdown, interrupt.clone()).await?;
    Ok(if interrupt.is_cancelled() {
        ExitCode::from(EXIT_INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolves on the first SIGINT or SIGTERM; a second one cancels `interrupt`, a third one
/// exits the process at once.
async fn shutdown_signal(interrupt: CancellationToken) {
    signal().await;
    tracing::info!("signal received: finishing running jobs (signal again to stop them now)");
    tokio::spawn(async move {
        signal().await;
        tracing::warn!(
            "second signal: interrupting running jobs and handing them back to the queue \
             (signal again to exit now)"
        );
        interrupt.cancel();
        tokio::select! {
            () = signal() => tracing::warn!(
                "third signal: exiting now; unfinished jobs return when their leases expire"
            ),
            () = tokio::time::sleep(HAND_BACK_LIMIT) => tracing::warn!(
                "jobs not handed back within {}: exiting; they return when their leases expire",
                humantime::format_duration(HAND_BACK_LIMIT)
            ),
        }
        crate::logging::flush();
        std::process::exit(i32::from(EXIT_INTERRUPTED));
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
