//! Kiln's configuration: `config.toml` plus `KILN_*` environment overrides, turned into a
//! validated [`Config`]. Two layers, as in ripgrep's low/high args: `raw.rs` mirrors the
//! file and denies unknown keys; `validate.rs` checks every value (units, ranges, references
//! between tables) and produces the typed settings below. Every error names the key as a
//! dotted path and the line (or environment variable) it came from; see [`ConfigError`].
//!
//! The keys, with their defaults (an empty file is a valid configuration):
//!
//! ```toml
//! [host]
//! handlers_dir = "handlers"          # directory of handler `.wasm` files, watched for changes
//! cache_dir = "kiln-cache"           # precompiled handler artifacts, keyed by content hash
//! concurrency = 16                   # global cap on jobs running at once on this host
//! # threads = 2                      # threads running jobs and store I/O (default: one per CPU)
//! shutdown_grace = "10s"             # how long running jobs may finish after a shutdown signal
//! lease = "30s"                      # how long a claimed job is held before another host may take it
//! unknown_handler_grace = "5m"       # a job whose handler is not loaded waits this long, then fails
//!
//! [store]
//! backend = "embedded"               # "embedded" or "redis"; inferred as redis when url/nodes is set
//! path = "kiln.db"                   # embedded: the SQLite file
//! durability = "normal"              # embedded: "normal" or "full" (fsync every commit)
//! # url = "redis://127.0.0.1:6379"   # redis: one server (redis:// or rediss://)
//! # nodes = ["redis://a:7000"]       # redis: cluster seed nodes (exclusive with url)
//!
//! [defaults]                         # per-job settings; queues and handlers override them
//! max_attempts = 3                   # attempts before a job fails for good (1 = no retries)
//! timeout = "30s"                    # wall-clock deadline of one attempt
//! memory = "64MiB"                   # linear-memory cap of one attempt
//! fuel = "unlimited"                 # or an integer: the CPU (fuel) budget of one attempt
//! backoff = { initial = "1s", max = "5m", jitter = 0.2 }
//! retention = { succeeded = { count = 1000, age = "1d" }, failed = { count = 10000, age = "7d" } }
//! max_result = "1MiB"                # cap on a handler's result bytes
//! max_log = "64KiB"                  # cap on captured log/stdout/stderr per attempt
//!
//! [queues.NAME]                      # `default` always exists
//! concurrency = 16                   # jobs of this queue running at once (default: host.concurrency)
//! priority = 0                       # default priority of jobs enqueued on this queue
//! paused = false                     # a paused queue accepts jobs but runs none
//! # ...and any [defaults] key
//!
//! [handlers.NAME]                    # NAME is the `.wasm` file stem
//! queue = "default"                  # must name a queue; where jobs of this handler go
//! grants = { env = { KEY = "value" }, dir = "/srv/assets" }   # opt-in WASI access
//! # ...and any [defaults] key except retention
//! ```
//!
//! Relative paths (`handlers_dir`, `cache_dir`, `store.path`, `grants.dir`) resolve against
//! the directory of the config file, also when set by an environment override.

mod env;
mod error;
mod raw;
mod units;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, Location};

/// The name of the queue that always exists and that handlers use unless configured otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// A validated configuration. Build it with [`Config::load`] or [`Config::from_toml_str`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from; relative paths were resolved against its
    /// directory.
    pub source: PathBuf,
    pub host: HostConfig,
    pub store: StoreConfig,
    /// Per-job settings for jobs whose queue and handler override nothing.
    pub defaults: JobSettings,
    /// Retention of finished jobs on queues that do not set their own.
    pub default_retention: Retention,
    /// Every configured queue by name, always including [`DEFAULT_QUEUE`].
    pub queues: BTreeMap<String, QueueConfig>,
    /// Handlers that have a `[handlers.NAME]` table. A loaded handler without one uses the
    /// default queue and the queue's settings.
    pub handlers: BTreeMap<String, HandlerConfig>,
}

