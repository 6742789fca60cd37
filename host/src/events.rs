//! The worker's observer: what happens to jobs and handlers on this host, as typed events.
//!
//! The worker and the registry emit an [`Event`] at each step (an attempt starts or ends, a
//! settlement is written, a handler is loaded, refused or removed); every [`Observer`]
//! registered in the host's [`Events`] sees each one, in order, on the emitting task. The
//! host's log lines are one observer ([`LogEvents`]); metrics and the live event stream
//! subscribe the same way.
//!
//! Rule: observers run on the job's own task and on the hot path, so `observe` must be quick
//! and must never block or await: count, format a line, or hand the event to a channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::registry::LoadedHandler;
use crate::sandbox::Attempt;
use crate::store::{Job, SettleAction};

/// One thing that happened on this host.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A claimed job's handler is about to be instantiated for `attempt`.
    AttemptStarted {
        job: &'a Job,
        /// Digest of the handler version that runs it.
        digest: &'a str,
    },
    /// An attempt ended, however it ended (see `attempt.outcome`).
    AttemptEnded { job: &'a Job, attempt: &'a Attempt },
    /// The store recorded what became of a job after an attempt (or a release). Not
    /// emitted for settlements the store refused because the lease was lost.
    JobSettled {
        job: &'a Job,
        action: &'a SettleAction,
    },
    /// A job's handler is not loaded; it waits (`failed` is false) or fails for good.
    HandlerMissing { job: &'a Job, failed: bool },
    /// A handler version started serving (`replaced`: it took over from an older one).
    HandlerLoaded {
        handler: &'a LoadedHandler,
        replaced: bool,
    },
    /// A handler file was refused; `serving` tells whether an older version keeps serving.
    HandlerRefused {
        name: &'a str,
        error: &'a str,
        serving: bool,
    },
    /// A handler's file is gone and so is the handler.
    HandlerRemoved { name: &'a str },
}

/// Something that wants to hear of every event.
pub trait Observer: Send + Sync {
    /// Called once per event, in order. Must not block (see the module doc).
    fn observe(&self, event: &Event<'_>);
}

/// The observers of one host. Cheap to clone; clones share the observers.
#[derive(Clone)]
pub struct Events {
    observers: Arc<[Arc<dyn Observer>]>,
}

impl Events {
    /// Events seen by `observers`, in this order.
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Self {
        Events {
            observers: observers.into(),
        }
    }

    /// Events that only become log lines.
    pub fn logging() -> Self {
        Self::new(vec![Arc::new(LogEvents::default())])
    }

    /// The same observers plus `observer`.
    pub fn with(&self, observer: Arc<dyn Observer>) -> Self {
        let mut observers = self.observers.to_vec();
        observers.push(observer);
        Self::new(observers)
    }

    /// Tells every observer of `event`.
    pub fn emit(&self, event: Event<'_>) {
        for observer in self.observers.iter() {
            observer.observe(&event);
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::logging()
    }
}

/// How often the host warns about one handler that is not loaded: a directory's worth of
/// jobs for it would otherwise write a warning each every time they are offered.
const MISSING_WARN_EVERY: Duration = Duration::from_secs(30);

/// The host's log lines about jobs and handlers.
#[derive(Debug, Default)]
pub struct LogEvents {
    /// Per handler not loaded: when it was last warned about, and the offers since.
    missing: Mutex<HashMap<String, (Option<Instant>, u64)>>,
}

impl LogEvents {
    /// One warning per handler per [`MISSING_WARN_EVERY`], with how many offers of its jobs
    /// waited since the last one.
    fn missing(&self, job: &Job) {
        let mut missing = self.missing.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (warned_at, offers) = missing.entry(job.handler.clone()).or_default();
        *offers += 1;
        if warned_at.is_none_or(|at| now.duration_since(at) >= MISSING_WARN_EVERY) {
            tracing::warn!(
                job = %job.id, handler = %job.handler, offers = *offers,
                "handler is not loaded; its jobs are parked until it is (offers since the last \
                 warning: {offers})"
            );
            (*warned_at, *offers) = (Some(now), 0);
        }
    }
}

impl Observer for LogEvents {
    fn observe(&self, event: &Event<'_>) {
        match *event {
            Event::AttemptStarted { .. } | Event::JobSettled { .. } => {}
            Event::AttemptEnded { job, attempt } => log_attempt(job, attempt),
            Event::HandlerMissing { job, failed: true } => {
                tracing::error!(job = %job.id, handler = %job.handler, "handler is not loaded; failing the job")
            }
            Event::HandlerMissing { job, failed: false } => self.missing(job),
            Event::HandlerLoaded { handler, .. } => {
                let mut missing = self.missing.lock().unwrap_or_else(PoisonError::into_inner);
                missing.remove(&handler.name);
                drop(missing);
                tracing::info!(
                handler = %handler.name, digest = %handler.digest, source = ?handler.source,
                took = ?handler.took, "handler loaded"
                )
            }
            Event::HandlerRefused {
                name,
                error,
                serving: true,
            } => tracing::error!(handler = %name, "{error}; the previous version keeps serving"),
            Event::HandlerRefused {
                name,
                error,
                serving: false,
            } => tracing::error!(handler = %name, "{error}"),
            Event::HandlerRemoved { name } => tracing::info!(handler = %name, "handler removed"),
        }
    }
}

fn log_attempt(job: &Job, attempt: &Attempt) {
    let (id, handler) = (&job.id, &job.handler);
    match attempt.outcome.message() {
        None => {
            let wall: Duration = attempt.wall;
            tracing::info!(job = %id, %handler, attempt = job.attempts, ?wall, "job succeeded")
        }
        Some(message) => {
            let outcome = attempt.outcome.class();
            tracing::warn!(job = %id, %handler, attempt = job.attempts, %outcome, "attempt failed: {message}")
        }
    }
}
