//! Kiln runs background jobs whose handlers are WebAssembly components.
//!
//! Layout (front ends over one core):
//! - `cli/`: the `kiln` command line: `mod.rs` parses arguments and maps errors to exit
//!   codes, `jobs.rs` the job and queue commands, `handlers.rs` `check` and `handlers`,
//!   `schedules.rs` `schedules` and `schedules trigger`, `host.rs` `run` and its signals.
//!   Every command calls `ops`.
//! - `ops/`: one function per producer or admin action (enqueue, get, list, retry, cancel,
//!   pause, resume, clear, stats, handlers, check, schedules, trigger), their typed `OpsError`, and `JobView`,
//!   the job as users see it.
//! - `host`: `host::run(config, shutdown)`, one host: store, runtime, registry, reloader,
//!   scheduler and worker started side by side.
//! - `worker/`: `claim.rs` the claim loops, `queues.rs` their set as the config changes, `attempt.rs` one attempt to its settlement and the
//!   retry policy, `settler.rs` batched settles, `renewer.rs` lease renewal, `contact.rs`
//!   when the store has answered steadily enough to take leases back, `reaper.rs` recovery
//!   of expired leases and pruning.
//! - `scheduler`: cron ticks of `[[schedules]]` -> jobs, once per tick across hosts, with
//!   the misfire policies.
//! - `cron`: cron expressions and their fire times in a time zone (the daylight-saving rule).
//! - `events`: the observer of attempts, settlements and handler loads; the log lines are one.
//! - `clock`: where the time comes from (tests drive it).
//! - `engine`: the wasmtime engine, epoch ticker, linker and pool slots ([`Runtime`]).
//! - `capabilities/`: what a handler may be granted, one file each (`wasi` base, `env`,
//!   `dir`, `http`, `tcp`; `net` holds the host-pattern and internal-address rules both
//!   network grants share), and the one [`Grants`] type.
//! - `sandbox`: one attempt in a fresh store, its deadline, and how it ended ([`Outcome`]).
//! - `limits`: per-job limits ([`JobLimits`]) and the memory limiter.
//! - `host_api`: what a guest may call (log, progress, enqueue).
//! - `journal`: an attempt's capped log, and what of it reaches the host's own log.
//! - `bindings`: the only `bindgen!` of the `kiln:handler` world.
//! - `registry/`: `mod.rs` the handler name -> loaded version map (install, refuse, remove),
//!   `loader.rs` reading, compiling, the artifact cache and type-checking one file.
//! - `reload/`: `mod.rs` the watcher that keeps the registry in step with the handlers
//!   directory, `config_file.rs` config reload on SIGHUP and on a change of the config
//!   file (refused when invalid, restart-only settings kept).
//! - `store/`: the `JobStore` contract (`mod.rs`), the job types (`job.rs`), retention
//!   (`retention.rs`), the lifecycle rules both stores apply: no attempts left, lost
//!   attempts, cancel requested (`lifecycle.rs`), the store chosen by config (`any.rs`),
//!   and what fields an outside producer left out resolve to (`defaults.rs`).
//!   - `store/embedded/`: the SQLite store: `schema.rs`, `codec.rs` (rows), `lifecycle.rs`
//!     (enqueue, claim, renew, settle, recover transactions), `admin.rs`, `wait.rs`.
//!   - `store/redis/`: the Redis store: `conn.rs` (connections, TLS), `wake.rs` (wake-ups),
//!     `keys.rs`, `record.rs` (the record codec), `scripts.rs` (scripts and their replies),
//!     `store.rs` (claim, renew, progress), `settle.rs` (settling), `reaper.rs`
//!     (expired leases, promotion, waking parked jobs), `admin.rs`, and the Lua scripts.
//! - `config/`: `config.toml` (raw TOML -> validated `Config`, env overrides), which hands
//!   each part its settings; `live.rs` the swappable `LiveConfig` a host reads, `diff.rs`
//!   what a reload changed.
//! - `logging`: where the binary's `tracing` output goes; a host's through a bounded queue.

pub mod bindings;
pub mod capabilities;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cron;
pub mod engine;
pub mod events;
pub mod host;
pub mod host_api;
pub mod journal;
pub mod limits;
pub mod logging;
pub mod ops;
pub mod registry;
pub mod reload;
pub mod sandbox;
pub mod scheduler;
pub mod store;
pub mod worker;

/// Every job allocates (a store, its context, Redis replies) and frees it all again; with the
/// system allocator, malloc and free were about a fifth of the host's CPU time in the Redis
/// benchmark. Declared in the library so the binary, the benches and the tests share it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use capabilities::Grants;
pub use engine::{Runtime, RuntimeSettings};
pub use host_api::{ChildEnqueuer, ChildRequest, JobHooks, LogLine, LogSource};
pub use limits::JobLimits;
pub use registry::{Change, LoadError, LoadedHandler, Registry};
pub use sandbox::{Attempt, ErrorKind, JobInput, Outcome};
