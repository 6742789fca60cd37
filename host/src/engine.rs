//! The wasmtime `Engine` shared by every job, its epoch ticker and the linker.
//!
//! One [`Runtime`] per host. It owns the engine (pooling allocator, epoch interruption, fuel),
//! the thread that advances the epoch, the linker with WASI p2, `wasi:http` and the Kiln host
//! interface (every handler gets them all; grants decide per attempt what they reach), the
//! host's TLS configurations for handlers' HTTPS, and the semaphore that keeps
//! instantiations within the pool's slots.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::Handler;
use crate::capabilities::{self, http::TlsConfigs};
use crate::host_api::JobCtx;
use crate::registry::CompileBudget;

/// Guest frames kept in a trap's backtrace: enough to find the fault, bounded in size.
const MAX_BACKTRACE_FRAMES: usize = 32;

/// How long one epoch tick lasts: the granularity of deadlines and of cooperative yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Core instances a handler component may create; Rust guests use a handful (the program,
/// the WASI adapter, shims), other toolchains a few more.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Linear memories per component; a component usually has one or two.
const MEMORIES_PER_COMPONENT: u32 = 4;
/// Tables per component (the program's function table plus adapter shims).
const TABLES_PER_COMPONENT: u32 = 8;
/// Memory and table pages kept resident in a pool slot between jobs: re-zeroing them is
/// cheaper than unmapping, and without it two threads instantiating were slower than one.
const KEEP_RESIDENT: usize = 1 << 20;

/// The settings an engine is built with. They decide which precompiled artifacts it accepts,
/// so they are part of the artifact cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Handler instances that may run at once (the host's global concurrency); sizes the pool.
    pub max_instances: u32,
    /// The largest per-job memory cap any handler may get, in bytes; sizes each pool slot.
    pub max_memory: u64,
    /// Use the pooling allocator (fast instantiation); off only for comparison benchmarks.
    pub pooling: bool,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            max_instances: 64,
            max_memory: 256 << 20,
            pooling: true,
        }
    }
}

/// The wasmtime side of a host: engine, linker, epoch ticker and pool slots.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<JobCtx>,
    /// One permit per pool slot: a job waits here instead of failing with a pool error.
    pub(crate) slots: Arc<Semaphore>,
    /// Hash of the engine's compilation settings, part of every cache key.
    pub(crate) settings_hash: String,
    /// TLS client configurations for handlers' HTTPS, shared by every attempt.
    pub(crate) tls: Arc<TlsConfigs>,
    /// The largest memory cap of any job ([`RuntimeSettings::max_memory`]): a component that
    /// needs more before it runs is refused at load.
    pub(crate) max_memory: u64,
    /// The settings the engine was built with, for a compiler child to build the same one.
    pub(crate) settings: RuntimeSettings,
    /// When set, components compile in a child process under this budget.
    pub(crate) compile_budget: Option<CompileBudget>,
    ticker: Ticker,
}

impl Runtime {
    /// Builds the engine, links WASI p2 and the host interface, and starts the epoch ticker.
    pub fn new(settings: RuntimeSettings) -> anyhow::Result<Runtime> {
        let engine = Engine::new(&engine_config(&settings)).context("failed to build engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).context("failed to link WASI")?;
        capabilities::tcp::add_to_linker(&mut linker).context("failed to link name lookup")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .context("failed to link wasi:http")?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |ctx| ctx)
            .context("failed to link the kiln host interface")?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let settings_hash = format!("{:016x}", hasher.finish());
        Ok(Runtime {
            slots: Arc::new(Semaphore::new(settings.max_instances as usize)),
            ticker: Ticker::start(engine.clone())
                .map_err(wasmtime::Error::from)
                .context("failed to start the epoch ticker")?,
            engine,
            linker,
            settings_hash,
            tls: Arc::default(),
            max_memory: settings.max_memory,
            settings,
            compile_budget: None,
        })
    }

    /// Compiles every component in a child process under `budget` (see
    /// `registry::compiler`), instead of in this process without a limit.
    pub fn with_compile_budget(mut self, budget: CompileBudget) -> Self {
        self.compile_budget = Some(budget);
        self
    }

    /// The wasmtime engine, for callers that compile or inspect components.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

pub(crate) fn engine_config(settings: &RuntimeSettings) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(true);
    config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(MAX_BACKTRACE_FRAMES));
    // Each file compiles on its own blocking thread. Within one file, wasmtime would share
    // one process-wide thread pool among every compile, so a file that takes minutes to
    // compile would hold up every other file's functions behind its own.
    config.parallel_compilation(false);
    if settings.pooling {
        let max = settings.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(max)
            .total_core_instances(max * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(max * MEMORIES_PER_COMPONENT)
            .total_tables(max * TABLES_PER_COMPONENT)
            .total_stacks(max)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX))
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`].
///
/// It sleeps until an absolute instant rather than a fixed interval, so ticks do not drift
/// (a relative sleep stretched a 200 ms deadline by ~10%).
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-epoch".into())
            .spawn(move || {
                let mut next = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    next += EPOCH_TICK;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                    engine.increment_epoch();
                }
            })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
