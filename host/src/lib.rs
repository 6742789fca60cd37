//! Kiln runs background jobs whose handlers are WebAssembly components.
//!
//! Layout:
//! - `bindings`: the only `bindgen!` of the `kiln:handler` world.
//! - `engine`: the wasmtime engine, epoch ticker, linker and pool slots ([`Runtime`]).
//! - `limits`: per-job limits and the memory limiter.
//! - `host_api`: what a guest may call, and the capped job log.
//! - `sandbox`: one attempt in a fresh store, and how it ended ([`Outcome`]).
//! - `registry`: handler name -> loaded version; compiling and the artifact cache.
//! - `reload`: the watcher that keeps the registry in step with the handlers directory.
//! - `store`: the `JobStore` contract and its embedded (SQLite) and Redis implementations.
//! - `config`: `config.toml` (raw TOML -> validated `Config`, env overrides).
//! - `cli`: the `kiln` command line.
//! - `logging`: where the binary's `tracing` output goes.

pub mod bindings;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod engine;
pub mod host_api;
pub mod limits;
pub mod logging;
pub mod registry;
pub mod reload;
pub mod sandbox;
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
