//! What a guest may call: the `kiln:handler/host` interface and the WASI view of a job.
//!
//! [`JobCtx`] is the state of one wasmtime `Store`, which lives for exactly one attempt.
//! Log lines and stdout/stderr go into a size-capped [`Journal`] and to `tracing`, tagged
//! with the job id and handler name. Nothing here blocks: host calls only append to memory
//! or hand work to the hooks the caller supplied.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::bindings::{EnqueueOptions, HostImports, Level, TypesImports};
use crate::capabilities::http::HttpCtx;
use crate::capabilities::tcp::TcpState;
use crate::limits::MemoryLimiter;

/// Longest progress note kept; a guest cannot push unbounded strings into the job store.
const MAX_PROGRESS_MESSAGE: usize = 1024;
/// Most child jobs one attempt may enqueue, so a buggy fan-out cannot flood a queue.
const MAX_CHILDREN_PER_ATTEMPT: usize = 10_000;
/// Bytes of stderr kept apart from the journal to find a panic message even if the log is full.
const STDERR_TAIL: usize = 4096;

/// Where a journal line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The guest called `log` with this level.
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    /// A line the guest wrote to stdout.
    Stdout,
    /// A line the guest wrote to stderr.
    Stderr,
}

impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LogSource::Trace => "trace",
            LogSource::Debug => "debug",
            LogSource::Info => "info",
            LogSource::Warn => "warn",
            LogSource::Error => "error",
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
        };
        f.write_str(name)
    }
}

/// One captured line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub source: LogSource,
    pub text: String,
}

impl LogLine {
    /// Bytes the line takes in its attempt's stored log (`source: text` and a newline);
    /// the journal's cap counts these, so empty lines cannot grow the stored log unbounded.
    fn stored_len(source: LogSource, text: &str) -> usize {
        source.to_string().len() + 2 + text.len() + 1
    }
}

/// The log lines as stored with their attempt (`AttemptRecord::log`): one `source: text`
/// line each, in the order they were written.
pub fn stored_log(lines: &[LogLine]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for line in lines {
        let _ = writeln!(out, "{}: {}", line.source, line.text);
    }
    out
}

/// The capped log of one attempt: guest `log` calls plus stdout and stderr, split in lines.
///
/// Shared between the store's host state and the stdout/stderr streams, behind a std Mutex:
/// every critical section is a short append and never spans an `.await`.
#[derive(Debug)]
pub struct Journal {
    job_id: Arc<str>,
    handler: Arc<str>,
    cap: usize,
    inner: Mutex<JournalInner>,
}

#[derive(Debug, Default)]
struct JournalInner {
    lines: Vec<LogLine>,
    /// Bytes `lines` take as stored (`LogLine::stored_len`); compared against the cap.
    bytes: usize,
    /// Set once something was dropped because the cap was reached.
    truncated: bool,
    /// Unfinished last line of stdout and of stderr.
    partial: [Vec<u8>; 2],
    stderr_tail: Vec<u8>,
}

impl Journal {
    pub fn new(job_id: &str, handler: &str, cap: usize) -> Self {
        Journal {
            job_id: job_id.into(),
            handler: handler.into(),
            cap,
            inner: Mutex::new(JournalInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one line and emits it through `tracing`.
    pub fn push(&self, source: LogSource, text: String) {
        self.emit(source, &text);
        let mut inner = self.lock();
        let len = LogLine::stored_len(source, &text);
        if inner.bytes + len > self.cap {
            inner.truncated = true;
            return;
        }
        inner.bytes += len;
        inner.lines.push(LogLine { source, text });
    }

    fn emit(&self, source: LogSource, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        let (job, handler) = (&*self.job_id, &*self.handler);
        match source {
            LogSource::Trace => tracing::trace!(job, handler, "{text}"),
            LogSource::Debug => tracing::debug!(job, handler, "{text}"),
            LogSource::Info | LogSource::Stdout => tracing::info!(job, handler, %source, "{text}"),
            LogSource::Warn | LogSource::Stderr => tracing::warn!(job, handler, %source, "{text}"),
            LogSource::Error => tracing::error!(job, handler, "{text}"),
        }
    }

    /// Appends raw output bytes, turning each completed line into a journal line.
    fn write(&self, source: LogSource, bytes: &[u8]) {
        let slot = usize::from(source == LogSource::Stderr);
        let mut complete = Vec::new();
        {
            let mut inner = self.lock();
            if source == LogSource::Stderr {
                let tail = &mut inner.stderr_tail;
                tail.extend_from_slice(bytes);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
            let partial = &mut inner.partial[slot];
            partial.extend_from_slice(bytes);
            while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                complete.push(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            // A guest printing without newlines must not grow the buffer past the cap.
            if partial.len() > self.cap {
                complete.push(String::from_utf8_lossy(partial).into_owned());
                partial.clear();
            }
        }
        for line in complete {
            self.push(source, line);
        }
    }

    /// Flushes unfinished stdout/stderr lines and returns the log and whether it was cut.
    pub fn finish(&self) -> (Vec<LogLine>, bool) {
        let partials = std::mem::take(&mut self.lock().partial);
        for (slot, rest) in partials.into_iter().enumerate() {
            if !rest.is_empty() {
                let source = [LogSource::Stdout, LogSource::Stderr][slot];
                self.push(source, String::from_utf8_lossy(&rest).into_owned());
            }
        }
        let mut inner = self.lock();
        (std::mem::take(&mut inner.lines), inner.truncated)
    }

    /// The last few KiB the guest wrote to stderr, where a Rust panic leaves its message.
    pub fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(&self.lock().stderr_tail).into_owned()
    }
}

/// A guest's stdout or stderr: every write lands in the journal, never on the host's stdio.
#[derive(Clone)]
pub struct CaptureStream {
    journal: Arc<Journal>,
    source: LogSource,
}

impl CaptureStream {
    pub fn new(journal: Arc<Journal>, source: LogSource) -> Self {
        CaptureStream { journal, source }
    }
}

/// The most bytes the guest may hand over in one write; it is captured at once.
const WRITE_PERMIT: usize = 64 << 10;

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.journal.write(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.journal.write(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

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

#[cfg(test)]
mod tests {
    use super::{Journal, LogSource, stored_log};

    /// The cap counts each line as stored, so a guest writing endless empty lines (which
    /// hold no text) cannot grow its attempt's stored log past `max_log` bytes.
    #[test]
    fn empty_lines_count_against_the_cap() {
        let journal = Journal::new("q/job", "chatty", 1000);
        for _ in 0..100_000 {
            journal.push(LogSource::Stdout, String::new());
        }
        journal.push(LogSource::Info, "after the cap".to_owned());
        let (lines, truncated) = journal.finish();
        let stored = stored_log(&lines);
        assert!(truncated);
        assert!(stored.len() <= 1000, "{} bytes stored", stored.len());
        assert!(stored.starts_with("stdout: \n"), "{stored}");
        assert!(!stored.contains("after the cap"));
    }
}
