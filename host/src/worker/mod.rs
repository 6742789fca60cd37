//! The worker: claims jobs from the job store, runs each in the sandbox, settles the outcome.
//!
//! - `claim`: one claim loop per configured queue, each bounded by the queue's concurrency
//!   and all of them by the host's global cap.
//! - `queues`: the set of claim loops, kept in step with the live config (queues added or
//!   removed, concurrency resized, paused flags applied) when it is reloaded.
//! - `attempt`: one claimed job through the sandbox, its progress, and the settlement that
//!   records how it ended (retry policy included).
//! - `settler`: writes finished jobs' settlements in batches.
//! - `renewer`: renews the leases of running jobs in one batch, and learns of jobs cancelled
//!   or taken over while they run.
//! - `contact`: how long the store has been reachable without a break, which decides when
//!   the reaper may take back expired leases (the rule is written there).
//! - `reaper`: returns jobs of dead hosts to their queues and prunes finished ones, and
//!   stops the worker when its store file was deleted or replaced.
//! - `unparker`: wakes the jobs parked for a handler (it was not loaded when they were
//!   offered) as soon as that handler is loaded here.
//!
//! Shutdown is injected (`run(shutdown)`): claiming stops at once, running jobs get
//! `shutdown_grace` to finish, then their sandboxes are interrupted and the jobs released
//! back to the queue with their attempt uncounted. The `interrupt` token
//! ([`Worker::with_interrupt`]) cuts the grace short: the jobs are interrupted and released
//! at once, so an attempt cut short by shutdown never uses up a job's last attempt. Nothing
//! is lost: whatever is not settled comes back when its lease expires.

mod attempt;
mod claim;
mod contact;
mod queues;
mod reaper;
mod renewer;
mod settler;
mod unparker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::clock::{Clock, SystemClock};
use crate::config::LiveConfig;
use crate::events::Events;
use crate::host_api::ChildEnqueuer;
use crate::ops::Ops;
use crate::registry::Registry;
use crate::store::{Job, JobStore, Settlement, StoreResult};

/// Why a running job's sandbox was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// A user cancelled the job.
    Cancelled,
    /// The host is shutting down; the job goes back to the queue.
    Shutdown,
    /// Another host took the job over (the lease expired); nothing may be settled.
    LeaseLost,
}

/// A job running on this host.
struct Running {
    cancel: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl Running {
    fn stop(&self, reason: StopReason) {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(reason);
        self.cancel.cancel();
    }

    fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A settlement on its way to the store, with the job it settles (for the events).
struct Settling {
    settlement: Settlement,
    job: Job,
}

/// Everything the worker's tasks share.
struct Shared<S> {
    store: Arc<S>,
    registry: Arc<Registry>,
    /// Read where a value is needed (per attempt, per claim round), so a reload applies to
    /// the next one; `queues::Queues` follows its changes.
    config: LiveConfig,
    clock: Arc<dyn Clock>,
    /// This host's lease owner id: unique per process.
    owner: String,
    /// Jobs running here, by id; std lock, never held across an `.await`.
    running: Mutex<HashMap<String, Arc<Running>>>,
    settle: mpsc::UnboundedSender<Settling>,
    /// The handler of each park the settler wrote, for the unparker.
    parks: mpsc::UnboundedSender<String>,
    global: Arc<Semaphore>,
    /// Told of every attempt and settlement (logs, metrics, benchmarks).
    events: Events,
    /// What handlers' `enqueue` calls go through: the same rules as every producer.
    children: Arc<dyn ChildEnqueuer>,
    /// How long the store has been reachable without a break (see `contact`).
    contact: contact::Contact,
}

impl<S: JobStore> Shared<S> {
    /// Awaits one store call, recording in `contact` whether and how fast it answered.
    async fn observed<T>(&self, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let call_in_flight = self.contact.begin(self.clock.now());
        let result = call.await;
        self.contact
            .end(call_in_flight, self.clock.now(), result.is_ok());
        result
    }
}

/// Claims and runs jobs until shut down.
pub struct Worker<S> {
    shared: Arc<Shared<S>>,
    settlements: mpsc::UnboundedReceiver<Settling>,
    parks: mpsc::UnboundedReceiver<String>,
    /// Cancelled to stop at once: running jobs are interrupted and handed back without
    /// waiting for `shutdown_grace` (a second signal to `kiln run`).
    interrupt: CancellationToken,
}

impl<S: JobStore + 'static> Worker<S> {
    pub fn new(
        store: Arc<S>,
        registry: Arc<Registry>,
        config: impl Into<LiveConfig>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let config: LiveConfig = config.into();
        let current = config.current();
        let (settle, settlements) = mpsc::unbounded_channel();
        let (parks_tx, parks) = mpsc::unbounded_channel();
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let global = Arc::new(Semaphore::new(current.host.concurrency));
        let children = Ops::new(config.clone(), store.clone()).with_clock(clock.clone());
        let contact = contact::Contact::new(clock.now(), current.host.lease);
        Worker {
            shared: Arc::new(Shared {
                children: Arc::new(children),
                store,
                registry,
                config,
                clock,
                owner,
                running: Mutex::default(),
                settle,
                parks: parks_tx,
                global,
                events: Events::default(),
                contact,
            }),
            settlements,
            parks,
            interrupt: CancellationToken::new(),
        }
    }

    /// Stops the worker at once when `interrupt` is cancelled, before or during the
    /// shutdown grace: running jobs are interrupted and released back to their queue with
    /// their attempt uncounted, then `run` returns once those releases are written.
    pub fn with_interrupt(mut self, interrupt: CancellationToken) -> Self {
        self.interrupt = interrupt;
        self
    }

    /// Reports every attempt and settlement to `events` (by default they are only logged).
    pub fn with_events(mut self, events: Events) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("the worker has not started")
            .events = events;
        self
    }

