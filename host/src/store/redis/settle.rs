//! Settling jobs: Rust decides, `settle.lua` checks and writes.
//!
//! What a settlement does to a held job is decided once, by `store::lifecycle`
//! (`Held::settle`; the reaper in `reaper.rs` asks `Held::lost`). Each decision becomes a
//! `Write`: the job's new record, patched from the record the decision read, and where the
//! job goes, together with the lease and the record it was decided on. `settle.lua` applies
//! a batch of writes in one step, each only while its lease and record are still those, and
//! refuses the others: stale (the lease is not the one read) or changed (something, such as
//! progress or a cancel request, rewrote the record). A changed job is read and decided
//! again, up to `ROUNDS` times.
//!
//! The handle that claimed a job keeps its lease and record (`Holding`), so settling a batch
//! it claimed reads nothing first: one script call. Any other handle reads the records and
//! leases of its batch with one pipeline first.

use std::sync::Arc;

use redis::ScriptInvocation;

use super::admin::Stored;
use super::keys::waiting_member;
use super::record::{Field, NotWaiting, Patch, lease_parts, lease_value, waiting_job};
use super::scripts::{Refusal, SCRIPTS, SettleReply};
use super::{RedisStore, bad_reply, lock};
use crate::store::lifecycle::{Held, Transition};
use crate::store::{
    Job, JobDefaults, JobState, SettleAction, Settlement, StoreError, StoreResult, Timestamp,
};

/// How many times one `settle` or `recover` decides a job whose record changed between
/// reading and writing it. Progress or a cancel request changes a record once in a while; a
/// record that changes in every round is rewritten in a loop by something else, and the call
/// fails naming the job rather than spin.
pub(super) const ROUNDS: usize = 4;

/// A held job as a decision reads it: its lease, its record, and what of the record the
/// lifecycle rules need. Kept by the handle that claimed the job, or read before deciding.
pub(super) struct Holding {
    /// The `leases` value, `<claimed_at>:<owner>`; `settle.lua` compares it.
    lease: String,
    pub(super) owner: String,
    pub(super) claimed_at: Timestamp,
    /// The record as read: the new record is patched from it, and written only while the
    /// stored one is still this.
    record: Vec<u8>,
    /// Counted attempts include the running one (a claim does not rewrite the record).
    pub(super) held: Held,
    /// Where the job sorts among waiting ones when it is requeued.
    priority: i32,
    /// Released when the job finishes or is deleted.
    unique_key: Option<String>,
    /// What a parked job waits for (`parked` in `settle.lua`).
    handler: String,
}

/// Why what Redis holds of an id is not a held job.
#[derive(Debug)]
pub(super) enum Unheld {
    /// No `leases` value, or one Kiln did not write.
    NoLease,
    /// The job key holds no string: missing, or a value of another type.
    NoRecord,
    /// The record is not the waiting record of a claimed job of this queue with this id.
    NotWaiting(NotWaiting),
}

impl std::fmt::Display for Unheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unheld::NoLease => f.write_str("listed as active without a lease"),
            Unheld::NoRecord => f.write_str("listed as active but its job record is missing"),
            Unheld::NotWaiting(NotWaiting::Unreadable(reason)) => f.write_str(reason),
            Unheld::NotWaiting(NotWaiting::State(state)) => {
                write!(f, "listed as active but it is {state}")
            }
        }
    }
}

impl Holding {
    /// A claim of `job` (as its `record` says, before the claim) by `owner` at `claimed_at`.
    pub(super) fn new(job: &Job, record: Vec<u8>, owner: &str, claimed_at: Timestamp) -> Self {
        Holding {
            lease: lease_value(claimed_at, owner),
            owner: owner.to_owned(),
            claimed_at,
            record,
            held: Held {
                attempts: job.attempts.saturating_add(1),
                max_attempts: job.max_attempts,
                cancel_requested: job.cancel_requested,
            },
            priority: job.priority,
            unique_key: job.unique_key.clone(),
            handler: job.handler.clone(),
        }
    }