/// `[host]`: how this process runs jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Directory of handler `.wasm` files; a handler's name is its file stem.
    pub handlers_dir: PathBuf,
    /// Where precompiled handler artifacts are cached, so a restart does not recompile.
    pub cache_dir: PathBuf,
    /// Global cap on jobs running at once on this host, across all queues; bounds memory use
    /// since every running job holds its own sandbox.
    pub concurrency: usize,
    /// Threads that run jobs and talk to the job store; `None` is one per CPU. Fewer leave
    /// cores to other processes, such as a `redis-server` on the same machine.
    pub threads: Option<usize>,
    /// After a shutdown signal, how long running jobs may finish before they are interrupted
    /// and returned to their queue.
    pub shutdown_grace: Duration,
    /// How long a claimed job belongs to this host; a host that dies loses its jobs to
    /// others once their leases expire. Renewed while the job runs.
    pub lease: Duration,
    /// How long a job whose handler is not loaded waits (for a deploy to catch up) before it
    /// fails.
    pub unknown_handler_grace: Duration,
}

/// `[store]`: where jobs are kept.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// One SQLite file, shared by the host and the CLI on this machine.
    Embedded {
        /// The database file; created if missing.
        path: PathBuf,
        durability: Durability,
    },
    /// Redis, shared by hosts on many machines; with the PEM file of the certificate
    /// authority to trust for `rediss://` instead of the system's.
    Redis(RedisTarget, Option<PathBuf>),
}

/// How hard the embedded store works to keep committed jobs across a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL with `synchronous = NORMAL`: a crash of the process loses nothing, a power loss
    /// may lose the last commits.
    Normal,
    /// `synchronous = FULL`: every commit is fsynced.
    Full,
}

/// Which Redis deployment the store talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (or a proxy), by `redis://` or `rediss://` URL.
    Server(String),
    /// A Redis Cluster, by the URLs of some of its nodes.
    Cluster(Vec<String>),
}

/// `[queues.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Jobs of this queue running at once on this host (also bounded by
    /// [`HostConfig::concurrency`]).
    pub concurrency: usize,
    /// Priority given to jobs enqueued on this queue without an explicit one; higher runs first.
    pub priority: i32,
    /// Whether the queue is configured paused: it accepts jobs but runs none.
    /// `kiln pause`/`kiln resume` change a queue's state at run time.
    pub paused: bool,
    /// How long finished jobs of this queue are kept.
    pub retention: Retention,
    /// Per-job keys set on this queue.
    overrides: Overrides,
}

/// `[handlers.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerConfig {
    /// The queue jobs of this handler are enqueued on when the producer names none.
    pub queue: String,
    /// What the handler's sandbox may reach beyond the deny-everything default.
    pub grants: Grants,
    /// Per-job keys set on this handler.
    overrides: Overrides,
}

/// Opt-in WASI access for one handler. The default grants nothing: no environment
/// variables, no directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Environment variables visible to the handler, name to value. Values come from the
    /// config, never from the host's own environment.
    pub env: BTreeMap<String, String>,
    /// One host directory the handler may read, preopened read-only; the runtime chooses the
    /// path the guest sees it under.
    pub dir: Option<PathBuf>,
}

/// Everything that governs one attempt of one job, resolved from handler > queue > defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    /// Attempts before the job fails for good; 1 means no retries.
    pub max_attempts: u32,
    /// Wall-clock deadline of one attempt; the sandbox is dropped when it passes.
    pub timeout: Duration,
    /// Cap on the sandbox's linear memory in bytes.
    pub memory: u64,
    /// CPU budget of one attempt in wasmtime fuel units; `None` is unlimited.
    pub fuel: Option<u64>,
    /// Delay before each retry.
    pub backoff: Backoff,
    /// Cap on the bytes a handler may return as its result; more is an error, not host memory.
    pub max_result: u64,
    /// Cap on the bytes of log, stdout and stderr captured per attempt.
    pub max_log: u64,
    /// The handler's WASI grants (empty unless the handler configures some).
    pub grants: Grants,
}

/// Exponential backoff: `initial`, doubling per failed attempt, capped at `max`, shortened
/// by up to `jitter` (a fraction) at random so jobs that failed together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// No delay is longer than this, however many attempts have failed.
    pub max: Duration,
    /// In `0.0..=1.0`; 0 retries at exactly the computed delay.
    pub jitter: f64,
}

impl Backoff {
    /// The delay before the retry that follows failed attempt number `attempt` (1-based;
    /// 0 is treated as 1): `initial * 2^(attempt-1)`, at most `max`, then multiplied by
    /// `1 - jitter * rand`. `rand` is a uniform sample in `0.0..=1.0` supplied by the caller,
    /// which keeps this function pure. The result never exceeds `max`.
    pub fn delay(&self, attempt: u32, rand: f64) -> Duration {
        let mut base = self.initial.min(self.max);
        for _ in 1..attempt {
            if base >= self.max {
                break;
            }
            base = base.saturating_mul(2);
        }
        let base = base.min(self.max);
        let cut = self.jitter.clamp(0.0, 1.0) * rand.clamp(0.0, 1.0);
        if cut == 0.0 {
            base
        } else {
            base.mul_f64(1.0 - cut)
        }
    }
}

