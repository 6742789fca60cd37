//! The worker: claims jobs from the job store, runs each in the sandbox, settles the outcome.
//!
//! One claim loop per configured queue, each bounded by the queue's concurrency and all of
//! them by the host's global cap. Finished jobs are settled in batches by one settler task;
//! leases of running jobs are renewed in one batch by one renewer task, which also learns of
//! jobs cancelled while they run; a reaper returns jobs of dead hosts and prunes old ones.
//!
//! Shutdown is injected (`run(shutdown)`): claiming stops at once, running jobs get
//! `shutdown_grace` to finish, then their sandboxes are interrupted and the jobs released
//! back to the queue with their attempt uncounted. Nothing is lost: whatever is not settled
//! comes back when its lease expires.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, JobSettings};
use crate::host_api::{ChildEnqueuer, ChildRequest, EnqueueFuture, JobHooks};
use crate::registry::{Registry, describe};
use crate::sandbox::{Attempt, ErrorKind, JobInput, Outcome};
use crate::store::{
    AttemptRecord, Job, JobStore, NewJob, Progress, SettleAction, Settlement, Timestamp,
};

/// Most jobs claimed in one round trip.
const CLAIM_BATCH: usize = 64;
/// Most settlements written in one round trip.
const SETTLE_BATCH: usize = 256;
/// Longest an idle claim loop waits before looking again (delayed jobs, paused queues).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How often the reaper recovers expired leases and prunes finished jobs.
const REAP_EVERY: Duration = Duration::from_secs(5);
/// Wait before a job whose handler is not loaded is offered again.
const UNKNOWN_HANDLER_RETRY: Duration = Duration::from_secs(2);
/// Backoff bounds when the job store is unreachable.
const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Where the worker reads the time; tests drive it by hand.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

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

/// Everything the worker's tasks share.
struct Shared<S> {
    store: Arc<S>,
    registry: Arc<Registry>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    /// This host's lease owner id: unique per process.
    owner: String,
    /// Jobs running here, by id; std lock, never held across an `.await`.
    running: Mutex<HashMap<String, Arc<Running>>>,
    settle: mpsc::UnboundedSender<Settlement>,
    global: Arc<Semaphore>,
    /// Told of every job just before its handler is instantiated (metrics, benchmarks).
    on_start: Option<StartHook>,
    /// What handlers' `enqueue` calls go through; one for all jobs.
    children: Arc<dyn ChildEnqueuer>,
}

/// Callback run when a job starts on this host.
pub type StartHook = Arc<dyn Fn(&Job) + Send + Sync>;

/// Claims and runs jobs until shut down.
pub struct Worker<S> {
    shared: Arc<Shared<S>>,
    settlements: mpsc::UnboundedReceiver<Settlement>,
}

