//! The log of one attempt: guest `log` calls and what it writes to stdout and stderr.
//!
//! A [`Journal`] keeps each line up to the attempt's `max_log` and hands the same lines to
//! the host's own log, so what a guest writes costs the host's log no more than its job's:
//! a line past the cap is dropped from both, and one warning per attempt says how much was
//! dropped. In the host's log a guest's text is one quoted field (`text="..."`), with
//! newlines and control characters escaped, so it can never start a line of its own or pass
//! for one of the host's.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// What starts a Rust panic's report on stderr.
const PANIC_MARKER: &[u8] = b"panicked at ";
/// Bytes of stderr searched for [`PANIC_MARKER`] before any panic was seen.
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
    /// Lines, and their stored bytes, dropped because the cap was reached.
    dropped_lines: u64,
    dropped_bytes: u64,
    /// Unfinished last line of stdout and of stderr.
    partial: [Vec<u8>; 2],
    /// The last bytes of stderr, where the start of a panic's report is looked for.
    stderr_tail: Vec<u8>,
    /// The latest panic report, from its marker on, up to the cap.
    panic: Option<Vec<u8>>,
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

    fn lock(&self) -> MutexGuard<'_, JournalInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one line and, if it was kept, emits it through `tracing`.
    pub fn push(&self, source: LogSource, text: String) {
        let len = LogLine::stored_len(source, &text);
        {
            let mut inner = self.lock();
            if inner.bytes + len > self.cap {
                inner.dropped_lines += 1;
                inner.dropped_bytes += len as u64;
                return;
            }
            inner.bytes += len;
        }
        self.emit(source, &text);
        self.lock().lines.push(LogLine { source, text });
    }

    fn emit(&self, source: LogSource, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        let (job, handler) = (&*self.job_id, &*self.handler);
        macro_rules! guest {
            ($level:ident) => {
                tracing::$level!(target: "kiln::guest", %job, %handler, %source, text = ?text)
            };
        }
        match source {
            LogSource::Trace => guest!(trace),
            LogSource::Debug => guest!(debug),
            LogSource::Info | LogSource::Stdout => guest!(info),
            LogSource::Warn | LogSource::Stderr => guest!(warn),
            LogSource::Error => guest!(error),
        }
    }

    /// Appends raw output bytes, turning each completed line into a journal line.
    fn write(&self, source: LogSource, bytes: &[u8]) {
        let slot = usize::from(source == LogSource::Stderr);
        let mut complete = Vec::new();
        {
            let mut inner = self.lock();
            if source == LogSource::Stderr {
                inner.note_stderr(bytes, self.cap);
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
    /// When lines were dropped, the host's log gets one warning saying how many.
    pub fn finish(&self) -> (Vec<LogLine>, bool) {
        let partials = std::mem::take(&mut self.lock().partial);
        for (slot, rest) in partials.into_iter().enumerate() {
            if !rest.is_empty() {
                let source = [LogSource::Stdout, LogSource::Stderr][slot];
                self.push(source, String::from_utf8_lossy(&rest).into_owned());
            }
        }
        let mut inner = self.lock();
        let (lines, bytes) = (inner.dropped_lines, inner.dropped_bytes);
        if lines > 0 {
            tracing::warn!(
                target: "kiln::guest",
                job = %self.job_id,
                handler = %self.handler,
                "the attempt's log reached max_log ({} bytes): {lines} more lines ({bytes} \
                 bytes) were dropped from the job's log and from this one",
                self.cap
            );
        }
        (std::mem::take(&mut inner.lines), lines > 0)
    }

    /// The report of the guest's last panic on stderr, from `panicked at` on, up to the
    /// log cap; `None` if it wrote none.
    pub fn panic_report(&self) -> Option<String> {
        let inner = self.lock();
        let report = inner.panic.as_deref()?;
        Some(String::from_utf8_lossy(report).into_owned())
    }
}

impl JournalInner {
    /// Follows stderr for a panic's report: the latest marker seen starts a new report,
    /// and what follows it is kept up to `cap` bytes, however long the message.
    fn note_stderr(&mut self, bytes: &[u8], cap: usize) {
        let carried = self.stderr_tail.len();
        self.stderr_tail.extend_from_slice(bytes);
        // Only a marker that ends in the new bytes is new; it may start in the carried ones.
        let search_from = carried.saturating_sub(PANIC_MARKER.len() - 1);
        let found = self.stderr_tail[search_from..]
            .windows(PANIC_MARKER.len())
            .rposition(|window| window == PANIC_MARKER);
        match (found, &mut self.panic) {
            (Some(at), _) => self.panic = Some(self.stderr_tail[search_from + at..].to_vec()),
            (None, Some(report)) => report.extend_from_slice(bytes),
            (None, None) => {}
        }
        if let Some(report) = &mut self.panic {
            report.truncate(cap.max(PANIC_MARKER.len()));
        }
        let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL);
        self.stderr_tail.drain(..excess);
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

    /// A panic's report is kept from its marker on, even when the marker arrives split
    /// across writes and the message is far longer than the stderr tail, cut at the cap.
    #[test]
    fn a_long_panic_report_is_kept_up_to_the_cap() {
        let journal = Journal::new("q/job", "panicky", 10_000);
        journal.write(LogSource::Stderr, b"noise\nthread 'main' pan");
        journal.write(LogSource::Stderr, b"icked at src/lib.rs:1:1:\n");
        journal.write(LogSource::Stderr, "m".repeat(20_000).as_bytes());
        let report = journal.panic_report().expect("a report");
        assert!(
            report.starts_with("panicked at src/lib.rs:1:1:\nmmm"),
            "{report:.40}"
        );
        assert_eq!(report.len(), 10_000);
        assert_eq!(Journal::new("q/j", "h", 100).panic_report(), None);
    }
}
