//! Runs one attempt of one job in a fresh sandbox and classifies how it ended.
//!
//! Every attempt gets a new wasmtime `Store` with its own memory cap, epoch deadline and fuel
//! budget, instantiated from the handler's pre-instantiated component. The store is dropped
//! when the attempt ends, whatever the outcome: nothing a handler does survives its job.
//!
//! The sandbox denies by default (`capabilities::wasi` lists what an attempt's WASI context
//! holds); a handler's grants open exactly what they name (`capabilities`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};

use crate::bindings::{JobError, WitJob};
use crate::capabilities::http::{HttpCtx, HttpUsage};
use crate::capabilities::net::Requester;
use crate::capabilities::tcp::{TcpState, TcpUsage};
use crate::capabilities::{Grants, wasi_ctx};
use crate::engine::Runtime;
use crate::host_api::{Granted, JobCtx, JobHooks, Journal, LogLine};
use crate::limits::{JobLimits, MemoryLimiter};
use crate::registry::LoadedHandler;
use crate::store::OutcomeClass;

/// The job as handed to a handler for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInput {
    pub id: String,
    pub handler: String,
    pub queue: String,
    pub payload: Vec<u8>,
    /// 1 on the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
}

/// How a failing handler asked the host to treat its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Try again if attempts are left; the handler may have asked for a minimum delay.
    Retry { delay: Option<Duration> },
    /// Give up now.
    Fatal,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned these result bytes.
    Ok(Vec<u8>),
    /// The handler returned an error.
    Error { kind: ErrorKind, message: String },
    /// The wall-clock deadline passed.
    Timeout,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The handler asked for more memory than its cap and stopped.
    MemoryLimit,
    /// The handler trapped; the backtrace lists guest frames when known.
    Trap {
        message: String,
        backtrace: Option<String>,
    },
    /// The handler panicked; the message is taken from its stderr.
    Panic { message: String },
    /// The job was cancelled (or the host shut down) while it ran.
    Cancelled,
}

impl Outcome {
    /// The outcome class stored with each attempt.
    pub fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Ok(_) => OutcomeClass::Ok,
            Outcome::Error { .. } => OutcomeClass::Error,
            Outcome::Timeout => OutcomeClass::Timeout,
            Outcome::OutOfFuel => OutcomeClass::OutOfFuel,
            Outcome::MemoryLimit => OutcomeClass::MemoryLimit,
            Outcome::Trap { .. } => OutcomeClass::Trap,
            Outcome::Panic { .. } => OutcomeClass::Panic,
            Outcome::Cancelled => OutcomeClass::Cancelled,
        }
    }

    /// Whether another attempt may help: everything but success, a fatal error and a cancel.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Outcome::Ok(_)
                | Outcome::Cancelled
                | Outcome::Error {
                    kind: ErrorKind::Fatal,
                    ..
                }
        )
    }

    /// A one-line description for the job's error field; `None` on success.
    pub fn message(&self) -> Option<String> {
        Some(match self {
            Outcome::Ok(_) => return None,
            Outcome::Error { message, .. } => message.clone(),
            Outcome::Timeout => "handler exceeded its deadline".into(),
            Outcome::OutOfFuel => "handler ran out of fuel".into(),
            Outcome::MemoryLimit => "handler exceeded its memory cap".into(),
            Outcome::Trap { message, .. } => format!("handler trapped: {message}"),
            Outcome::Panic { message } => format!("handler panicked: {message}"),
            Outcome::Cancelled => "job was cancelled while running".into(),
        })
    }
}

/// Everything recorded about one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    /// Wall time from instantiation to the end of the call.
    pub wall: Duration,
    /// Fuel the attempt burned (~10M units per ms of wasm).
    pub fuel_used: u64,
    /// Digest of the handler version that ran the attempt.
    pub digest: String,
    /// Log lines and stdout/stderr, capped at `JobLimits::max_log` bytes.
    pub log: Vec<LogLine>,
    /// Set when the log was cut at the cap.
    pub log_truncated: bool,
    /// What the attempt did through its `http` grant; `None` if it tried nothing.
    pub http: Option<HttpUsage>,
    /// What the attempt did through its `tcp` grant; `None` if it tried nothing.
    pub tcp: Option<TcpUsage>,
}

