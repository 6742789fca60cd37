//! The job store contract: the durable queue every Kiln host and the CLI share.
//!
//! `JobStore` is the one trait the worker, the operations layer and the CLI talk to; the
//! embedded SQLite store (`embedded/`) and the Redis store (`redis/`) implement it and pass
//! the same conformance suite (`tests/store.rs`). It is not wasmtime's `Store`, which is per
//! attempt. `any.rs` holds the store chosen by config; `lifecycle.rs` the rules both apply.
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
//!
//! Where the Redis store differs (every queue lives in one Redis Cluster slot):
//! - A batch (`enqueue`, `claim`, `settle`, `renew`) is atomic per queue; on the embedded
//!   store one call is one transaction, whatever queues it spans.
//! - Unique keys are unique within their queue; the embedded store checks them across queues.
//! - Job ids are `QUEUE/UUID` (the queue is everything before the last `/`), so a job's keys
//!   are known from its id; embedded ids are plain UUIDs.

mod any;
pub mod embedded;
pub mod lifecycle;
pub mod redis;

use std::fmt;
use std::future::Future;
use std::ops::Add;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capabilities::http::HttpUsage;
use crate::capabilities::tcp::TcpUsage;
pub use any::{AnyStore, StoreConfig};
pub use embedded::{Durability, EmbeddedStore};
pub use redis::{RedisEndpoint, RedisStore, RedisTarget};

/// Attempts a job gets when the producer does not say (`NewJob::new`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Milliseconds since the Unix epoch. Passed in by callers so tests control the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock, for callers at the edge (worker loop, CLI); the store never calls it.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        let millis = i64::try_from(rhs.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, or the raw number if it is out of chrono's range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(at) => write!(f, "{}", at.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "{}ms", self.0),
        }
    }
}

/// What a producer asks for. The store assigns the id, state and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    /// Handler name (the `.wasm` file stem) that will run the job.
    pub handler: String,
    /// Queue the job waits in; workers claim per queue.
    pub queue: String,
    /// Opaque bytes handed to the handler.
    pub payload: Vec<u8>,
    /// Higher runs first among ready jobs of a queue; equal priorities run FIFO.
    pub priority: i32,
    /// Earliest time the job may run; `None` means as soon as possible.
    pub run_at: Option<Timestamp>,
    /// Attempts (including the first) before the job is failed for good; at least 1.
    pub max_attempts: u32,
    /// Deduplication key: while an unfinished job with this key exists (in any queue),
    /// enqueueing another returns the existing job's id instead.
    pub unique_key: Option<String>,
}

impl NewJob {
    /// A job to run now with priority 0, `DEFAULT_MAX_ATTEMPTS` and no unique key.
    pub fn new(handler: impl Into<String>, queue: impl Into<String>, payload: Vec<u8>) -> Self {
        NewJob {
            handler: handler.into(),
            queue: queue.into(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            unique_key: None,
        }
    }
}

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at` (delayed job or retry backoff). Claimable once `run_at <= now`;
    /// the reaper (`recover`) moves due ones to `Waiting` so counts stay truthful.
    Scheduled,
    /// Ready to be claimed.
    Waiting,
    /// Claimed by a worker that holds a lease on it.
    Active,
    /// Finished with a result.
    Succeeded,
    /// Dead: a fatal error, or every attempt used up. `retry_failed` revives it.
    Failed,
    /// Cancelled before or while it ran.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Waiting,
        JobState::Active,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The lowercase name used in storage, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Succeeded, failed or cancelled: the job will not run again unless retried by an admin.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job state name that is not one of `JobState::ALL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown job state `{0}` (expected scheduled, waiting, active, succeeded, failed or cancelled)"
)]
pub struct UnknownJobState(pub String);

impl FromStr for JobState {
    type Err = UnknownJobState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_owned()))
    }
}

/// Who holds an active job, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Worker identity (host id + slot); only this owner may renew or settle the job.
    pub owner: String,
    /// After this instant the reaper may take the job back (the host is presumed dead).
    pub expires_at: Timestamp,
}

/// Progress a running handler reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0..=100; larger values are stored as 100.
    pub percent: u8,
    /// Free text shown by `kiln status`.
    pub message: Option<String>,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeClass {
    /// The handler returned a result.
    Ok,
    /// The handler returned an error (retryable or fatal).
    Error,
    /// The wall-clock deadline interrupted it.
    Timeout,
    /// The fuel budget ran out.
    OutOfFuel,
    /// It tried to grow memory past its cap.
    MemoryLimit,
    /// The guest trapped (e.g. unreachable, out-of-bounds access).
    Trap,
    /// The guest panicked (a trap with a panic message).
    Panic,
    /// It was cancelled while running.
    Cancelled,
    /// Its lease expired: the host running it died or stalled.
    Lost,
}

impl OutcomeClass {
    /// The kebab-case name stored with each attempt and shown by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Ok => "ok",
            OutcomeClass::Error => "error",
            OutcomeClass::Timeout => "timeout",
            OutcomeClass::OutOfFuel => "out-of-fuel",
            OutcomeClass::MemoryLimit => "memory-limit",
            OutcomeClass::Trap => "trap",
            OutcomeClass::Panic => "panic",
            OutcomeClass::Cancelled => "cancelled",
            OutcomeClass::Lost => "lost",
        }
    }
}

