//! The job store contract: the durable queue every Kiln host and the CLI share.
//!
//! `JobStore` is the one trait the worker, the operations layer and the CLI talk to; the
//! embedded SQLite store (`embedded/`) and the Redis store (`redis/`) implement it and pass
//! the same conformance suite (`tests/store.rs`). It is not wasmtime's `Store`, which is per
//! attempt. `any.rs` holds the store chosen by config; `lifecycle.rs` the rules both apply;
//! `defaults.rs` what a Redis record an outside producer left without priority or
//! max_attempts takes from the config.
//!
//! What holds on both stores:
//! - Time comes from the caller: every operation that compares or records a time takes `now`,
//!   so tests drive the lifecycle with a controlled clock. Only `wait` sleeps on real time.
//! - Lifecycle: enqueue -> `Scheduled` (run_at in the future) or `Waiting` -> `Active` (claimed,
//!   leased, attempt counted) -> `Succeeded` | `Scheduled`/`Waiting` (retry) | `Failed` |
//!   `Cancelled`. What a settlement or an expired lease does to a job is decided once, in
//!   `lifecycle.rs`. Delivery is at-least-once.
//! - A state change made on behalf of a worker (`renew`, `settle`, `progress`) applies only
//!   while that worker still holds the lease; otherwise it is reported back, never applied.
//! - Ready jobs of a queue are claimed by priority, then `run_at`, then enqueue order.
//! - A schedule's cron tick is enqueued once: `enqueue_tick` checks the schedule's cursor
//!   and stores the tick's job and the new cursor in one atomic step, and the cursor
//!   outlives the job (on Redis it lives in the slot of the schedule's queue).
//!
//! Where the Redis store differs (every queue lives in one Redis Cluster slot):
//! - A batch (`enqueue`, `claim`, `settle`, `renew`) is atomic per queue; on the embedded
//!   store one call is one transaction, whatever queues it spans.
//! - Unique keys are unique within their queue; the embedded store checks them across queues.
//! - Job ids are `QUEUE/UUID` (the queue is everything before the last `/`), so a job's keys
//!   are known from its id; embedded ids are plain UUIDs.

mod any;
mod defaults;
pub mod embedded;
mod job;
pub mod lifecycle;
pub mod redis;
mod retention;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use any::{AnyStore, Role, StoreConfig};
pub use defaults::JobDefaults;
pub use embedded::{Durability, EmbeddedStore};
pub use job::{
    AttemptRecord, DEFAULT_MAX_ATTEMPTS, Job, JobState, Lease, NewJob, OutcomeClass, Progress,
    ScheduleRecord, Tick, Timestamp, UnknownJobState,
};
pub use redis::{Patience, RedisEndpoint, RedisStore, RedisTarget};
pub use retention::{Keep, Retention, RetentionPolicy};

/// One result of `enqueue`, in the order of the input jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The new job's id, or the existing job's id when `existing`.
    pub id: String,
    /// True when a unique key matched an unfinished job and nothing was inserted.
    pub existing: bool,
}

/// What `renew` tells the worker about the jobs it thinks it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewReport {
    /// Jobs whose lease this owner no longer holds (recovered, re-claimed, deleted): stop
    /// them and do not settle them.
    pub lost: Vec<String>,
    /// Jobs still held but cancelled by an admin: interrupt their sandbox, settle `Cancel`.
    pub cancel_requested: Vec<String>,
}

/// The end of one claimed job's attempt, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The job.
    pub id: String,
    /// Lease owner that claimed it; a settlement from anyone else is stale.
    pub owner: String,
    /// Appended to the job's history (ignored for `Release`, which is not an attempt).
    pub attempt: Option<AttemptRecord>,
    /// What happens to the job.
    pub action: SettleAction,
}

/// What settling does to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleAction {
    /// Succeeded with this result.
    Succeed {
        /// Handler output.
        result: Vec<u8>,
    },
    /// Succeeded, and no succeeded job is kept (retention of 0): the job is deleted at once,
    /// its unique key released, instead of being recorded as succeeded.
    SucceedAndDelete,
    /// Run again at `at` (backoff). Becomes `Fail` if no attempts are left, and `Cancel` if
    /// a cancel was requested meanwhile.
    Retry {
        /// When to run again; `<= now` means waiting at once.
        at: Timestamp,
        /// Why this attempt failed.
        error: String,
    },
    /// Dead: no further attempts.
    Fail {
        /// Why.
        error: String,
    },
    /// Cancelled (normally after a cancel request interrupted it).
    Cancel,
    /// Give the job back without counting the attempt: its handler is not loaded yet, or the
    /// host is shutting down. Becomes `Cancel` if a cancel was requested meanwhile.
    Release {
        /// When it may run again.
        at: Timestamp,
    },
    /// Give the job back, uncounted, until its handler is loaded: `JobStore::unpark` wakes
    /// it then, and otherwise it runs again at `until`. Becomes `Cancel` if a cancel was
    /// requested meanwhile.
    Park {
        /// When it is offered again if no load of its handler woke it first.
        until: Timestamp,
    },
}