impl<S: JobStore + 'static> Worker<S> {
    pub fn new(
        store: Arc<S>,
        registry: Arc<Registry>,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (settle, settlements) = mpsc::unbounded_channel();
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let global = Arc::new(Semaphore::new(config.host.concurrency));
        Worker {
            shared: Arc::new(Shared {
                children: Arc::new(StoreChildren {
                    store: store.clone(),
                    config: config.clone(),
                    clock: clock.clone(),
                }),
                store,
                registry,
                config,
                clock,
                owner,
                running: Mutex::default(),
                settle,
                global,
                on_start: None,
            }),
            settlements,
        }
    }

    /// Calls `hook` with every job right before its handler is instantiated.
    pub fn on_start(mut self, hook: StartHook) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("the worker has not started")
            .on_start = Some(hook);
        self
    }

    /// This host's lease owner id.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Runs until `shutdown` resolves, then drains as the module doc describes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let shared = self.shared;
        for (name, queue) in &shared.config.queues {
            if queue.paused {
                shared.store.pause(name).await?;
            }
        }
        let stop_claiming = CancellationToken::new();
        let mut jobs = JoinSet::new();
        let mut loops = JoinSet::new();
        let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel();
        for (name, queue) in &shared.config.queues {
            let limit = Arc::new(Semaphore::new(queue.concurrency));
            let task = claim_loop(shared.clone(), name.clone(), limit, stop_claiming.clone());
            loops.spawn(task(jobs_tx.clone()));
        }
        drop(jobs_tx);
        let settler = tokio::spawn(settler(shared.clone(), self.settlements));
        let background = CancellationToken::new();
        let renewer = tokio::spawn(renewer(shared.clone(), background.clone()));
        let reaper = tokio::spawn(reaper(shared.clone(), background.clone()));
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(owner = %shared.owner, queues = shared.config.queues.len(), threads, "worker started");

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(job) = jobs_rx.recv() => { jobs.spawn(job); }
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            }
        }
        tracing::info!(
            running = jobs.len(),
            "shutting down: no new jobs are claimed"
        );
        stop_claiming.cancel();
        while loops.join_next().await.is_some() {}
        while let Ok(job) = jobs_rx.try_recv() {
            jobs.spawn(job);
        }
        let grace = shared.config.host.shutdown_grace;
        let drained =
            tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            let running: Vec<_> = lock(&shared.running).values().cloned().collect();
            tracing::warn!(
                jobs = running.len(),
                "shutdown grace over: interrupting running jobs and returning them to the queue"
            );
            for job in running {
                job.stop(StopReason::Shutdown);
            }
            while jobs.join_next().await.is_some() {}
        }
        background.cancel();
        let _ = renewer.await;
        let _ = reaper.await;
        drop(shared);
        settler.await?;
        tracing::info!("worker stopped");
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

type JobFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The claim loop of one queue, as a function of the channel it hands job futures to.
fn claim_loop<S: JobStore + 'static>(
    shared: Arc<Shared<S>>,
    queue: String,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
) -> impl FnOnce(mpsc::UnboundedSender<JobFuture>) -> JobFuture {
    move |jobs| {
        Box::pin(async move {
            let mut failures = 0u32;
            while !stop.is_cancelled() {
                let permits = tokio::select! {
                    permits = acquire(&shared.global, &limit) => permits,
                    () = stop.cancelled() => return,
                };
                let now = shared.clock.now();
                let lease = shared.config.host.lease;
                let claimed = shared
                    .store
                    .claim(&queue, permits.len(), &shared.owner, lease, now)
                    .await;
                let claimed = match claimed {
                    Ok(claimed) => {
                        failures = 0;
                        claimed
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%queue, "failed to claim jobs: {}", describe(&error));
                        drop(permits);
                        tokio::select! {
                            () = tokio::time::sleep(store_backoff(failures)) => {}
                            () = stop.cancelled() => return,
                        }
                        continue;
                    }
                };
                if claimed.is_empty() {
                    drop(permits);
                    idle(&shared, &queue, &stop).await;
                    continue;
                }
                let mut permits = permits.into_iter();
                for job in claimed {
                    let permit = permits.next().expect("one permit per claimed job");
                    let _ = jobs.send(Box::pin(run_job(shared.clone(), job, permit)));
                }
            }
        })
    }
}

/// Waits for at least one free slot in both the global cap and the queue's, then takes as
/// many more as are free right now, up to a claim batch.
async fn acquire(global: &Arc<Semaphore>, queue: &Arc<Semaphore>) -> Vec<SlotPermit> {
    let first = SlotPermit {
        _queue: queue.clone().acquire_owned().await.expect("never closed"),
        _global: global.clone().acquire_owned().await.expect("never closed"),
    };
    let mut permits = vec![first];
    while permits.len() < CLAIM_BATCH {
        let Ok(q) = queue.clone().try_acquire_owned() else {
            break;
        };
        let Ok(g) = global.clone().try_acquire_owned() else {
            break;
        };
        permits.push(SlotPermit {
            _queue: q,
            _global: g,
        });
    }
    permits
}

