//! The operations layer: one function per producer or admin action, shared by every front end.
//!
//! The CLI, handlers' `enqueue`, the scheduler (and later the HTTP API) parse their input
//! and call [`Ops`]; the rules of what a job is, how a request is checked and resolved from
//! the config, and how a job is shown ([`JobView`]) live here once. Every failure is an
//! [`OpsError`], which each front end maps in one place (an exit code, an HTTP status).
//!
//! - `enqueue`: enqueue one or many; children enqueued by handlers.
//! - `jobs`: get, list, retry one or all failed, cancel.
//! - `queues`: pause, resume, clear, stats.
//! - `handlers`: the handlers a registry serves or refused, and `check` of one file.
//! - `schedules`: one schedule tick (the scheduler, `kiln schedules trigger`), and the
//!   schedules with their next fire times and latest tick.
//! - `view`: the job as users see it, in text and JSON.

mod enqueue;
mod error;
pub mod handlers;
mod jobs;
mod queues;
pub mod schedules;
pub mod view;

use std::sync::Arc;

pub use enqueue::{EnqueueRequest, Enqueued};
pub use error::{ErrorClass, OpsError};
pub use view::{Body, JobView};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LiveConfig};
use crate::store::Timestamp;

/// The actions on one configured store. Cheap to clone.
pub struct Ops<S> {
    /// Read per request, so a reloaded config applies to the next one.
    config: LiveConfig,
    store: Arc<S>,
    clock: Arc<dyn Clock>,
}

impl<S> Clone for Ops<S> {
    fn clone(&self) -> Self {
        Ops {
            config: self.config.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<S> Ops<S> {
    /// Actions on `store` under `config`'s queues, handlers and limits, on the wall clock.
    /// A [`LiveConfig`] is followed as it is reloaded; an `Arc<Config>` stays fixed.
    pub fn new(config: impl Into<LiveConfig>, store: Arc<S>) -> Self {
        Ops {
            config: config.into(),
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same actions, reading the time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The configuration requests are resolved against now.
    pub fn config(&self) -> Arc<Config> {
        self.config.current()
    }

    /// The live configuration itself, to be told of reloads.
    pub fn live_config(&self) -> &LiveConfig {
        &self.config
    }

    /// The job store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// `queue` if the config defines it, else why not.
    pub fn known_queue(&self, queue: &str) -> Result<(), OpsError> {
        let config = self.config();
        if config.queues.contains_key(queue) {
            return Ok(());
        }
        Err(OpsError::UnknownQueue {
            queue: queue.to_owned(),
            known: config.queues.keys().cloned().collect(),
        })
    }
}