/// Which jobs `list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
}

/// A window into a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to skip.
    pub offset: usize,
    /// Rows to return at most.
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            offset: 0,
            limit: 50,
        }
    }
}

/// Jobs per state in one queue, for `kiln stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Queue name.
    pub queue: String,
    /// Jobs waiting for their `run_at` (may include due ones the reaper has not promoted).
    pub scheduled: u64,
    /// Jobs ready to run.
    pub waiting: u64,
    /// Jobs running.
    pub active: u64,
    /// Jobs succeeded and not yet pruned.
    pub succeeded: u64,
    /// Dead jobs not yet pruned.
    pub failed: u64,
    /// Cancelled jobs not yet pruned.
    pub cancelled: u64,
    /// Whether claims on the queue are paused.
    pub paused: bool,
}

/// Which failed jobs `retry_failed` revives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryTarget {
    /// One job; an error if it is missing or not failed.
    One(String),
    /// Every failed job, optionally of one queue only.
    AllFailed {
        /// Restrict to this queue.
        queue: Option<String>,
    },
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelOutcome {
    /// It was scheduled or waiting and is now cancelled.
    Cancelled,
    /// It is active: the cancel is recorded, `renew` reports it, the worker interrupts it.
    Requested,
    /// It had already finished in this state; nothing changed.
    AlreadyFinished(JobState),
}