/// A running job's place in its queue's concurrency and in the host's global cap.
struct SlotPermit {
    _queue: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

async fn idle<S: JobStore>(shared: &Shared<S>, queue: &str, stop: &CancellationToken) {
    let queues = [queue.to_owned()];
    tokio::select! {
        result = shared.store.wait(&queues, shared.clock.now(), IDLE_WAIT) => {
            if let Err(error) = result {
                tracing::warn!(%queue, "failed to wait for jobs: {}", describe(&error));
                tokio::time::sleep(STORE_RETRY_MIN).await;
            }
        }
        () = stop.cancelled() => {}
    }
}

fn store_backoff(failures: u32) -> Duration {
    STORE_RETRY_MIN
        .saturating_mul(1 << failures.min(10))
        .min(STORE_RETRY_MAX)
}

/// Runs one claimed job and queues its settlement.
async fn run_job<S: JobStore + 'static>(shared: Arc<Shared<S>>, job: Job, _permit: SlotPermit) {
    let Some(handler) = shared.registry.get(&job.handler) else {
        let settlement = unknown_handler(&shared, &job);
        let _ = shared.settle.send(settlement);
        return;
    };
    let settings = shared.config.job_settings(&job.handler, &job.queue);
    let running = Arc::new(Running {
        cancel: CancellationToken::new(),
        reason: Mutex::new(None),
    });
    lock(&shared.running).insert(job.id.clone(), running.clone());
    let started_at = shared.clock.now();
    let (progress_hook, progress_task) = progress_writer(shared.clone(), job.id.clone());
    let hooks = JobHooks {
        progress: Some(progress_hook),
        enqueue: Some(shared.children.clone()),
    };
    let input = JobInput {
        id: job.id.clone(),
        handler: job.handler.clone(),
        queue: job.queue.clone(),
        payload: job.payload.clone(),
        attempt: job.attempts,
        max_attempts: job.max_attempts,
    };
    if let Some(hook) = &shared.on_start {
        hook(&job);
    }
    let runtime = shared.registry.runtime();
    let attempt = runtime
        .run(
            &handler,
            &input,
            &settings.limits,
            &settings.grants,
            hooks,
            &running.cancel,
        )
        .await;
    // The store, and with it the progress hook, is gone: the writer (if any) ends.
    let writer = lock(&progress_task).take();
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    lock(&shared.running).remove(&job.id);
    let ended_at = shared.clock.now();
    log_attempt(&job, &attempt);
    if let Some(settlement) = settle_attempt(
        &job,
        &settings,
        attempt,
        running.reason(),
        (started_at, ended_at),
        &shared,
    ) {
        let _ = shared.settle.send(settlement);
    }
}

fn log_attempt(job: &Job, attempt: &Attempt) {
    let outcome = attempt.outcome.class();
    let (id, handler) = (&job.id, &job.handler);
    match attempt.outcome.message() {
        None => {
            tracing::info!(job = %id, %handler, attempt = job.attempts, wall = ?attempt.wall, "job succeeded")
        }
        Some(message) => {
            tracing::warn!(job = %id, %handler, attempt = job.attempts, %outcome, "attempt failed: {message}")
        }
    }
}

/// A job whose handler is not loaded goes back to wait, or fails once the grace is over.
fn unknown_handler<S>(shared: &Shared<S>, job: &Job) -> Settlement {
    let now = shared.clock.now();
    let grace = shared.config.host.unknown_handler_grace;
    let action = if now.since(job.created_at) >= grace {
        let error = format!(
            "handler `{}` is not loaded (waited {})",
            job.handler,
            humantime::format_duration(grace)
        );
        tracing::error!(job = %job.id, "{error}; failing the job");
        SettleAction::Fail { error }
    } else {
        tracing::warn!(job = %job.id, handler = %job.handler, "handler is not loaded; the job waits");
        SettleAction::Release {
            at: now + UNKNOWN_HANDLER_RETRY,
        }
    };
    Settlement {
        id: job.id.clone(),
        owner: shared.owner.clone(),
        attempt: None,
        action,
    }
}

