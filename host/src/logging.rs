//! Log output of the `kiln` binary: `tracing` events to stderr, filtered by `KILN_LOG`
//! (or `RUST_LOG`), `info` by default, coloured only when stderr is a terminal.
//!
//! A host (`kiln run`) never waits for its log's reader: each formatted line goes into a
//! queue of at most [`QUEUE_BYTES`], which one thread writes to stderr. A line that does not
//! fit is dropped and counted, and the writer says how many it dropped as soon as it can
//! write again. So a reader that is slow or stopped (a full pipe, a stalled log shipper)
//! slows no job, and what waits for it takes bounded memory. Other commands write their few
//! lines directly, in order with what they print themselves.

use std::collections::VecDeque;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Most bytes of formatted lines waiting for the reader of a host's log.
pub const QUEUE_BYTES: usize = 4 << 20;
/// How long [`flush`] waits for the reader before the process exits without the rest.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Installs the global subscriber; a second call does nothing. With `queued`, lines go
/// through the bounded queue (for `kiln run`); otherwise straight to stderr.
pub fn init(queued: bool) {
    let filter = std::env::var("KILN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, never into a file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if queued {
        builder.with_writer(Queued).try_init()
    } else {
        builder.with_writer(std::io::stderr).try_init()
    };
}

/// Waits, up to a limit, until every queued line was written; called before the process
/// exits so a host's last lines are not lost.
pub fn flush() {
    let Some(queue) = QUEUE.get() else { return };
    let give_up = Instant::now() + FLUSH_LIMIT;
    let mut state = queue.lock();
    while !(state.lines.is_empty() && !state.writing && state.dropped.lines == 0) {
        let left = give_up.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        state = queue
            .drained
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Lines and bytes dropped since the writer last said so.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub lines: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: Dropped,
    /// The writer holds lines it took from the queue and has not written yet.
    writing: bool,
}

/// A byte-bounded queue of log lines between the threads that log and the one that writes.
#[derive(Default)]
struct LineQueue {
    state: Mutex<State>,
    /// Signalled when a line arrives.
    ready: Condvar,
    /// Signalled when the writer has written everything it took.
    drained: Condvar,
}

impl LineQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line`, or counts it dropped when it does not fit; never waits for the writer.
    fn push(&self, line: Vec<u8>, limit: usize) {
        let mut state = self.lock();
        if state.bytes + line.len() > limit {
            state.dropped.lines += 1;
            state.dropped.bytes += line.len() as u64;
            return;
        }
        state.bytes += line.len();
        state.lines.push_back(line);
        drop(state);
        self.ready.notify_one();
    }

    /// Waits for lines and takes all of them, with the count dropped since the last take.
    fn take(&self) -> (Vec<Vec<u8>>, Dropped) {
        let mut state = self.lock();
        while state.lines.is_empty() && state.dropped.lines == 0 {
            state.writing = false;
            self.drained.notify_all();
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.writing = true;
        state.bytes = 0;
        let lines = state.lines.drain(..).collect();
        (lines, std::mem::take(&mut state.dropped))
    }
}

static QUEUE: OnceLock<LineQueue> = OnceLock::new();

/// The queue, with its writer thread started on first use.
fn queue() -> &'static LineQueue {
    QUEUE.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("kiln-log".into())
            .spawn(|| write_forever(QUEUE.wait()));
        if let Err(error) = spawned {
            eprintln!("kiln: cannot start the log writer: {error}");
        }
        LineQueue::default()
    })
}

fn write_forever(queue: &LineQueue) {
    let mut stderr = std::io::stderr();
    loop {
        let (lines, dropped) = queue.take();
        if dropped.lines > 0 {
            let _ = stderr.write_all(dropped_line(dropped).as_bytes());
        }
        for line in lines {
            let _ = stderr.write_all(&line);
        }
        let _ = stderr.flush();
    }
}

/// What the writer says after it had to drop lines.
fn dropped_line(dropped: Dropped) -> String {
    format!(
        "{} WARN kiln::logging: the log's reader was too slow: {} lines ({} bytes) were dropped \
         so that no job waited for it\n",
        humantime::format_rfc3339_micros(std::time::SystemTime::now()),
        dropped.lines,
        dropped.bytes
    )
}

/// `MakeWriter` of the queued log: each event is formatted into a [`QueuedLine`].
struct Queued;

impl<'a> MakeWriter<'a> for Queued {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine(Vec::new())
    }
}

/// One formatted event, queued when the formatter is done with it.
struct QueuedLine(Vec<u8>);

impl std::io::Write for QueuedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            queue().push(std::mem::take(&mut self.0), QUEUE_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Dropped, LineQueue};

    /// Lines past the queue's bytes are dropped and counted, never waited for; the next
    /// take hands over what fit and the count, and the count starts again from zero.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let queue = LineQueue::default();
        for _ in 0..10 {
            queue.push(vec![b'x'; 100], 350);
        }
        let (lines, dropped) = queue.take();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            dropped,
            Dropped {
                lines: 7,
                bytes: 700
            }
        );
        queue.push(vec![b'y'; 100], 350);
        let (lines, dropped) = queue.take();
        assert_eq!(lines, vec![vec![b'y'; 100]]);
        assert_eq!(dropped, Dropped::default());
    }
}
