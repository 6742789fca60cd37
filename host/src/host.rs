//! `host::run(config, shutdown)`: one Kiln host, the library entry point `kiln run` calls.
//!
//! It opens the job store, builds the wasmtime runtime sized for the host's concurrency,
//! then runs side by side until `shutdown` resolves: the first load of the handlers
//! directory (each handler serves as soon as it is compiled), the reloader watching the
//! directory, and the worker (with its settler, renewer and reaper).
//! Every part reports to one [`Events`], so the log lines (and whatever else subscribes)
//! see the whole host.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;

use crate::clock::SystemClock;
use crate::config::{Config, StoreConfig};
use crate::engine::{Runtime, RuntimeSettings};
use crate::events::Events;
use crate::registry::{Change, Registry, compile_budget};
use crate::reload::Watcher;
use crate::store::AnyStore;
use crate::worker::Worker;

/// Runs a host until `shutdown` resolves and its running jobs have drained (see `Worker`).
pub async fn run(config: Arc<Config>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(config, Events::logging(), shutdown).await
}

/// [`run`], reporting to `events` instead of only the log.
pub async fn run_with(
    config: Arc<Config>,
    events: Events,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Arc::new(open_store(&config).await?);
    let registry = Arc::new(handlers(&config, &events)?);
    let dir = registry.dir().to_owned();
    let _watcher = Watcher::start(registry.clone())
        .with_context(|| format!("failed to watch handlers directory `{}`", dir.display()))?;
    let loading = tokio::spawn(load_all(registry.clone()));
    let worker = Worker::new(store, registry, config, Arc::new(SystemClock)).with_events(events);
    let result = worker.run(shutdown).await;
    loading.abort();
    result
}

/// Opens the job store the configuration names, saying which one on failure.
pub async fn open_store(config: &Config) -> anyhow::Result<AnyStore> {
    if let StoreConfig::Embedded { path, .. } = &config.store
        && let Some(parent) = path.parent()
    {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "failed to create job store directory `{}`",
                parent.display()
            )
        })?;
    }
    let opened = config.store.open(config.job_defaults()).await;
    opened.with_context(|| match &config.store {
        StoreConfig::Embedded { path, .. } => {
            format!("failed to open job store `{}`", path.display())
        }
        StoreConfig::Redis(_) => "failed to connect to the Redis job store".to_owned(),
    })
}

/// A runtime sized for the host's concurrency and an empty registry of the configured
/// directory (created if missing, and checked readable).
fn handlers(config: &Config, events: &Events) -> anyhow::Result<Registry> {
    let mut runtime = Runtime::new(RuntimeSettings {
        max_instances: u32::try_from(config.host.concurrency).unwrap_or(u32::MAX),
        max_memory: config.max_job_memory(),
        pooling: true,
    })?;
    if let Some(budget) = compile_budget(Some(&config.host)) {
        runtime = runtime.with_compile_budget(budget);
    }
    let runtime = Arc::new(runtime);
    let dir = config.host.handlers_dir.clone();
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::read_dir(&dir).map(drop))
        .with_context(|| format!("failed to read handlers directory `{}`", dir.display()))?;
    let cache = config.host.cache_dir.clone();
    Ok(Registry::new(runtime, dir, Some(cache)).with_events(events.clone()))
}

/// Loads every handler in the background while the worker already runs: each serves as soon
/// as it is ready, and jobs for one still loading wait as for a handler not yet there.
async fn load_all(registry: Arc<Registry>) {
    let dir = registry.dir().display().to_string();
    match registry.load_all().await {
        Ok(changes) => {
            let loaded = changes
                .iter()
                .filter(|c| matches!(c, Change::Added { .. }))
                .count();
            tracing::info!(
                dir,
                loaded,
                refused = changes.len() - loaded,
                "handlers loaded"
            );
        }
        Err(error) => tracing::error!(dir, "failed to read handlers directory: {error}"),
    }
}
