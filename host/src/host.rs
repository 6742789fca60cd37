//! `host::run(config, shutdown)`: one Kiln host, the library entry point `kiln run` calls.
//!
//! It opens the job store (creating an embedded store file that is missing, the one place
//! that does), builds the wasmtime runtime sized for the host's concurrency,
//! loads the handlers directory, then runs side by side until `shutdown` resolves: the
//! reloader watching the directory, and the worker (with its settler, renewer and reaper).
//! Every part reports to one [`Events`], so the log lines (and whatever else subscribes)
//! see the whole host.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::clock::SystemClock;
use crate::config::{Config, StoreConfig};
use crate::engine::{Runtime, RuntimeSettings};
use crate::events::Events;
use crate::registry::{Change, Registry};
use crate::reload::Watcher;
use crate::store::{AnyStore, Role, StoreResult};
use crate::worker::Worker;

/// Runs a host until `shutdown` resolves and its running jobs have drained (see `Worker`).
pub async fn run(config: Arc<Config>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(
        config,
        Events::logging(),
        shutdown,
        CancellationToken::new(),
    )
    .await
}

/// [`run`], reporting to `events` instead of only the log; cancelling `interrupt` cuts the
/// shutdown grace short (see [`Worker::with_interrupt`]).
pub async fn run_with(
    config: Arc<Config>,
    events: Events,
    shutdown: impl Future<Output = ()>,
    interrupt: CancellationToken,
) -> anyhow::Result<()> {
    let store = Arc::new(open_or_create_store(&config).await?);
    let registry = Arc::new(load_handlers(&config, &events).await?);
    let dir = registry.dir().to_owned();
    let _watcher = Watcher::start(registry.clone())
        .with_context(|| format!("failed to watch handlers directory `{}`", dir.display()))?;
    let worker = Worker::new(store, registry, config, Arc::new(SystemClock))
        .with_events(events)
        .with_interrupt(interrupt);
    worker.run(shutdown).await
}

/// Opens the job store the configuration names for a job command, saying which one on
/// failure. An embedded store file that does not exist is refused, not created: only
/// `kiln run` creates stores.
pub async fn open_store(config: &Config) -> anyhow::Result<AnyStore> {
    named(&config.store, config.store.open(Role::Command).await)
}

/// Opens the job store for a host, creating a missing embedded store file (and its
/// directory) and saying so in the log.
async fn open_or_create_store(config: &Config) -> anyhow::Result<AnyStore> {
    let created = match &config.store {
        StoreConfig::Embedded { path, .. } if !path.exists() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!(
                        "failed to create job store directory `{}`",
                        parent.display()
                    )
                })?;
            }
            Some(path)
        }
        _ => None,
    };
    let store = named(&config.store, config.store.open(Role::Host).await)?;
    if let Some(path) = created {
        tracing::info!(path = %path.display(), "created a new, empty job store");
    }
    Ok(store)
}

/// `opened`, its error saying which store failed to open (unless it says so already).
fn named(store: &StoreConfig, opened: StoreResult<AnyStore>) -> anyhow::Result<AnyStore> {
    opened.map_err(|error| match store {
        StoreConfig::Embedded { path, .. } => {
            let path = format!("`{}`", path.display());
            if error.to_string().contains(&path) {
                error.into()
            } else {
                anyhow::Error::new(error).context(format!("failed to open job store {path}"))
            }
        }
        StoreConfig::Redis(_) => {
            anyhow::Error::new(error).context("failed to connect to the Redis job store")
        }
    })
}

/// A runtime sized for the host's concurrency and a registry of every handler in the
/// configured directory (created if missing), loaded.
async fn load_handlers(config: &Config, events: &Events) -> anyhow::Result<Registry> {
    let runtime = Arc::new(Runtime::new(RuntimeSettings {
        max_instances: u32::try_from(config.host.concurrency).unwrap_or(u32::MAX),
        max_memory: config.max_job_memory(),
        pooling: true,
    })?);
    let dir = config.host.handlers_dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create handlers directory `{}`", dir.display()))?;
    let cache = config.host.cache_dir.clone();
    let registry = Registry::new(runtime, dir.clone(), Some(cache)).with_events(events.clone());
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
    Ok(registry)
}
