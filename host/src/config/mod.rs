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
//! retention = { succeeded = { count = 1000, age = "1d" }, failed = { count = 10000, age = "7d" },
//!               cancelled = { count = 10000, age = "7d" } }
//! max_result = "1MiB"                # cap on a handler's result bytes
//! max_payload = "1MiB"               # cap on a job's payload, from any producer
//! max_log = "64KiB"                  # cap on captured log/stdout/stderr per attempt
//! http_max_in_flight = 8             # outbound HTTP requests one attempt may have in flight
//! http_connect_timeout = "10s"       # how long one outbound connection (TCP + TLS) may take
//!
//! [queues.NAME]                      # `default` always exists
//! concurrency = 16                   # jobs of this queue running at once (default: host.concurrency)
//! priority = 0                       # default priority of jobs enqueued on this queue
//! paused = false                     # a paused queue accepts jobs but runs none
//! grants = { http = ["https://api.partner.example"] }   # for every handler on the queue
//! # ...and any [defaults] key
//!
//! [handlers.NAME]                    # NAME is the `.wasm` file stem
//! queue = "default"                  # must name a queue; where jobs of this handler go
//! grants = { env = { KEY = "value" }, dir = "/srv/assets" }   # opt-in WASI access, added
//!                                    # to the queue's grants; also (see capabilities/):
//! # grants.http = ["https://api.mail.example", "http://127.0.0.1:*", "https://*.p.example:8443"]
//! # grants.http_ca_file = "certs/ca.pem"   # a CA trusted for HTTPS besides the system roots
//! # grants.tcp = ["smtp.example.com:587", "127.0.0.1:5432"]
//! # ...and any [defaults] key except retention
//!
//! [[schedules]]                      # any number; see the README's "Schedules"
//! name = "nightly-cleanup"           # unique
//! handler = "cleanup"                # must be a handler this config or the directory knows
//! cron = "0 0 * * *"                 # 5 fields as in crontab, or 6 with seconds first
//! timezone = "Europe/Madrid"         # IANA name (default "UTC")
//! payload = { older_than = "30d" }   # any TOML value, handed to the handler as JSON
//! queue = "maintenance"              # default: the handler's queue
//! misfire = "skip"                   # or "run-once": one catch-up tick after hosts were down
//! ```
//!
//! Relative paths (`handlers_dir`, `cache_dir`, `store.path`, `grants.dir`,
//! `grants.http_ca_file`) resolve against
//! the directory of the config file, also when set by an environment override.

mod diff;
mod env;
mod error;
mod live;
mod raw;
mod schedules;
mod units;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diff::describe_changes;
pub use error::{ConfigError, Location};
pub use live::LiveConfig;
pub use schedules::{Misfire, ScheduleConfig};

/// Parses a byte size as config values are written (`64MiB`, `10MB`, `1000`), for command
/// line flags; the error is a phrase naming the text.
pub fn parse_size(text: &str) -> Result<u64, String> {
    units::size(&raw::Scalar::Text(text.to_owned()))
}

pub use crate::capabilities::Grants;
pub use crate::limits::JobLimits;
use crate::store::JobDefaults;
pub use crate::store::{Durability, Keep, RedisTarget, Retention, RetentionPolicy, StoreConfig};

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
    /// How long finished jobs are kept: each configured queue's own, `[defaults]` for the rest.
    pub retention: RetentionPolicy,
    /// Every configured queue by name, always including [`DEFAULT_QUEUE`].
    pub queues: BTreeMap<String, QueueConfig>,
    /// Handlers that have a `[handlers.NAME]` table. A loaded handler without one uses the
    /// default queue and the queue's settings.
    pub handlers: BTreeMap<String, HandlerConfig>,
    /// `[[schedules]]`, in file order; names are unique.
    pub schedules: Vec<ScheduleConfig>,
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
    /// Wall-clock and CPU time one handler file may take to compile; a component built to
    /// make the compiler spin (deeply nested blocks) is refused past it.
    pub compile_timeout: Duration,
    /// Memory one compile may allocate, for the same attacker.
    pub compile_memory: u64,
    /// The largest handler file compiled at all.
    pub max_handler_size: u64,
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
    /// What every handler's sandbox on this queue may reach; a handler's own grants add to it.
    pub grants: Grants,
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