/// Turns an attempt into the settlement that records it; `None` if the job is no longer ours.
fn settle_attempt<S>(
    job: &Job,
    settings: &JobSettings,
    attempt: Attempt,
    stopped: Option<StopReason>,
    (started_at, ended_at): (Timestamp, Timestamp),
    shared: &Shared<S>,
) -> Option<Settlement> {
    let record = AttemptRecord {
        attempt: job.attempts,
        digest: Some(attempt.digest.clone()),
        started_at,
        ended_at,
        outcome: attempt.outcome.class(),
        message: attempt.outcome.message(),
        wall_ms: u64::try_from(attempt.wall.as_millis()).unwrap_or(u64::MAX),
        fuel: Some(attempt.fuel_used),
    };
    let (action, record) = match (&attempt.outcome, stopped) {
        (_, Some(StopReason::LeaseLost)) => return None,
        (Outcome::Cancelled, Some(StopReason::Shutdown)) => {
            (SettleAction::Release { at: ended_at }, None)
        }
        (Outcome::Cancelled, _) => (SettleAction::Cancel, Some(record)),
        (Outcome::Ok(_), _) if shared.config.retention(&job.queue).succeeded.keeps_none() => {
            (SettleAction::SucceedAndDelete, None)
        }
        (Outcome::Ok(result), _) => (
            SettleAction::Succeed {
                result: result.clone(),
            },
            Some(record),
        ),
        (outcome, _) => {
            let error = outcome.message().unwrap_or_default();
            let action = if outcome.is_retryable() && job.attempts < job.max_attempts {
                SettleAction::Retry {
                    at: ended_at + retry_delay(settings, job.attempts, outcome),
                    error,
                }
            } else {
                SettleAction::Fail { error }
            };
            (action, Some(record))
        }
    };
    Some(Settlement {
        id: job.id.clone(),
        owner: shared.owner.clone(),
        attempt: record,
        action,
    })
}

/// The configured backoff for `attempt`, or longer if the handler asked for a longer delay.
fn retry_delay(settings: &JobSettings, attempt: u32, outcome: &Outcome) -> Duration {
    let backoff = settings.backoff.delay(attempt, rand::random::<f64>());
    match outcome {
        Outcome::Error {
            kind: ErrorKind::Retry { delay: Some(asked) },
            ..
        } => backoff.max(*asked),
        _ => backoff,
    }
}

/// A progress hook that keeps only the latest report, and the task writing it to the store.
/// The task ends when the hook (held by the job's sandbox) is dropped.
fn progress_writer<S: JobStore + 'static>(
    shared: Arc<Shared<S>>,
    id: String,
) -> (
    crate::host_api::ProgressHook,
    Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
) {
    let (tx, rx) = watch::channel::<Option<Progress>>(None);
    let rx = Mutex::new(Some(rx));
    let task = Arc::new(Mutex::new(None));
    let spawned = task.clone();
    // The writer task starts with the first report: most jobs never report progress.
    let hook = Arc::new(move |percent, message| {
        let _ = tx.send(Some(Progress { percent, message }));
        if let Some(rx) = lock(&rx).take() {
            let writer = write_progress(shared.clone(), id.clone(), rx);
            *lock(&spawned) = Some(tokio::spawn(writer));
        }
    });
    (hook, task)
}

/// Records the latest progress of job `id` until its hook is dropped.
async fn write_progress<S: JobStore>(
    shared: Arc<Shared<S>>,
    id: String,
    mut rx: watch::Receiver<Option<Progress>>,
) {
    while rx.changed().await.is_ok() {
        let Some(progress) = rx.borrow_and_update().clone() else {
            continue;
        };
        let now = shared.clock.now();
        if let Err(error) = shared
            .store
            .progress(&id, &shared.owner, progress, now)
            .await
        {
            tracing::debug!(job = %id, "progress not recorded: {error}");
        }
    }
}

/// Child jobs enqueued by handlers go straight into the job store.
struct StoreChildren<S> {
    store: Arc<S>,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
}

impl<S: JobStore + 'static> ChildEnqueuer for StoreChildren<S> {
    fn enqueue(&self, request: ChildRequest) -> EnqueueFuture {
        let store = self.store.clone();
        let now = self.clock.now();
        let job = child_job(&self.config, now, request);
        Box::pin(async move {
            let job = job?;
            let enqueued = store
                .enqueue(vec![job], now)
                .await
                .map_err(|error| error.to_string())?;
            enqueued
                .into_iter()
                .next()
                .map(|e| e.id)
                .ok_or_else(|| "the job store returned no id".to_owned())
        })
    }
}