    /// Job `id` of `queue` as `stored`, or why it is not a held job.
    pub(super) fn read(
        id: &str,
        queue: &str,
        stored: &Stored,
        defaults: &JobDefaults,
    ) -> Result<Self, Unheld> {
        let lease = stored.lease.as_deref().ok_or(Unheld::NoLease)?;
        let (claimed_at, owner) = lease_parts(lease).ok_or(Unheld::NoLease)?;
        let record = stored.record.as_deref().ok_or(Unheld::NoRecord)?;
        let job = waiting_job(id, queue, record, defaults).map_err(Unheld::NotWaiting)?;
        Ok(Holding::new(&job, record.to_vec(), owner, claimed_at))
    }

    /// The write that takes job `id` where `transition` says, appending `attempt` (JSON) to
    /// its history when given; or why its record cannot be patched.
    pub(super) fn write<'a>(
        &'a self,
        id: &'a str,
        transition: Transition,
        attempt: Option<&str>,
        now: Timestamp,
    ) -> Result<Write<'a>, String> {
        let ended = |attempts: u32| {
            Patch::default()
                .set("attempts", Field::Int(attempts.into()))
                .set("lease_owner", Field::Text(self.owner.as_bytes()))
                .set("claimed_at", Field::Int(self.claimed_at.0))
                .set("updated_at", Field::Int(now.0))
                .append(attempt)
        };
        let (patch, place, unique_key) = match &transition {
            Transition::Finish {
                state,
                result,
                error,
            } => {
                let patch = ended(self.held.attempts)
                    .set("state", Field::Text(state.as_str().as_bytes()))
                    .set("result", optional(result.as_deref()))
                    .set("error", optional(error.as_deref().map(str::as_bytes)))
                    .set("finished_at", Field::Int(now.0));
                (patch, Place::Finished(*state), self.unique_key.as_deref())
            }
            Transition::Requeue {
                at,
                error,
                uncount,
                parked,
            } => {
                let attempts = self.held.attempts.saturating_sub(u32::from(*uncount));
                let state = Transition::requeued_state(*at, now);
                let mut patch = ended(attempts)
                    .set("state", Field::Text(state.as_str().as_bytes()))
                    .set("run_at", Field::Int(at.0));
                if let Some(error) = error {
                    patch = patch.set("error", Field::Text(error.as_bytes()));
                }
                let place = match self.requeued(state, *at) {
                    Place::Scheduled(at) if *parked => Place::Parked {
                        at,
                        handler: &self.handler,
                    },
                    place => place,
                };
                (patch, place, None)
            }
            Transition::Delete => return Ok(self.deleted(id)),
        };
        Ok(Write {
            id,
            lease: self.lease.as_bytes(),
            expected: Some(&self.record),
            record: patch.apply(&self.record)?,
            place,
            unique_key,
        })
    }

    fn requeued(&self, state: JobState, at: Timestamp) -> Place<'_> {
        match state {
            JobState::Scheduled => Place::Scheduled(at),
            _ => Place::Waiting {
                priority: self.priority,
                run_at: at,
            },
        }
    }

    /// A delete depends on nothing in the record, so it is written without checking it.
    fn deleted<'a>(&'a self, id: &'a str) -> Write<'a> {
        Write {
            id,
            lease: self.lease.as_bytes(),
            expected: None,
            record: Vec::new(),
            place: Place::Deleted,
            unique_key: self.unique_key.as_deref(),
        }
    }
}

fn optional(bytes: Option<&[u8]>) -> Field<'_> {
    bytes.map_or(Field::Absent, Field::Text)
}

/// One job's decided end, as `settle.lua` takes it.
pub(super) struct Write<'a> {
    id: &'a str,
    /// The `leases` value the decision read (empty for none).
    lease: &'a [u8],
    /// The record the decision read; `None` when the write does not depend on it.
    expected: Option<&'a [u8]>,
    /// The new record; empty when the job is deleted or only unlisted.
    record: Vec<u8>,
    place: Place<'a>,
    /// The unique key to release.
    unique_key: Option<&'a str>,
}

/// Where a written job goes. Every write ends the job's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place<'a> {
    /// To this finished state's set (score: now).
    Finished(JobState),
    /// To `scheduled`, due at this time.
    Scheduled(Timestamp),
    /// To `scheduled`, due at `at`, and into `parked` as waiting for `handler`.
    Parked { at: Timestamp, handler: &'a str },
    /// To `waiting`, by priority, then run_at.
    Waiting { priority: i32, run_at: Timestamp },
    /// Gone: the job key and its `all` entry are deleted.
    Deleted,
    /// Nowhere: only the lease ends, and the record is left as it is (garbage the reaper
    /// found listed as active).
    Unlisted,
}