/// What an attempt's store reports when it ends.
struct Ended {
    fuel_used: u64,
    memory_hit: bool,
    http: Option<HttpUsage>,
    tcp: Option<TcpUsage>,
}

/// Why the epoch callback stopped a guest; carried as the error of the interrupted call.
#[derive(Debug, thiserror::Error)]
enum Interrupt {
    #[error("deadline passed")]
    Timeout,
    #[error("job cancelled")]
    Cancelled,
}

/// Ticks a running guest may go before the host checks its deadline and yields the thread.
const TICKS_PER_CHECK: u64 = 1;

impl Runtime {
    /// Runs one attempt of `job` on `handler` with `limits`, until it ends, times out or
    /// `cancel` fires. Never panics on guest behaviour: every way a guest ends is an `Outcome`.
    pub async fn run(
        &self,
        handler: &LoadedHandler,
        job: &JobInput,
        limits: &JobLimits,
        grants: &Grants,
        hooks: JobHooks,
        cancel: &CancellationToken,
    ) -> Attempt {
        let _slot = self.slots.acquire().await;
        let journal = Arc::new(Journal::new(&job.id, &job.handler, limits.max_log));
        let started = Instant::now();
        let deadline = started + limits.timeout;
        let (result, ended) = match self.new_store(
            job,
            limits,
            grants,
            hooks,
            journal.clone(),
            deadline,
            cancel,
        ) {
            Ok(mut store) => {
                let call = call_handle(&mut store, handler, job);
                let result = tokio::select! {
                    result = tokio::time::timeout_at(deadline.into(), call) => {
                        result.unwrap_or_else(|_| Err(Interrupt::Timeout.into()))
                    }
                    () = cancel.cancelled() => Err(Interrupt::Cancelled.into()),
                };
                let budget = limits.fuel.unwrap_or(u64::MAX);
                let ctx = store.data();
                let ended = Ended {
                    fuel_used: budget - store.get_fuel().unwrap_or(budget),
                    memory_hit: ctx.limiter.hit,
                    http: ctx.http.usage(),
                    tcp: ctx.tcp.usage(),
                };
                (result, ended)
            }
            Err(error) => {
                let ended = Ended {
                    fuel_used: 0,
                    memory_hit: false,
                    http: None,
                    tcp: None,
                };
                (Err(error), ended)
            }
        };
        let wall = started.elapsed();
        let outcome = classify(result, ended.memory_hit, &journal, limits);
        let (log, log_truncated) = journal.finish();
        Attempt {
            outcome,
            wall,
            fuel_used: ended.fuel_used,
            digest: handler.digest.clone(),
            log,
            log_truncated,
            http: ended.http,
            tcp: ended.tcp,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_store(
        &self,
        job: &JobInput,
        limits: &JobLimits,
        grants: &Grants,
        hooks: JobHooks,
        journal: Arc<Journal>,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> wasmtime::Result<Store<JobCtx>> {
        let who = Requester {
            job: job.id.as_str().into(),
            handler: job.handler.as_str().into(),
        };
        let tcp = TcpState::new(&grants.tcp, who.clone());
        let granted = Granted {
            wasi: wasi_ctx(grants, &journal, &tcp)?,
            http: HttpCtx::new(&grants.http, &limits.http, self.tls.clone(), deadline, who),
            tcp,
        };
        let max_payload = limits.max_payload;
        let limiter = MemoryLimiter::new(limits.memory);
        let ctx = JobCtx::new(granted, limiter, journal, hooks, &job.id, max_payload);
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|ctx| &mut ctx.limiter);
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
        store.set_hostcall_fuel(limits.largest_crossing());
        // The instance's start code already checks the epoch, so the deadline must be set
        // before instantiation.
        store.set_epoch_deadline(TICKS_PER_CHECK);
        let cancel = cancel.clone();
        store.epoch_deadline_callback(move |_| {
            if cancel.is_cancelled() {
                Err(Interrupt::Cancelled.into())
            } else if Instant::now() >= deadline {
                Err(Interrupt::Timeout.into())
            } else {
                Ok(UpdateDeadline::Yield(TICKS_PER_CHECK))
            }
        });
        Ok(store)
    }
}

async fn call_handle(
    store: &mut Store<JobCtx>,
    handler: &LoadedHandler,
    job: &JobInput,
) -> wasmtime::Result<Result<Vec<u8>, JobError>> {
    let instance = handler.pre.instantiate_async(&mut *store).await?;
    let job = WitJob {
        id: job.id.clone(),
        name: job.handler.clone(),
        queue: job.queue.clone(),
        payload: job.payload.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
    };
    instance.call_handle(&mut *store, &job).await
}

/// What wasmtime says when a value the guest hands over is more than the store's hostcall
/// fuel allows.
const HOSTCALL_FUEL_TRAP: &str = "too much data is being copied";

fn classify(
    result: wasmtime::Result<Result<Vec<u8>, JobError>>,
    memory_hit: bool,
    journal: &Journal,
    limits: &JobLimits,
) -> Outcome {
    let (max_result, max_crossing) = (limits.max_result, limits.largest_crossing());
    let error = match result {
        Ok(Ok(bytes)) if bytes.len() > max_result => {
            return Outcome::Error {
                kind: ErrorKind::Fatal,
                message: format!(
                    "result of {} bytes exceeds the cap of {max_result} bytes",
                    bytes.len()
                ),
            };
        }
        Ok(Ok(bytes)) => return Outcome::Ok(bytes),
        Ok(Err(JobError::Retry(info))) => {
            return Outcome::Error {
                kind: ErrorKind::Retry {
                    delay: info.delay_ms.map(Duration::from_millis),
                },
                message: info.message,
            };
        }
        Ok(Err(JobError::Fatal(message))) => {
            return Outcome::Error {
                kind: ErrorKind::Fatal,
                message,
            };
        }
        Err(error) => error,
    };
    match error.downcast_ref::<Interrupt>() {
        Some(Interrupt::Timeout) => return Outcome::Timeout,
        Some(Interrupt::Cancelled) => return Outcome::Cancelled,
        None => {}
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return Outcome::OutOfFuel,
        Some(Trap::Interrupt) => return Outcome::Timeout,
        _ => {}
    }
    if format!("{error:#}").contains(HOSTCALL_FUEL_TRAP) {
        return Outcome::Error {
            kind: ErrorKind::Fatal,
            message: format!(
                "the handler passed the host one value of more than {} bytes, over its caps \
                 (the result over `max_result`, a child payload over `max_payload`, or a \
                 log line over `max_log`); it was refused before it was copied",
                max_crossing
            ),
        };
    }
    if memory_hit {
        return Outcome::MemoryLimit;
    }
    if let Some(message) = journal
        .panic_report()
        .and_then(|report| panic_message(&report))
    {
        return Outcome::Panic { message };
    }
    Outcome::Trap {
        message: trap_message(&error),
        backtrace: error
            .downcast_ref::<WasmBacktrace>()
            .map(|trace| trace.to_string()),
    }
}

fn trap_message(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    }
}

/// Finds the message of a Rust panic (`panicked at FILE:LINE:COL:\nMESSAGE`) in the report
/// the journal kept, which starts at the marker.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")?;
    let rest = &stderr[start + "panicked at ".len()..];
    let (location, after) = rest.split_once('\n').unwrap_or((rest, ""));
    let message: Vec<&str> = after
        .lines()
        .take_while(|line| !line.starts_with("note: "))
        .collect();
    let location = location.trim_end_matches(':');
    match message.join("\n").trim() {
        "" => Some(location.to_owned()),
        text => Some(format!("{text} (at {location})")),
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_message_is_taken_from_stderr() {
        let stderr = "starting\n\nthread '<unnamed>' panicked at src/lib.rs:9:5:\nboom here\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("boom here (at src/lib.rs:9:5)")
        );
        assert_eq!(panic_message("just an error\n"), None);
    }
}