/// Everything that governs one attempt of one job, resolved from handler > queue > defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    /// Attempts before the job fails for good; 1 means no retries.
    pub max_attempts: u32,
    /// Delay before each retry.
    pub backoff: Backoff,
    /// What one attempt may use: deadline, memory, fuel, output caps. Handed to the sandbox
    /// as it is.
    pub limits: JobLimits,
    /// What the handler's sandbox may reach beyond the deny-everything default.
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
    max_result: Option<usize>,
    max_payload: Option<usize>,
    max_log: Option<usize>,
    http_max_in_flight: Option<usize>,
    http_connect_timeout: Option<Duration>,
}

impl Overrides {
    fn apply_to(&self, settings: &mut JobSettings) {
        let s = settings;
        s.max_attempts = self.max_attempts.unwrap_or(s.max_attempts);
        s.backoff.initial = self.backoff_initial.unwrap_or(s.backoff.initial);
        s.backoff.max = self.backoff_max.unwrap_or(s.backoff.max);
        s.backoff.jitter = self.backoff_jitter.unwrap_or(s.backoff.jitter);
        let l = &mut s.limits;
        l.timeout = self.timeout.unwrap_or(l.timeout);
        l.memory = self.memory.unwrap_or(l.memory);
        l.fuel = self.fuel.unwrap_or(l.fuel);
        l.max_result = self.max_result.unwrap_or(l.max_result);
        l.max_payload = self.max_payload.unwrap_or(l.max_payload);
        l.max_log = self.max_log.unwrap_or(l.max_log);
        let h = &mut l.http;
        h.max_in_flight = self.http_max_in_flight.unwrap_or(h.max_in_flight);
        h.connect_timeout = self.http_connect_timeout.unwrap_or(h.connect_timeout);
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
        validate::build(text, origin, env::overrides(env)?)
    }

    /// The queue a handler's jobs go to when the producer names none: its configured queue,
    /// else [`DEFAULT_QUEUE`].
    pub fn queue_for(&self, handler: &str) -> &str {
        self.handlers
            .get(handler)
            .map_or(DEFAULT_QUEUE, |h| h.queue.as_str())
    }

    /// The settings for a job of `handler` on `queue`: the handler's keys win over the
    /// queue's, which win over `[defaults]`, and the handler's grants add to the queue's
    /// ([`Grants::add`]). An unconfigured handler or queue adds nothing.
    pub fn job_settings(&self, handler: &str, queue: &str) -> JobSettings {
        let mut settings = self.defaults.clone();
        if let Some(queue) = self.queues.get(queue) {
            queue.overrides.apply_to(&mut settings);
            settings.grants = queue.grants.clone();
        }
        if let Some(handler) = self.handlers.get(handler) {
            handler.overrides.apply_to(&mut settings);
            settings.grants.add(&handler.grants);
        }
        settings
    }

    /// Retention of finished jobs on `queue` (the defaults for an unconfigured queue).
    pub fn retention(&self, queue: &str) -> Retention {
        self.retention.of(queue)
    }

    /// What a job record left without a priority or `max_attempts` (by an outside Redis
    /// producer) takes: the queue's priority, and `max_attempts` handler > queue > defaults.
    pub fn job_defaults(&self) -> JobDefaults {
        let max_attempts = self.defaults.max_attempts;
        JobDefaults {
            queue_priority: (self.queues.iter())
                .map(|(name, q)| (name.clone(), q.priority))
                .collect(),
            queue_max_attempts: (self.queues.iter())
                .map(|(name, q)| {
                    (
                        name.clone(),
                        q.overrides.max_attempts.unwrap_or(max_attempts),
                    )
                })
                .collect(),
            handler_max_attempts: (self.handlers.iter())
                .filter_map(|(name, h)| Some((name.clone(), h.overrides.max_attempts?)))
                .collect(),
            max_attempts,
        }
    }

    /// The largest memory cap any job may get under this configuration: what the runtime's
    /// pooling allocator must reserve per instance slot.
    pub fn max_job_memory(&self) -> u64 {
        let queues = self.queues.values().filter_map(|q| q.overrides.memory);
        let handlers = self.handlers.values().filter_map(|h| h.overrides.memory);
        queues
            .chain(handlers)
            .fold(self.defaults.limits.memory, u64::max)
    }
}