impl<'a> Write<'a> {
    /// Ends the lease `lease` on `id` and nothing else, while the record is still `expected`
    /// (when given).
    pub(super) fn unlist(id: &'a str, lease: &'a [u8], expected: Option<&'a [u8]>) -> Self {
        Write {
            id,
            lease,
            expected,
            record: Vec::new(),
            place: Place::Unlisted,
            unique_key: None,
        }
    }

    /// The job's eight arguments to `settle.lua`.
    fn push_args(&self, invocation: &mut ScriptInvocation<'_>, now: Timestamp) {
        invocation
            .arg(self.id)
            .arg(self.lease)
            .arg(self.expected.unwrap_or_default())
            .arg(&self.record[..]);
        match self.place {
            Place::Finished(state) => invocation.arg(state.as_str()).arg(now.0).arg(self.id),
            Place::Scheduled(at) => invocation.arg("scheduled").arg(at.0).arg(self.id),
            Place::Parked { at, handler } => invocation.arg("parked").arg(at.0).arg(handler),
            Place::Waiting { priority, run_at } => invocation
                .arg("waiting")
                .arg(-i64::from(priority))
                .arg(waiting_member(run_at, self.id)),
            Place::Deleted => invocation.arg("delete").arg("").arg(""),
            Place::Unlisted => invocation.arg("unlist").arg("").arg(""),
        };
        invocation.arg(self.unique_key.unwrap_or_default());
    }
}

/// Which leases `settle.lua` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leases {
    /// The one each write read: a settlement by the job's holder.
    Held,
    /// The one each write read, still expired at now: the reaper.
    Expired,
}

/// What `settlement` does to the job `holding` describes, as a write; or why it cannot be
/// written.
fn settled<'a>(
    settlement: &'a Settlement,
    holding: &'a Holding,
    now: Timestamp,
) -> Result<Write<'a>, String> {
    let attempt = match (&settlement.action, &settlement.attempt) {
        (
            SettleAction::Release { .. }
            | SettleAction::Park { .. }
            | SettleAction::SucceedAndDelete,
            _,
        )
        | (_, None) => None,
        (_, Some(record)) => Some(
            serde_json::to_string(record)
                .map_err(|e| format!("the attempt record cannot be encoded: {e}"))?,
        ),
    };
    let transition = holding.held.settle(settlement.action.clone());
    holding.write(&settlement.id, transition, attempt.as_deref(), now)
}

