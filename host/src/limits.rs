//! Per-job resource limits and the limiter that enforces the memory cap.
//!
//! Every attempt gets its own [`JobLimits`]; the values come from config (defaults, queue,
//! handler) and are applied to a fresh wasmtime `Store` by the sandbox.

use std::time::Duration;

use crate::capabilities::http::HttpLimits;

/// What one attempt of one job may use. Each limit protects the host from a handler that
/// runs away with a resource it shares with every other job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLimits {
    /// Wall-clock deadline for the attempt: a spinning handler is stopped after this.
    pub timeout: Duration,
    /// Cap on the linear memory of the handler's instances, in bytes.
    pub memory: u64,
    /// Optional CPU budget in fuel units (~10M units per ms of wasm); `None` is unlimited.
    pub fuel: Option<u64>,
    /// Cap on the result bytes a handler may return, so a result cannot exhaust host memory.
    pub max_result: usize,
    /// Cap on a job's payload, whoever enqueues it (a producer, a handler's child job), so
    /// one job cannot fill the store or a handler's memory.
    pub max_payload: usize,
    /// Cap on captured log lines plus stdout/stderr bytes per attempt; the rest is dropped.
    pub max_log: usize,
    /// Outbound HTTP: requests in flight at once and the connect timeout.
    pub http: HttpLimits,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            timeout: Duration::from_secs(30),
            memory: 64 << 20,
            fuel: None,
            max_result: 1 << 20,
            max_payload: 1 << 20,
            max_log: 64 << 10,
            http: HttpLimits::default(),
        }
    }
}

/// Room, past the largest cap, for the small values that travel with a capped one (a child's
/// handler name, queue and key beside its payload; a result's variant tag).
const CROSSING_SLACK: usize = 64 << 10;

impl JobLimits {
    /// The most bytes one value may carry from the guest to the host in one call (the
    /// store's hostcall fuel): the largest of Kiln's caps on what crosses (`max_result`,
    /// `max_payload`, `max_log`) plus a little slack. Anything larger is refused by
    /// wasmtime before it is copied, so an oversized value never lands in host memory;
    /// values between a cap and this are copied and refused by Kiln's own checks.
    pub fn largest_crossing(&self) -> usize {
        self.max_result
            .max(self.max_payload)
            .max(self.max_log)
            .saturating_add(CROSSING_SLACK)
    }
}

/// Most table elements an instance may grow to; guards host memory like the memory cap does.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// A `ResourceLimiter` that refuses memory growth past the cap and remembers that it did,
/// so a trap that follows can be reported as `memory-limit` rather than a plain trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap: usize,
    /// Set when a grow past the cap was refused; the guest usually aborts right after.
    pub(crate) hit: bool,
}

impl MemoryLimiter {
    /// A limiter allowing up to `cap` bytes of linear memory per memory.
    pub fn new(cap: u64) -> Self {
        MemoryLimiter {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