/// Errors from a job store. Callers branch on `NotFound`, `InvalidState` and `LeaseNotHeld`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No job with this id.
    #[error("job `{0}` not found")]
    NotFound(String),
    /// The operation does not apply to the job's current state.
    #[error("job `{id}` is {state}, cannot {action}")]
    InvalidState {
        /// The job.
        id: String,
        /// Its current state.
        state: JobState,
        /// What was attempted ("retry").
        action: &'static str,
    },
    /// A worker acted on a job whose lease it no longer holds.
    #[error("lease on job `{id}` is not held by `{owner}`")]
    LeaseNotHeld {
        /// The job.
        id: String,
        /// The worker that thought it held it.
        owner: String,
    },
    /// A new job was rejected before storing anything.
    #[error("invalid job for handler `{handler}`: {reason}")]
    InvalidJob {
        /// The job's handler.
        handler: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored record could not be decoded.
    #[error("job `{id}` is corrupt: {reason}")]
    Corrupt {
        /// The job.
        id: String,
        /// What could not be decoded.
        reason: String,
    },
    /// The store file was written by a newer Kiln.
    #[error(
        "job store `{}` has schema version {found}, newer than the {supported} this kiln supports",
        path.display()
    )]
    IncompatibleSchema {
        /// The store file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Newest version this build understands.
        supported: i64,
    },
    /// The embedded store file does not exist, and this caller does not create stores
    /// (only `kiln run` does: a mistyped path must not become a new, empty store).
    #[error("job store `{}` does not exist (`kiln run` creates it)", path.display())]
    Missing {
        /// The store file.
        path: PathBuf,
    },
    /// The embedded store file cannot be written (its permissions, a read-only mount).
    #[error("job store `{}` is read-only", path.display())]
    ReadOnly {
        /// The store file.
        path: PathBuf,
    },
    /// The embedded store file was deleted or replaced since this handle opened it: what
    /// is written through the handle reaches no one else.
    #[error("job store `{}` was deleted or replaced while in use", path.display())]
    Gone {
        /// The store file.
        path: PathBuf,
    },
    /// The backend (SQLite, Redis) failed; `context` says what was being done.
    #[error("job store failed to {context}")]
    Backend {
        /// "claim jobs from queue `emails`", "open `kiln.db`".
        context: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether this says the store cannot be reached or used at all (its backend failed, or
    /// its file is missing, read-only or gone), rather than something about one job.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Backend { .. }
                | StoreError::Missing { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::Gone { .. }
        )
    }
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The durable job queue. See the module doc for the rules every implementation keeps.
///
/// An idle worker calls `wait`, which returns when a job may have become ready: one is
/// waiting, a delayed one falls due, or something changed (an enqueue, a retry, a release).
pub trait JobStore: Send + Sync {
    /// Fails with `Gone` when the store this handle opened is no longer the one at its
    /// address (an embedded file deleted or replaced underneath); a Redis store always
    /// passes. The worker's reaper calls it every round.
    fn check(&self) -> impl Future<Output = StoreResult<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Stores a batch of jobs atomically; results are in input order. A job with a
    /// `unique_key` that matches an unfinished job (also one earlier in the same batch) is not
    /// inserted and returns that job's id with `existing: true`.
    fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Enqueued>>> + Send;

    /// Claims up to `max` ready jobs of `queue` (waiting, or scheduled with `run_at <= now`),
    /// highest priority first, then by `run_at`, then by enqueue order. Each becomes `Active`
    /// with a lease for `owner` until `now + lease`, and its `attempts` grows by one. A paused
    /// queue yields nothing. Returned in claim order.
    fn claim(
        &self,
        queue: &str,
        max: usize,
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<Job>>> + Send;

    /// Extends `owner`'s leases on `ids` to `now + lease` and reports which it lost and which
    /// were cancelled meanwhile.
    fn renew(
        &self,
        ids: &[String],
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<RenewReport>> + Send;

    /// Applies a batch of settlements in one transaction. Returns the ids not applied because
    /// the job is no longer active under that owner (stale); the rest are applied.
    fn settle(
        &self,
        batch: Vec<Settlement>,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Records progress on a job `owner` holds; `LeaseNotHeld` otherwise.
    fn progress(
        &self,
        id: &str,
        owner: &str,
        progress: Progress,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The reaper. Active jobs whose lease expired before `now` go back to `Waiting` with a
    /// `Lost` attempt record, or to `Failed` when no attempts are left (`Cancelled` if a cancel
    /// was requested). Also promotes due `Scheduled` jobs to `Waiting`. Returns the number of
    /// expired leases it took back.
    fn recover(&self, now: Timestamp) -> impl Future<Output = StoreResult<usize>> + Send;

    /// One job, or `None` if there is no such id.
    fn get(&self, id: &str) -> impl Future<Output = StoreResult<Option<Job>>> + Send;

    /// Jobs matching `filter`, newest first.
    fn list(
        &self,
        filter: ListFilter,
        page: Page,
    ) -> impl Future<Output = StoreResult<Vec<Job>>> + Send;

    /// Per-queue counts for every queue that has jobs or is paused, sorted by queue name.
    fn counts(&self) -> impl Future<Output = StoreResult<Vec<QueueCounts>>> + Send;

    /// Moves failed jobs back to `Waiting` at `now` with `attempts` reset to 0 (so they get
    /// `max_attempts` again); history is kept. Returns how many were revived. `One` fails
    /// with `NotFound` or `InvalidState` when the job is missing or not failed.
    fn retry_failed(
        &self,
        target: RetryTarget,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<usize>> + Send;

    /// Cancels a job: scheduled/waiting ones at once, active ones by request (see
    /// `CancelOutcome`). `NotFound` if there is no such job.
    fn cancel(
        &self,
        id: &str,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<CancelOutcome>> + Send;

    /// Stops claims on `queue` (running jobs continue). Idempotent.
    fn pause(&self, queue: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Lets claims on `queue` resume. Idempotent.
    fn resume(&self, queue: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Deletes the waiting and scheduled jobs of `queue`; returns how many.
    fn clear(&self, queue: &str) -> impl Future<Output = StoreResult<usize>> + Send;

    /// Deletes the finished jobs of each queue beyond that queue's retention in `policy`;
    /// returns how many.
    fn prune(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<usize>> + Send;

    /// Returns when a job may have become ready in one of the unpaused `queues`, or after
    /// `timeout`: at once if one is waiting or a delayed one is due at `now`; when the earliest
    /// delayed job falls due (counted from `now`); and on any enqueue (delayed jobs too, since
    /// one may be due sooner), retry, release, recovery or resume after the call began. The
    /// checks and the subscription to changes leave no gap for a change to slip through.
    /// Spurious returns are allowed.
    fn wait(
        &self,
        queues: &[String],
        now: Timestamp,
        timeout: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Wakes the jobs of `queues` parked for `handler` (`SettleAction::Park`): each one still
    /// scheduled becomes ready at `now`, and wakes a waiting worker. Returns how many.
    fn unpark(
        &self,
        handler: &str,
        queues: &[String],
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<usize>> + Send;

    /// The earliest `run_at` among scheduled jobs of the unpaused `queues`.
    fn next_run_at(
        &self,
        queues: &[String],
    ) -> impl Future<Output = StoreResult<Option<Timestamp>>> + Send;

    /// Enqueues `job`, which carries its schedule `tick`, to run now, unless that schedule's
    /// cursor (its [`ScheduleRecord`]) is already at or past `tick.at`: then nothing is
    /// stored and `None` returned. The check, the insert and the new record are one atomic
    /// step, and the record outlives the job, so each cron tick is enqueued once however many
    /// hosts try and however long ago its job finished. A manual tick is always enqueued and
    /// leaves the cursor where it was. On Redis the record lives in the job's queue's slot.
    fn enqueue_tick(
        &self,
        job: NewJob,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<Enqueued>>> + Send;

    /// The record of each `(schedule, queue)` in `schedules`, in order; `None` for a
    /// schedule that never enqueued a tick (into that queue, on Redis).
    fn schedule_records(
        &self,
        schedules: &[(String, String)],
    ) -> impl Future<Output = StoreResult<Vec<Option<ScheduleRecord>>>> + Send;
}
