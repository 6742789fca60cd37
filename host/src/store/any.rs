//! The store chosen at run time: [`StoreConfig`] (what `[store]` in the config names) and
//! [`AnyStore`], an enum that delegates each `JobStore` call to the embedded or the Redis
//! store, so callers stay generic-free and nothing needs `dyn`. [`Role`] says who opens
//! it: a host (creates a missing file, rides out Redis restarts) or a job command (refuses a
//! missing file, fails fast on an unreachable Redis).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    CancelOutcome, Durability, EmbeddedStore, Enqueued, Job, JobDefaults, JobStore, ListFilter,
    NewJob, Page, Patience, Progress, QueueCounts, RedisStore, RedisTarget, RenewReport,
    RetentionPolicy, RetryTarget, ScheduleRecord, Settlement, StoreResult, Timestamp,
};

/// Where jobs are kept: `[store]` in the config, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// One SQLite file, shared by the host and the CLI on this machine.
    Embedded {
        /// The database file; created if missing by `kiln run` only.
        path: PathBuf,
        durability: Durability,
    },
    /// Redis (one server or a cluster), shared by hosts on many machines.
    Redis(RedisTarget),
}

/// Who opens a store, which decides how forgiving opening and using it are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `kiln run`: creates a missing embedded store file (and says so in its log), and
    /// rides out a Redis restart by reconnecting with backoff ([`Patience::RideOut`]).
    Host,
    /// A job command: refuses a missing embedded store file (`StoreError::Missing`), and
    /// gives Redis one connect attempt and each reply a short timeout
    /// ([`Patience::FailFast`]), so an unreachable store ends the command with an error.
    Command,
}

impl StoreConfig {
    /// Opens the store this names for `role`: the SQLite file (on a blocking thread), or a
    /// connection to Redis that gives jobs an outside producer left without priority or
    /// max_attempts the values in `defaults` (`Config::job_defaults`).
    pub async fn open(&self, role: Role, defaults: JobDefaults) -> StoreResult<AnyStore> {
        match self {
            StoreConfig::Embedded { path, durability } => {
                let (path, durability) = (path.clone(), *durability);
                let open = tokio::task::spawn_blocking(move || match role {
                    Role::Host => EmbeddedStore::open(path, durability),
                    Role::Command => EmbeddedStore::open_existing(path, durability),
                });
                let store = open.await.map_err(|join| super::StoreError::Backend {
                    context: "open the job store".to_owned(),
                    source: Box::new(join),
                })??;
                Ok(AnyStore::Embedded(store))
            }
            StoreConfig::Redis(target) => {
                let patience = match role {
                    Role::Host => Patience::RideOut,
                    Role::Command => Patience::FailFast,
                };
                let target = target.clone().with_patience(patience);
                let store = RedisStore::open_with_defaults(target, defaults).await?;
                Ok(AnyStore::Redis(store))
            }
        }
    }
}

impl std::fmt::Display for StoreConfig {
    /// The store as an error message names it: the file, or the Redis URLs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Embedded { path, .. } => write!(f, "`{}`", path.display()),
            StoreConfig::Redis(target) => write!(f, "redis at {}", target.urls().join(", ")),
        }
    }
}

/// The store chosen at run time from configuration. An enum that delegates, so callers stay
/// generic-free and nothing needs `dyn`.
#[derive(Clone)]
pub enum AnyStore {
    /// The SQLite file store.
    Embedded(EmbeddedStore),
    /// The Redis (or Redis Cluster) store shared by many hosts.
    Redis(RedisStore),
}

impl AnyStore {
    /// Opens (creating if needed) the SQLite store at `path` with the default durability.
    /// Blocks briefly on file I/O; call it at start-up.
    pub fn open_embedded(path: impl AsRef<Path>) -> StoreResult<AnyStore> {
        EmbeddedStore::open(path, Durability::default()).map(AnyStore::Embedded)
    }

    /// Connects to the Redis store at `target`; fails if no node answers.
    pub async fn open_redis(target: RedisTarget) -> StoreResult<AnyStore> {
        RedisStore::open(target).await.map(AnyStore::Redis)
    }
}

/// Forwards one `JobStore` call to whichever store the enum holds.
macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Embedded($store) => $call.await,
            AnyStore::Redis($store) => $call.await,
        }
    };
}

impl JobStore for AnyStore {
    async fn check(&self) -> StoreResult<()> {
        delegate!(self, s => s.check())
    }

    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> StoreResult<Vec<Enqueued>> {
        delegate!(self, s => s.enqueue(jobs, now))
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<Vec<Job>> {
        delegate!(self, s => s.claim(queue, max, owner, lease, now))
    }

    async fn renew(
        &self,
        ids: &[String],
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<RenewReport> {
        delegate!(self, s => s.renew(ids, owner, lease, now))
    }

    async fn settle(&self, batch: Vec<Settlement>, now: Timestamp) -> StoreResult<Vec<String>> {
        delegate!(self, s => s.settle(batch, now))
    }

    async fn progress(
        &self,
        id: &str,
        owner: &str,
        progress: Progress,
        now: Timestamp,
    ) -> StoreResult<()> {
        delegate!(self, s => s.progress(id, owner, progress, now))
    }

    async fn recover(&self, now: Timestamp) -> StoreResult<usize> {
        delegate!(self, s => s.recover(now))
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Job>> {
        delegate!(self, s => s.get(id))
    }

    async fn list(&self, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
        delegate!(self, s => s.list(filter, page))
    }

    async fn counts(&self) -> StoreResult<Vec<QueueCounts>> {
        delegate!(self, s => s.counts())
    }

    async fn retry_failed(&self, target: RetryTarget, now: Timestamp) -> StoreResult<usize> {
        delegate!(self, s => s.retry_failed(target, now))
    }

    async fn cancel(&self, id: &str, now: Timestamp) -> StoreResult<CancelOutcome> {
        delegate!(self, s => s.cancel(id, now))
    }

    async fn pause(&self, queue: &str) -> StoreResult<()> {
        delegate!(self, s => s.pause(queue))
    }

    async fn resume(&self, queue: &str) -> StoreResult<()> {
        delegate!(self, s => s.resume(queue))
    }

    async fn clear(&self, queue: &str) -> StoreResult<usize> {
        delegate!(self, s => s.clear(queue))
    }

    async fn prune(&self, policy: &RetentionPolicy, now: Timestamp) -> StoreResult<usize> {
        delegate!(self, s => s.prune(policy, now))
    }

    async fn wait(&self, queues: &[String], now: Timestamp, timeout: Duration) -> StoreResult<()> {
        delegate!(self, s => s.wait(queues, now, timeout))
    }

    async fn unpark(&self, handler: &str, queues: &[String], now: Timestamp) -> StoreResult<usize> {
        delegate!(self, s => s.unpark(handler, queues, now))
    }

    async fn next_run_at(&self, queues: &[String]) -> StoreResult<Option<Timestamp>> {
        delegate!(self, s => s.next_run_at(queues))
    }

    async fn enqueue_tick(&self, job: NewJob, now: Timestamp) -> StoreResult<Option<Enqueued>> {
        delegate!(self, s => s.enqueue_tick(job, now))
    }

    async fn schedule_records(
        &self,
        schedules: &[(String, String)],
    ) -> StoreResult<Vec<Option<ScheduleRecord>>> {
        delegate!(self, s => s.schedule_records(schedules))
    }
}