/// How many finished jobs of a queue are kept, and for how long. Older or surplus jobs are
/// deleted so the store does not grow without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Jobs that succeeded; usually only kept for inspection, so kept briefly.
    pub succeeded: Keep,
    /// Jobs that failed for good (the dead letters); kept longer so they can be retried.
    pub failed: Keep,
}

/// One side of a [`Retention`]: a job is deleted once it is beyond the newest `count` or
/// older than `age`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// How many of the newest finished jobs are kept at most.
    pub count: u64,
    /// How long after finishing a job is kept at most.
    pub age: Duration,
}

impl Keep {
    /// Whether no finished job is kept at all (a count or an age of zero).
    pub fn keeps_none(&self) -> bool {
        self.count == 0 || self.age.is_zero()
    }
}

/// Per-job keys set on one queue or handler table; `None` inherits.
#[derive(Debug, Clone, Default, PartialEq)]
struct Overrides {
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    memory: Option<u64>,
    /// `Some(None)` is an explicit `fuel = "unlimited"`.
    fuel: Option<Option<u64>>,
    backoff_initial: Option<Duration>,
    backoff_max: Option<Duration>,
    backoff_jitter: Option<f64>,
    max_result: Option<u64>,
    max_log: Option<u64>,
}

impl Overrides {
    fn apply_to(&self, settings: &mut JobSettings) {
        let s = settings;
        s.max_attempts = self.max_attempts.unwrap_or(s.max_attempts);
        s.timeout = self.timeout.unwrap_or(s.timeout);
        s.memory = self.memory.unwrap_or(s.memory);
        s.fuel = self.fuel.unwrap_or(s.fuel);
        s.backoff.initial = self.backoff_initial.unwrap_or(s.backoff.initial);
        s.backoff.max = self.backoff_max.unwrap_or(s.backoff.max);
        s.backoff.jitter = self.backoff_jitter.unwrap_or(s.backoff.jitter);
        s.max_result = self.max_result.unwrap_or(s.max_result);
        s.max_log = self.max_log.unwrap_or(s.max_log);
    }
}

impl Config {
    /// Reads `path` and applies `KILN_*` overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path, std::env::vars())
    }

    /// Builds a configuration from TOML `text` as if read from `origin` (used in messages
    /// and to resolve relative paths), with overrides taken from `env` instead of the process
    /// environment.
    pub fn from_toml_str(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        validate::build(text, origin, env::overrides(env))
    }

    /// The queue a handler's jobs go to when the producer names none: its configured queue,
    /// else [`DEFAULT_QUEUE`].
    pub fn queue_for(&self, handler: &str) -> &str {
        self.handlers
            .get(handler)
            .map_or(DEFAULT_QUEUE, |h| h.queue.as_str())
    }

    /// The settings for a job of `handler` on `queue`: the handler's keys win over the
    /// queue's, which win over `[defaults]`. An unconfigured handler or queue adds nothing.
    pub fn job_settings(&self, handler: &str, queue: &str) -> JobSettings {
        let mut settings = self.defaults.clone();
        if let Some(queue) = self.queues.get(queue) {
            queue.overrides.apply_to(&mut settings);
        }
        if let Some(handler) = self.handlers.get(handler) {
            handler.overrides.apply_to(&mut settings);
            settings.grants = handler.grants.clone();
        }
        settings
    }

    /// Retention of finished jobs on `queue` (the defaults for an unconfigured queue).
    pub fn retention(&self, queue: &str) -> Retention {
        self.queues
            .get(queue)
            .map_or(self.default_retention, |q| q.retention)
    }

    /// The largest memory cap any job may get under this configuration: what the runtime's
    /// pooling allocator must reserve per instance slot.
    pub fn max_job_memory(&self) -> u64 {
        let queues = self.queues.values().filter_map(|q| q.overrides.memory);
        let handlers = self.handlers.values().filter_map(|h| h.overrides.memory);
        queues.chain(handlers).fold(self.defaults.memory, u64::max)
    }
}
