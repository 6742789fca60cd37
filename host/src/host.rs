//! `host::run(config, shutdown)`: one Kiln host, the library entry point `kiln run` calls.
//!
//! It opens the job store (creating an embedded store file that is missing, the one place
//! that does), builds the wasmtime runtime sized for the host's concurrency, then runs side
//! by side until `shutdown` resolves: the first load of the handlers directory (each handler
//! serves as soon as it is compiled), the reloader watching the directory, the scheduler
//! (enqueueing the ticks of `[[schedules]]`), and the worker (with its settler, renewer and
//! reaper). The scheduler stops when the shutdown begins, while running jobs drain.
//! Every part reports to one [`Events`], so the log lines (and whatever else subscribes)
//! see the whole host.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::clock::SystemClock;
use crate::config::{Config, LiveConfig, StoreConfig};
use crate::engine::{Runtime, RuntimeSettings};
use crate::events::Events;
use crate::ops::Ops;
use crate::registry::{Change, Registry, compile_budget};
use crate::reload::Watcher;
use crate::scheduler::Scheduler;
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
/// shutdown grace short (see [`Worker::with_interrupt`]). Given a [`LiveConfig`], the host
/// follows its reloads (see `reload::config_file`); the store, runtime and registry are built from
/// the config current at start.
pub async fn run_with(
    config: impl Into<LiveConfig>,
    events: Events,
    shutdown: impl Future<Output = ()>,
    interrupt: CancellationToken,
) -> anyhow::Result<()> {
    let live: LiveConfig = config.into();
    let config = live.current();
    let store = Arc::new(open_or_create_store(&config).await?);
    let registry = Arc::new(handlers(&config, &events)?);
    let dir = registry.dir().to_owned();
    let _watcher = Watcher::start(registry.clone())
        .with_context(|| format!("failed to watch handlers directory `{}`", dir.display()))?;
    let loading = tokio::spawn(load_all(registry.clone()));
    let stop_scheduling = CancellationToken::new();
    let scheduler = Scheduler::new(Ops::new(live.clone(), store.clone()), Arc::new(SystemClock));
    let scheduling = tokio::spawn(scheduler.run(stop_scheduling.clone().cancelled_owned()));
    let worker = Worker::new(store, registry, live, Arc::new(SystemClock))
        .with_events(events)
        .with_interrupt(interrupt);
    let shutdown = async {
        shutdown.await;
        stop_scheduling.cancel();
    };
    let result = worker.run(shutdown).await;
    stop_scheduling.cancel();
    let _ = scheduling.await;
    loading.abort();
    result
}

/// Opens the job store the configuration names for a job command, saying which one on
/// failure. An embedded store file that does not exist is refused, not created: only
/// `kiln run` creates stores.
pub async fn open_store(config: &Config) -> anyhow::Result<AnyStore> {
    named(
        &config.store,
        config
            .store
            .open(Role::Command, config.job_defaults())
            .await,
    )
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
    let store = named(
        &config.store,
        config.store.open(Role::Host, config.job_defaults()).await,
    )?;
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
