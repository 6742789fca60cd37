//! What a handler may ask of the host: log lines, progress reports and child jobs.
//!
//! Inside a Kiln sandbox (wasm32) these call the `host` interface of the handler world. On any
//! other target there is no host to call, so log lines and progress go to stderr and enqueue
//! is refused; that keeps a handler's logic testable with a plain `cargo test`.

use std::time::Duration;

#[cfg(target_arch = "wasm32")]
use crate::bindings::kiln::handler::{host, types};

/// Severity of a log line; the host keeps it with the line and filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Information useful while debugging a handler.
    Debug,
    /// Normal progress worth keeping.
    Info,
    /// Something unexpected that the handler worked around.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// Lowercase name of the level, as the host prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Writes one line to the job's log; the [`info!`](crate::info) family of macros format and
/// call this.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    host::log(
        match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        },
        message,
    );
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{} {message}", level.as_str());
}

/// Reports how far the job has got, so `kiln status` can show it while the job runs.
///
/// `percent` above 100 is reported as 100.
pub fn progress(percent: u8, message: Option<&str>) {
    let percent = percent.min(100);
    #[cfg(target_arch = "wasm32")]
    host::progress(percent, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("progress {percent}% {}", message.unwrap_or_default());
}

/// How a child job is enqueued; every setting left unset takes the host's default.
///
/// ```
/// use std::time::Duration;
/// use kiln_sdk::EnqueueOptions;
///
/// let options = EnqueueOptions::new()
///     .queue("thumbnails")
///     .delay(Duration::from_secs(30))
///     .priority(5)
///     .unique_key("thumb:42");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    queue: Option<String>,
    delay: Option<Duration>,
    priority: Option<i32>,
    unique_key: Option<String>,
}

impl EnqueueOptions {
    /// Options with every setting left to the host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enqueue into `queue` instead of the child handler's configured queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Do not start the child before `delay` has passed (millisecond precision).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Higher runs first within the queue; by default the queue's configured priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// While an unfinished job with this key exists, enqueue returns that job's id instead of
    /// creating another, so an attempt that is retried does not enqueue its children twice.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// The delay in whole milliseconds, as the host interface takes it.
    fn delay_ms(&self) -> Option<u64> {
        self.delay
            .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Enqueues a child job for handler `name` and returns its id, or the host's reason for
/// refusing (unknown handler, payload too large, enqueue not granted, ...).
pub fn enqueue(
    name: &str,
    payload: impl AsRef<[u8]>,
    options: EnqueueOptions,
) -> Result<String, String> {
    let delay_ms = options.delay_ms();
    #[cfg(target_arch = "wasm32")]
    {
        let options = types::EnqueueOptions {
            queue: options.queue,
            delay_ms,
            priority: options.priority,
            unique_key: options.unique_key,
        };
        host::enqueue(name, payload.as_ref(), &options)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (payload, delay_ms);
        Err(format!(
            "cannot enqueue `{name}`: enqueue needs the kiln host (this is not a wasm32 build)"
        ))
    }
}

/// Writes a formatted line to the job's log at the given [`Level`].
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log($level, &::std::format!($($arg)+))
    };
}

/// Writes a formatted line to the job's log at [`Level::Trace`].
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Trace, $($arg)+) };
}

/// Writes a formatted line to the job's log at [`Level::Debug`].
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Debug, $($arg)+) };
}

/// Writes a formatted line to the job's log at [`Level::Info`].
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Info, $($arg)+) };
}

/// Writes a formatted line to the job's log at [`Level::Warn`].
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Warn, $($arg)+) };
}

/// Writes a formatted line to the job's log at [`Level::Error`].
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Error, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_keep_what_was_set() {
        let options = EnqueueOptions::new()
            .queue("q")
            .delay(Duration::from_millis(1500))
            .priority(-2)
            .unique_key("k");
        assert_eq!(options.queue.as_deref(), Some("q"));
        assert_eq!(options.delay_ms(), Some(1500));
        assert_eq!(options.priority, Some(-2));
        assert_eq!(options.unique_key.as_deref(), Some("k"));
        assert_eq!(EnqueueOptions::new().delay_ms(), None);
    }

    #[test]
    fn huge_delay_saturates() {
        let options = EnqueueOptions::new().delay(Duration::MAX);
        assert_eq!(options.delay_ms(), Some(u64::MAX));
    }

    #[test]
    fn enqueue_outside_the_host_is_refused_with_a_reason() {
        let err = enqueue("echo", b"{}", EnqueueOptions::new()).unwrap_err();
        assert!(err.contains("`echo`"), "{err}");
    }

    #[test]
    fn levels_print_lowercase_and_order_by_severity() {
        let names: Vec<_> = [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ]
        .map(Level::as_str)
        .to_vec();
        assert_eq!(names, ["trace", "debug", "info", "warn", "error"]);
        assert!(Level::Trace < Level::Error);
    }
}