/// The job a handler's enqueue request stands for, with settings from config.
pub fn child_job(config: &Config, now: Timestamp, request: ChildRequest) -> Result<NewJob, String> {
    let queue = request
        .queue
        .unwrap_or_else(|| config.queue_for(&request.handler).to_owned());
    let Some(queue_config) = config.queues.get(&queue) else {
        return Err(format!("queue `{queue}` is not configured"));
    };
    let settings = config.job_settings(&request.handler, &queue);
    Ok(NewJob {
        handler: request.handler,
        priority: request.priority.unwrap_or(queue_config.priority),
        run_at: request.delay.map(|delay| now + delay),
        max_attempts: settings.max_attempts,
        unique_key: request.unique_key,
        payload: request.payload,
        queue,
    })
}

/// Writes settlements in batches: whatever finished while the last batch was being written.
/// If the store is unreachable, keeps them and retries with backoff; nothing is dropped.
async fn settler<S: JobStore>(
    shared: Arc<Shared<S>>,
    mut settlements: mpsc::UnboundedReceiver<Settlement>,
) {
    let mut batch = Vec::new();
    let mut failures = 0u32;
    let (store, clock) = (shared.store.clone(), shared.clock.clone());
    // Holding `shared` would keep the sender alive and this task from ever ending.
    drop(shared);
    loop {
        if batch.is_empty() {
            match settlements.recv().await {
                Some(settlement) => batch.push(settlement),
                None => return,
            }
        }
        while batch.len() < SETTLE_BATCH {
            match settlements.try_recv() {
                Ok(settlement) => batch.push(settlement),
                Err(_) => break,
            }
        }
        match store.settle(batch.clone(), clock.now()).await {
            Ok(stale) => {
                failures = 0;
                batch.clear();
                for id in stale {
                    tracing::warn!(job = %id, "settlement not applied: the job's lease was lost");
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(
                    jobs = batch.len(),
                    "failed to settle jobs, will retry: {}",
                    describe(&error)
                );
                tokio::time::sleep(store_backoff(failures)).await;
            }
        }
    }
}

/// Renews the leases of every running job in one batch, a few times per lease period, and
/// interrupts jobs that were cancelled or taken over meanwhile.
async fn renewer<S: JobStore>(shared: Arc<Shared<S>>, stop: CancellationToken) {
    let period = shared.config.host.lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = stop.cancelled() => return,
        }
        let ids: Vec<String> = lock(&shared.running).keys().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let lease = shared.config.host.lease;
        let now = shared.clock.now();
        match shared.store.renew(&ids, &shared.owner, lease, now).await {
            Ok(report) => {
                let running = lock(&shared.running);
                for (ids, reason) in [
                    (&report.lost, StopReason::LeaseLost),
                    (&report.cancel_requested, StopReason::Cancelled),
                ] {
                    for id in ids {
                        if let Some(job) = running.get(id) {
                            tracing::info!(job = %id, ?reason, "interrupting running job");
                            job.stop(reason);
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(
                jobs = ids.len(),
                "failed to renew leases: {}",
                describe(&error)
            ),
        }
    }
}

/// Returns jobs of dead hosts to their queues and prunes finished jobs past retention.
async fn reaper<S: JobStore>(shared: Arc<Shared<S>>, stop: CancellationToken) {
    let retention = &shared.config.retention;
    loop {
        let now = shared.clock.now();
        match shared.store.recover(now).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "recovered jobs whose lease expired"),
            Err(error) => tracing::warn!("failed to recover expired leases: {}", describe(&error)),
        }
        if let Err(error) = shared.store.prune(retention, now).await {
            tracing::warn!("failed to prune finished jobs: {}", describe(&error));
        }
        tokio::select! {
            () = tokio::time::sleep(REAP_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
