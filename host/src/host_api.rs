//! What a guest may call: the `kiln:handler/host` interface and the WASI view of a job.
//!
//! [`JobCtx`] is the state of one wasmtime `Store`, which lives for exactly one attempt.
//! Log lines and stdout/stderr go into the attempt's size-capped [`Journal`] (`journal`). Nothing here blocks: host calls only append to memory
//! or hand work to the hooks the caller supplied.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::bindings::{EnqueueOptions, HostImports, Level, TypesImports};
use crate::capabilities::http::HttpCtx;
use crate::capabilities::tcp::TcpState;
pub use crate::journal::{CaptureStream, Journal, LogLine, LogSource, stored_log};
use crate::limits::MemoryLimiter;

/// Longest progress note kept; a guest cannot push unbounded strings into the job store.
const MAX_PROGRESS_MESSAGE: usize = 1024;
/// Most child jobs one attempt may enqueue, so a buggy fan-out cannot flood a queue.
const MAX_CHILDREN_PER_ATTEMPT: usize = 10_000;

/// A child job a handler asked for through `host.enqueue`; the enqueuer resolves what it
/// leaves out as for any producer (`ops`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRequest {
    /// The job whose handler asked, named in the log line that records the child.
    pub parent_id: String,
    pub handler: String,
    pub payload: Vec<u8>,
    pub queue: Option<String>,
    pub delay: Option<Duration>,
    pub priority: Option<i32>,
    pub unique_key: Option<String>,
}

/// The future of a child enqueue: the new job's id, or why it was refused.
pub type EnqueueFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Where child jobs go; the worker provides one backed by the job store.
pub trait ChildEnqueuer: Send + Sync + 'static {
    fn enqueue(&self, request: ChildRequest) -> EnqueueFuture;
}

/// Callback told of progress reports while the job runs.
pub type ProgressHook = Arc<dyn Fn(u8, Option<String>) + Send + Sync>;

/// What the caller of a job wants to hear about while it runs; both are optional.
#[derive(Clone, Default)]
pub struct JobHooks {
    pub progress: Option<ProgressHook>,
    /// Without this, `host.enqueue` answers that enqueueing is not supported.
    pub enqueue: Option<Arc<dyn ChildEnqueuer>>,
}

/// The state of one wasmtime `Store`: one attempt of one job.
pub struct JobCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The attempt's `wasi:http` state: its grant, limits and counters (`capabilities::http`).
    pub(crate) http: HttpCtx,
    /// The attempt's TCP grant and counters, shared with its WASI context's address check.
    pub(crate) tcp: Arc<TcpState>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) journal: Arc<Journal>,
    hooks: JobHooks,
    /// The job this attempt runs, recorded as the parent of the jobs it enqueues.
    job_id: String,
    /// Child jobs enqueued so far, checked against `MAX_CHILDREN_PER_ATTEMPT`.
    children: usize,
    /// Cap on a child's payload (the parent's `max_payload`).
    max_payload: usize,
}

/// What grants one attempt's sandbox: its WASI context and the per-attempt state of the
/// network capabilities.
pub(crate) struct Granted {
    pub wasi: WasiCtx,
    pub http: HttpCtx,
    pub tcp: Arc<TcpState>,
}

impl JobCtx {
    pub(crate) fn new(
        granted: Granted,
        limiter: MemoryLimiter,
        journal: Arc<Journal>,
        hooks: JobHooks,
        job_id: &str,
        max_payload: usize,
    ) -> Self {
        JobCtx {
            wasi: granted.wasi,
            table: ResourceTable::new(),
            http: granted.http,
            tcp: granted.tcp,
            limiter,
            journal,
            hooks,
            job_id: job_id.to_owned(),
            children: 0,
            max_payload,
        }
    }
}

impl WasiView for JobCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for JobCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }
}

impl TypesImports for JobCtx {}

impl HostImports for JobCtx {
    async fn log(&mut self, level: Level, message: String) {
        let source = match level {
            Level::Trace => LogSource::Trace,
            Level::Debug => LogSource::Debug,
            Level::Info => LogSource::Info,
            Level::Warn => LogSource::Warn,
            Level::Error => LogSource::Error,
        };
        self.journal.push(source, message);
    }

    async fn progress(&mut self, percent: u8, message: Option<String>) {
        let message = message.map(|mut m| {
            truncate_utf8(&mut m, MAX_PROGRESS_MESSAGE);
            m
        });
        if let Some(hook) = &self.hooks.progress {
            hook(percent.min(100), message);
        }
    }

    async fn enqueue(
        &mut self,
        name: String,
        payload: Vec<u8>,
        options: EnqueueOptions,
    ) -> Result<String, String> {
        let Some(enqueuer) = self.hooks.enqueue.clone() else {
            return Err("enqueueing child jobs is not supported by this host".into());
        };
        if self.children >= MAX_CHILDREN_PER_ATTEMPT {
            return Err(format!(
                "one attempt may enqueue at most {MAX_CHILDREN_PER_ATTEMPT} child jobs"
            ));
        }
        if payload.len() > self.max_payload {
            return Err(format!(
                "child payload of {} bytes exceeds the cap of {} bytes",
                payload.len(),
                self.max_payload
            ));
        }
        self.children += 1;
        let request = ChildRequest {
            parent_id: self.job_id.clone(),
            handler: name,
            payload,
            queue: options.queue,
            delay: options.delay_ms.map(Duration::from_millis),
            priority: options.priority,
            unique_key: options.unique_key,
        };
        enqueuer.enqueue(request).await
    }
}

/// Cuts `text` to at most `max` bytes without splitting a character.
fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
