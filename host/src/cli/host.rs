//! `kiln run`: the long-running host process.
//!
//! Loads the handlers directory, watches it, and runs the worker until SIGINT or SIGTERM.
//! The first signal starts a graceful shutdown; a second one exits at once (jobs still
//! running then come back to their queues when their leases expire).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::open_store;
use crate::config::Config;
use crate::engine::{Runtime, RuntimeSettings};
use crate::registry::{Change, Registry};
use crate::reload::Watcher;
use crate::worker::{SystemClock, Worker};

/// Exit status when a second signal cuts the graceful shutdown short (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

pub async fn run(config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let store = Arc::new(open_store(&config).await?);
    let runtime = Arc::new(Runtime::new(RuntimeSettings {
        max_instances: u32::try_from(config.host.concurrency).unwrap_or(u32::MAX),
        max_memory: config.max_job_memory(),
        pooling: true,
    })?);
    let dir = config.host.handlers_dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create handlers directory `{}`", dir.display()))?;
    let cache = config.host.cache_dir.clone();
    let registry = Arc::new(Registry::new(runtime, dir.clone(), Some(cache)));
    let changes = registry
        .load_all()
        .await
        .with_context(|| format!("failed to read handlers directory `{}`", dir.display()))?;
    let loaded = changes
        .iter()
        .filter(|c| matches!(c, Change::Added { .. }))
        .count();
    tracing::info!(
        dir = %dir.display(),
        loaded,
        refused = changes.len() - loaded,
        "handlers loaded"
    );
    let _watcher = Watcher::start(registry.clone())
        .with_context(|| format!("failed to watch handlers directory `{}`", dir.display()))?;
    let worker = Worker::new(store, registry, config, Arc::new(SystemClock));
    worker.run(shutdown_signal()).await?;
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