impl fmt::Display for OutcomeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of a job, kept in its history for `kiln status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number (the job's `attempts` when it was claimed).
    pub attempt: u32,
    /// Content digest of the handler version that ran it; `None` if it never started.
    pub digest: Option<String>,
    /// When the attempt was claimed.
    pub started_at: Timestamp,
    /// When its outcome was known.
    pub ended_at: Timestamp,
    /// How it ended.
    pub outcome: OutcomeClass,
    /// Error text or other detail.
    pub message: Option<String>,
    /// Wall-clock time spent running the handler.
    pub wall_ms: u64,
    /// Fuel consumed, when a fuel budget was set.
    pub fuel: Option<u64>,
    /// What the attempt did through its `http` grant; absent when it made no request (and in
    /// records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpUsage>,
    /// What the attempt did through its `tcp` grant; absent when it tried nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpUsage>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// UUID v7 text, so ids sort by creation time.
    pub id: String,
    /// Handler name that runs the job.
    pub handler: String,
    /// Queue it belongs to.
    pub queue: String,
    /// Opaque bytes handed to the handler.
    pub payload: Vec<u8>,
    /// Higher runs first.
    pub priority: i32,
    /// Lifecycle state.
    pub state: JobState,
    /// Attempts started so far (claims, minus releases); reset by `retry_failed`.
    pub attempts: u32,
    /// Attempts allowed before the job fails for good.
    pub max_attempts: u32,
    /// Earliest time the job may (next) run.
    pub run_at: Timestamp,
    /// Set while `Active`.
    pub lease: Option<Lease>,
    /// The handler's result once succeeded.
    pub result: Option<Vec<u8>>,
    /// Last error message (kept after a retry so operators see why it is retrying).
    pub error: Option<String>,
    /// Last progress the handler reported.
    pub progress: Option<Progress>,
    /// Deduplication key given at enqueue.
    pub unique_key: Option<String>,
    /// An admin cancelled the job while it was active; the worker interrupts it.
    pub cancel_requested: bool,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// Last state change.
    pub updated_at: Timestamp,
    /// When it reached succeeded, failed or cancelled.
    pub finished_at: Option<Timestamp>,
    /// Every attempt so far, oldest first.
    pub history: Vec<AttemptRecord>,
}

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

/// How many finished jobs of one state a queue keeps, and for how long: a job is deleted
/// once it is beyond the newest `count` or older than `age`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// How many of the newest finished jobs are kept at most; `u64::MAX` is no limit.
    pub count: u64,
    /// How long after finishing a job is kept at most; `Duration::MAX` is no limit.
    pub age: Duration,
}

impl Keep {
    /// Keeps every job, forever.
    pub const ALL: Keep = Keep {
        count: u64::MAX,
        age: Duration::MAX,
    };

    /// Whether no finished job is kept at all (a count or an age of zero).
    pub fn keeps_none(&self) -> bool {
        self.count == 0 || self.age.is_zero()
    }

    /// The count limit, `None` when there is none.
    pub fn max_count(&self) -> Option<u64> {
        (self.count != u64::MAX).then_some(self.count)
    }

    /// The age limit, `None` when there is none.
    pub fn max_age(&self) -> Option<Duration> {
        (self.age != Duration::MAX).then_some(self.age)
    }
}

/// How long a queue's finished jobs are kept, per finished state, so the store does not grow
/// without bound. The default keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Jobs that succeeded; usually kept only for inspection, so briefly.
    pub succeeded: Keep,
    /// Jobs that failed for good (the dead letters); kept longer so they can be retried.
    pub failed: Keep,
    /// Jobs that were cancelled.
    pub cancelled: Keep,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded: Keep::ALL,
            failed: Keep::ALL,
            cancelled: Keep::ALL,
        }
    }
}

impl Retention {
    /// Each finished state with what is kept of it.
    pub fn rules(&self) -> [(JobState, Keep); 3] {
        [
            (JobState::Succeeded, self.succeeded),
            (JobState::Failed, self.failed),
            (JobState::Cancelled, self.cancelled),
        ]
    }
}

/// The retention of every queue: queues named in `queues` by their own, every other queue
/// by `default`. Counts are per queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub default: Retention,
    pub queues: std::collections::BTreeMap<String, Retention>,
}

impl RetentionPolicy {
    /// The same retention for every queue.
    pub fn uniform(retention: Retention) -> Self {
        RetentionPolicy {
            default: retention,
            queues: Default::default(),
        }
    }

    /// The retention of `queue`.
    pub fn of(&self, queue: &str) -> Retention {
        self.queues.get(queue).copied().unwrap_or(self.default)
    }
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

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The durable job queue. See the module doc for the rules every implementation keeps.
///
/// An idle worker calls `wait`, which returns when a job may have become ready: one is
/// waiting, a delayed one falls due, or something changed (an enqueue, a retry, a release).
pub trait JobStore: Send + Sync {
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

    /// The earliest `run_at` among scheduled jobs of the unpaused `queues`.
    fn next_run_at(
        &self,
        queues: &[String],
    ) -> impl Future<Output = StoreResult<Option<Timestamp>>> + Send;
}