impl RedisStore {
    /// Writes `writes` to jobs of `queue` with `settle.lua`, accepting `leases`; returns the
    /// refused ones by position in `writes`.
    pub(super) async fn write(
        &self,
        queue: &str,
        leases: Leases,
        writes: &[Write<'_>],
        now: Timestamp,
    ) -> StoreResult<Vec<(usize, Refusal)>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.settle, &keys, now);
        invocation.arg(match leases {
            Leases::Held => "held",
            Leases::Expired => "expired",
        });
        for write in writes {
            invocation.key(keys.job(write.id));
            write.push_args(&mut invocation, now);
        }
        invocation.key(keys.key("parked"));
        let context = format!("settle jobs in queue `{queue}`");
        let SettleReply(refused) = self.run(&invocation, &context).await?;
        if refused
            .iter()
            .any(|(position, _)| *position >= writes.len())
        {
            return Err(bad_reply(&context, "a refused position is past the batch"));
        }
        Ok(refused)
    }

    /// Settles jobs of one queue; returns the stale ids.
    pub(super) async fn settle_queue(
        &self,
        queue: &str,
        batch: &[Settlement],
        now: Timestamp,
    ) -> StoreResult<Vec<String>> {
        let mut holdings = self.claimed(batch);
        let unclaimed: Vec<usize> = (0..batch.len())
            .filter(|&i| holdings[i].is_none())
            .collect();
        self.read_holdings(queue, batch, &unclaimed, &mut holdings)
            .await?;
        let mut todo: Vec<usize> = (0..batch.len()).collect();
        let mut stale = Vec::new();
        for round in 0..ROUNDS {
            if round > 0 {
                self.read_holdings(queue, batch, &todo, &mut holdings)
                    .await?;
            }
            todo = self
                .settle_round(queue, batch, &holdings, &todo, &mut stale, now)
                .await?;
            if todo.is_empty() {
                self.forget_claims(batch.iter().map(|s| (s.id.as_str(), s.owner.as_str())));
                return Ok(stale);
            }
        }
        Err(still_changing(&batch[todo[0]].id))
    }

    /// Writes the settlements `todo` of `batch` once; adds the stale ones' ids to `stale`
    /// and returns the ones whose record changed.
    async fn settle_round(
        &self,
        queue: &str,
        batch: &[Settlement],
        holdings: &[Option<Arc<Holding>>],
        todo: &[usize],
        stale: &mut Vec<String>,
        now: Timestamp,
    ) -> StoreResult<Vec<usize>> {
        let mut writes = Vec::with_capacity(todo.len());
        let mut settlements = Vec::with_capacity(todo.len());
        for &i in todo {
            let settlement = &batch[i];
            let holding = holdings[i].as_deref();
            match holding.filter(|holding| holding.owner == settlement.owner) {
                Some(holding) => match settled(settlement, holding, now) {
                    Ok(write) => {
                        writes.push(write);
                        settlements.push(i);
                    }
                    Err(reason) => {
                        cannot_settle(queue, &settlement.id, &reason);
                        stale.push(settlement.id.clone());
                    }
                },
                None => stale.push(settlement.id.clone()),
            }
        }
        let mut changed = Vec::new();
        for (position, refusal) in self.write(queue, Leases::Held, &writes, now).await? {
            let i = settlements[position];
            match refusal {
                Refusal::Stale => stale.push(batch[i].id.clone()),
                Refusal::Changed => changed.push(i),
            }
        }
        Ok(changed)
    }

    /// What this handle kept of the claims `batch` settles (`None` where it did not claim
    /// the job, or claimed it for another owner).
    fn claimed(&self, batch: &[Settlement]) -> Vec<Option<Arc<Holding>>> {
        let claims = lock(&self.inner.claims);
        batch
            .iter()
            .map(|s| claims.get(&s.id).filter(|c| c.owner == s.owner).cloned())
            .collect()
    }

    /// Reads the jobs of the settlements `which` of `batch` into `holdings`, with one
    /// pipeline; a job that is not held (any more) reads as `None`.
    async fn read_holdings(
        &self,
        queue: &str,
        batch: &[Settlement],
        which: &[usize],
        holdings: &mut [Option<Arc<Holding>>],
    ) -> StoreResult<()> {
        let ids: Vec<&str> = which.iter().map(|&i| batch[i].id.as_str()).collect();
        let stored = self.read_stored(queue, &ids).await?;
        for ((&i, id), stored) in which.iter().zip(&ids).zip(stored) {
            holdings[i] = match Holding::read(id, queue, &stored, &self.inner.defaults) {
                Ok(holding) => Some(Arc::new(holding)),
                Err(Unheld::NoLease) => None,
                Err(unheld) => {
                    cannot_settle(queue, id, &unheld.to_string());
                    None
                }
            };
        }
        Ok(())
    }

    /// Drops what this handle kept of jobs that `owner` no longer holds, given as
    /// `(id, owner)`; a later claim of the same job under another owner stays.
    pub(super) fn forget_claims<'a>(&self, held: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut claims = lock(&self.inner.claims);
        for (id, owner) in held {
            if claims.get(id).is_some_and(|claimed| claimed.owner == owner) {
                claims.remove(id);
            }
        }
    }
}

/// Logs a held job a settlement cannot write: it is reported stale, and the reaper meets it
/// once its lease expires.
fn cannot_settle(queue: &str, id: &str, reason: &str) {
    tracing::warn!(
        queue,
        job = %id,
        "cannot settle the job ({reason}); the reaper takes it once its lease expires"
    );
}

/// The error for job `id`, whose record changed in every one of `ROUNDS` rounds.
pub(super) fn still_changing(id: &str) -> StoreError {
    StoreError::Backend {
        context: format!("settle job `{id}`"),
        source: format!("its record changed each time it was read, {ROUNDS} times").into(),
    }
}