    /// Runs until `shutdown` resolves, then drains as the module doc describes. Fails, once
    /// drained, when the store went away underneath (`StoreError::Gone`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        // A child token: the worker cancels it itself when its store is gone.
        let (shared, interrupt) = (self.shared, self.interrupt.child_token());
        let mut jobs = JoinSet::new();
        let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel();
        let mut queues = queues::Queues::start(shared.clone(), jobs_tx).await?;
        let mut reloads = shared.config.subscribe();
        let settler = tokio::spawn(settler::settler(shared.clone(), self.settlements));
        let background = CancellationToken::new();
        let renewer = tokio::spawn(renewer::renewer(shared.clone(), background.clone()));
        let (gone_tx, mut gone) = oneshot::channel();
        let reaper = tokio::spawn(reaper::reaper(shared.clone(), background.clone(), gone_tx));
        let unparker = tokio::spawn(unparker::unparker(
            shared.clone(),
            self.parks,
            background.clone(),
        ));
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(owner = %shared.owner, queues = queues.len(), threads, "worker started");

        tokio::pin!(shutdown);
        let mut fatal = None;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = interrupt.cancelled() => break,
                Ok(error) = &mut gone => {
                    tracing::error!("{error}: stopping the host");
                    fatal = Some(error);
                    interrupt.cancel();
                    break;
                }
                Some(job) = jobs_rx.recv() => { jobs.spawn(job); }
                Ok(()) = reloads.changed() => {
                    let config = reloads.borrow_and_update().clone();
                    queues.apply(&config).await;
                }
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            }
        }
        tracing::info!(
            running = jobs.len(),
            "shutting down: no new jobs are claimed"
        );
        queues.stop().await;
        while let Ok(job) = jobs_rx.try_recv() {
            jobs.spawn(job);
        }
        let grace = shared.config.current().host.shutdown_grace;
        let drain = async { while jobs.join_next().await.is_some() {} };
        let drained = tokio::select! {
            drained = tokio::time::timeout(grace, drain) => drained.is_ok(),
            () = interrupt.cancelled() => false,
        };
        if !drained {
            let running: Vec<_> = lock(&shared.running).values().cloned().collect();
            let why = if interrupt.is_cancelled() {
                "interrupted"
            } else {
                "shutdown grace over"
            };
            tracing::warn!(
                jobs = running.len(),
                "{why}: interrupting running jobs and returning them to the queue"
            );
            for job in running {
                job.stop(StopReason::Shutdown);
            }
            while jobs.join_next().await.is_some() {}
        }
        background.cancel();
        let _ = renewer.await;
        let _ = reaper.await;
        let _ = unparker.await;
        drop(shared);
        settler.await?;
        if let Some(error) = fatal {
            return Err(error.into());
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
