//! A job as stored: what a producer asks for ([`NewJob`]), the stored [`Job`] with its
//! [`JobState`], lease, progress and attempt history, and [`Timestamp`], the store's time.

use std::fmt;
use std::ops::Add;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capabilities::http::HttpUsage;
use crate::capabilities::tcp::TcpUsage;

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
    /// The schedule tick this job is for, when a schedule enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<Tick>,
}

/// One tick of a schedule: what a job enqueued by the scheduler (or `kiln schedules
/// trigger`) records about why it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// The schedule's name.
    pub schedule: String,
    /// The tick's instant: the cron fire time, or the time of a manual trigger.
    pub at: Timestamp,
    /// Enqueued by `kiln schedules trigger`, not by the cron expression.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}

impl Tick {
    /// The id of this tick's job (the part after `QUEUE/` on Redis): for a cron tick, a
    /// UUID v7 whose time is the tick's and whose other bits come from a hash of the
    /// schedule's name and the tick, so every host derives the same id for the same tick;
    /// for a manual tick, a fresh UUID v7.
    pub fn job_uuid(&self) -> uuid::Uuid {
        if self.manual {
            return uuid::Uuid::now_v7();
        }
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(self.schedule.as_bytes());
        hash.update([0]);
        hash.update(self.at.0.to_be_bytes());
        let digest = hash.finalize();
        let mut bits = [0u8; 10];
        bits.copy_from_slice(&digest[..10]);
        let millis = u64::try_from(self.at.0).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
    }
}

/// What a store remembers of one schedule, so that every host agrees on which ticks were
/// enqueued (however long ago their jobs finished) and what `kiln schedules` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The latest cron tick enqueued; a cron tick at or before it is never enqueued again.
    /// `None` while only manual ticks were enqueued.
    pub cursor: Option<Timestamp>,
    /// The latest tick enqueued, cron or manual.
    pub last_tick: Timestamp,
    /// That tick's job.
    pub last_job: String,
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
            tick: None,
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
    /// The attempt's log: its `log` calls and stdout/stderr, one `source: text` line each,
    /// so operators can read why it ended without the host's own log. At most the job's
    /// `max_log` bytes (the journal's cap counts each line as stored), so a chatty guest
    /// cannot grow its record without bound. Empty when it logged nothing, and in records
    /// written before logs were kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log: String,
    /// Lines were dropped at the `max_log` cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_truncated: bool,
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
    /// The schedule tick it was enqueued for, if a schedule enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<Tick>,
}

#[cfg(test)]
mod tests {
    use super::{Tick, Timestamp};

    fn tick(schedule: &str, at: i64, manual: bool) -> Tick {
        Tick {
            schedule: schedule.to_owned(),
            at: Timestamp(at),
            manual,
        }
    }

    #[test]
    fn a_cron_tick_has_one_job_id_and_a_manual_tick_a_fresh_one() {
        let nightly = tick("nightly", 1_774_742_400_000, false);
        let id = nightly.job_uuid();
        assert_eq!(id, nightly.job_uuid(), "every host derives the same id");
        assert_eq!(id.get_version_num(), 7);
        let (secs, _) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs * 1000,
            1_774_742_400_000,
            "the id carries the tick's time"
        );
        assert_ne!(id, tick("hourly", 1_774_742_400_000, false).job_uuid());
        assert_ne!(id, tick("nightly", 1_774_828_800_000, false).job_uuid());
        let manual = tick("nightly", 1_774_742_400_000, true);
        assert_ne!(manual.job_uuid(), manual.job_uuid());
    }
}
