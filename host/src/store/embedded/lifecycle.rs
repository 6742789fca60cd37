//! The transactions of a job's life in the embedded store: enqueue, claim, renew, progress,
//! settle and recover.
//!
//! What a settlement or an expired lease does to a job is decided in
//! [`crate::store::lifecycle`]; this file only writes the [`Transition`] it returns. Rules:
//! a change made for a worker (renew, progress, settle) applies only while that worker holds
//! the lease, checked in the same statement that writes it; each batch is one transaction
//! that takes the write lock up front (`BEGIN IMMEDIATE`), with cached prepared statements.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::codec::{JOB_COLUMNS, attempt_json, collect_jobs};
use super::db;
use crate::store::lifecycle::{Held, Transition};
use crate::store::{
    Enqueued, Job, JobState, NewJob, Progress, RenewReport, SettleAction, Settlement, StoreError,
    StoreResult, Timestamp,
};

/// Stores a batch of jobs in one transaction; a job whose unique key matches an unfinished
/// job returns that job's id instead.
pub(super) fn enqueue(
    conn: &mut Connection,
    jobs: Vec<NewJob>,
    now: Timestamp,
) -> StoreResult<Vec<Enqueued>> {
    if let Some(bad) = jobs.iter().find(|job| job.max_attempts == 0) {
        return Err(StoreError::InvalidJob {
            handler: bad.handler.clone(),
            reason: "max_attempts must be at least 1".to_owned(),
        });
    }
    let context = "enqueue jobs";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    let results = insert_jobs(&tx, jobs, now).map_err(db(context))?;
    tx.commit().map_err(db(context))?;
    Ok(results)
}

/// `enqueue`'s work inside its transaction (also `enqueue_tick`'s).
pub(super) fn insert_jobs(
    tx: &Transaction<'_>,
    jobs: Vec<NewJob>,
    now: Timestamp,
) -> rusqlite::Result<Vec<Enqueued>> {
    let mut find_unique = tx.prepare_cached(
        "SELECT id FROM jobs WHERE unique_key = ?1 \
         AND state IN ('scheduled', 'waiting', 'active') LIMIT 1",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO jobs (id, handler, queue, payload, priority, state, max_attempts, \
         run_at, unique_key, created_at, updated_at, tick_schedule, tick_at, tick_manual) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13)",
    )?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(key) = &job.unique_key {
            let existing: Option<String> =
                find_unique.query_row([key], |row| row.get(0)).optional()?;
            if let Some(id) = existing {
                results.push(Enqueued { id, existing: true });
                continue;
            }
        }
        let id = job
            .tick
            .as_ref()
            .map_or_else(uuid::Uuid::now_v7, |tick| tick.job_uuid())
            .to_string();
        let run_at = job.run_at.unwrap_or(now);
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Waiting
        };
        insert.execute(params![
            id,
            job.handler,
            job.queue,
            job.payload,
            job.priority,
            state.as_str(),
            job.max_attempts,
            run_at.0,
            job.unique_key,
            now.0,
            job.tick.as_ref().map(|tick| &tick.schedule),
            job.tick.as_ref().map(|tick| tick.at.0),
            job.tick.as_ref().is_some_and(|tick| tick.manual),
        ])?;
        results.push(Enqueued {
            id,
            existing: false,
        });
    }
    Ok(results)
}

/// Claims up to `max` ready jobs of `queue` for `owner` until `expires_at`, in claim order.
pub(super) fn claim(
    conn: &mut Connection,
    queue: &str,
    max: usize,
    owner: &str,
    expires_at: Timestamp,
    now: Timestamp,
) -> StoreResult<Vec<Job>> {
    let context = &format!("claim jobs from queue `{queue}`");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    let paused = tx
        .prepare_cached("SELECT 1 FROM paused_queues WHERE name = ?1")
        .and_then(|mut stmt| stmt.exists([queue]))
        .map_err(db(context))?;
    if paused {
        return Ok(Vec::new());
    }
    let mut claimed = {
        let sql = format!(
            "UPDATE jobs SET state = 'active', attempts = attempts + 1, lease_owner = ?1, \
             lease_expires_at = ?2, claimed_at = ?3, updated_at = ?3 \
             WHERE seq IN (SELECT seq FROM jobs WHERE queue = ?4 \
               AND state IN ('scheduled', 'waiting') AND run_at <= ?3 \
               ORDER BY priority DESC, run_at, seq LIMIT ?5) \
             RETURNING {JOB_COLUMNS}"
        );
        let mut stmt = tx.prepare_cached(&sql).map_err(db(context))?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = stmt
            .query(params![owner, expires_at.0, now.0, queue, limit])
            .map_err(db(context))?;
        collect_jobs(rows, context)?
    };
    tx.commit().map_err(db(context))?;
    claimed.sort_by(|(a_seq, a), (b_seq, b)| {
        (b.priority, a.run_at, a_seq).cmp(&(a.priority, b.run_at, b_seq))
    });
    Ok(claimed.into_iter().map(|(_, job)| job).collect())
}

/// Extends the leases `owner` holds on `ids` to `expires_at`; reports the ones it lost and
/// the ones an admin asked to cancel.
pub(super) fn renew(
    conn: &mut Connection,
    ids: &[String],
    owner: &str,
    expires_at: Timestamp,
) -> StoreResult<RenewReport> {
    let context = "renew leases";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    let mut report = RenewReport::default();
    {
        let mut renew = tx
            .prepare_cached(
                "UPDATE jobs SET lease_expires_at = ?3 \
                 WHERE id = ?1 AND state = 'active' AND lease_owner = ?2 \
                 RETURNING cancel_requested",
            )
            .map_err(db(context))?;
        for id in ids {
            let held: Option<bool> = renew
                .query_row(params![id, owner, expires_at.0], |row| row.get(0))
                .optional()
                .map_err(db(context))?;
            match held {
                None => report.lost.push(id.clone()),
                Some(true) => report.cancel_requested.push(id.clone()),
                Some(false) => {}
            }
        }
    }
    tx.commit().map_err(db(context))?;
    Ok(report)
}

/// Records the progress job `id` reported, if `owner` still holds it.
pub(super) fn progress(
    conn: &mut Connection,
    id: String,
    owner: String,
    progress: Progress,
    now: Timestamp,
) -> StoreResult<()> {
    let updated = conn
        .prepare_cached(
            "UPDATE jobs SET progress_percent = ?3, progress_message = ?4, updated_at = ?5 \
             WHERE id = ?1 AND state = 'active' AND lease_owner = ?2",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                id,
                owner,
                progress.percent.min(100),
                progress.message,
                now.0
            ])
        })
        .map_err(db("record job progress"))?;
    if updated == 0 {
        return Err(StoreError::LeaseNotHeld { id, owner });
    }
    Ok(())
}

/// Settles a batch; returns (stale ids, whether any job was requeued).
pub(super) fn settle(
    conn: &mut Connection,
    batch: Vec<Settlement>,
    now: Timestamp,
) -> StoreResult<(Vec<String>, bool)> {
    let context = "settle jobs";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    let mut stale = Vec::new();
    let mut requeued = false;
    for settlement in batch {
        let Settlement {
            id,
            owner,
            attempt,
            action,
        } = settlement;
        let is_release = matches!(
            action,
            SettleAction::Release { .. } | SettleAction::Park { .. }
        );
        let held = if is_release || matches!(action, SettleAction::Retry { .. }) {
            match held_by(&tx, &id, &owner).map_err(db(context))? {
                Some(held) => held,
                None => {
                    stale.push(id);
                    continue;
                }
            }
        } else {
            // Succeed, Fail, Cancel and deletes do not depend on the job's counters; `apply` checks
            // the lease, which saves a query per job on the hot path.
            Held::default()
        };
        let record = match &attempt {
            Some(record) if !is_release => Some(attempt_json(&id, record)?),
            _ => None,
        };
        let transition = held.settle(action);
        let requeues = matches!(transition, Transition::Requeue { .. });
        if apply(&tx, &id, &owner, transition, record.as_deref(), now).map_err(db(context))? {
            requeued |= requeues;
        } else {
            stale.push(id);
        }
    }
    tx.commit().map_err(db(context))?;
    Ok((stale, requeued))
}

/// The reaper's work: expired leases and due scheduled jobs. Returns leases taken back.
pub(super) fn recover(conn: &mut Connection, now: Timestamp) -> StoreResult<usize> {
    let context = "recover expired leases";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    let expired = expired_leases(&tx, now).map_err(db(context))?;
    for lease in &expired {
        let owner = lease.owner.as_deref().unwrap_or_default();
        let claimed_at = lease.claimed_at.unwrap_or(lease.expires_at);
        let (transition, record) = lease.held.lost(owner, claimed_at, lease.expires_at, now);
        let json = attempt_json(&lease.id, &record)?;
        apply(&tx, &lease.id, owner, transition, Some(&json), now).map_err(db(context))?;
    }
    tx.prepare_cached(
        "UPDATE jobs SET state = 'waiting', updated_at = ?1 \
         WHERE state = 'scheduled' AND run_at <= ?1",
    )
    .and_then(|mut stmt| stmt.execute([now.0]))
    .map_err(db(context))?;
    tx.commit().map_err(db(context))?;
    Ok(expired.len())
}

/// An active job whose lease expired, as `recover` finds it.
struct Expired {
    id: String,
    held: Held,
    claimed_at: Option<Timestamp>,
    owner: Option<String>,
    expires_at: Timestamp,
}

/// The active jobs whose lease expired before `now`.
fn expired_leases(tx: &Transaction<'_>, now: Timestamp) -> rusqlite::Result<Vec<Expired>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, attempts, max_attempts, cancel_requested, claimed_at, lease_owner, \
         lease_expires_at FROM jobs WHERE state = 'active' AND lease_expires_at < ?1",
    )?;
    stmt.query_map([now.0], |row| {
        Ok(Expired {
            id: row.get(0)?,
            held: Held {
                attempts: row.get(1)?,
                max_attempts: row.get(2)?,
                cancel_requested: row.get(3)?,
            },
            claimed_at: row.get::<_, Option<i64>>(4)?.map(Timestamp),
            owner: row.get(5)?,
            expires_at: Timestamp(row.get(6)?),
        })
    })?
    .collect()
}

/// The counters of job `id` if it is active under `owner`.
fn held_by(tx: &Transaction<'_>, id: &str, owner: &str) -> rusqlite::Result<Option<Held>> {
    tx.prepare_cached(
        "SELECT attempts, max_attempts, cancel_requested FROM jobs \
         WHERE id = ?1 AND state = 'active' AND lease_owner = ?2",
    )?
    .query_row(params![id, owner], |row| {
        Ok(Held {
            attempts: row.get(0)?,
            max_attempts: row.get(1)?,
            cancel_requested: row.get(2)?,
        })
    })
    .optional()
}

/// Applies `transition` to job `id` if `owner` still holds it, appending `attempt` (JSON) to
/// its history if given. Returns whether it was applied.
fn apply(
    tx: &Transaction<'_>,
    id: &str,
    owner: &str,
    transition: Transition,
    attempt: Option<&str>,
    now: Timestamp,
) -> rusqlite::Result<bool> {
    let changed = match transition {
        Transition::Finish {
            state,
            result,
            error,
        } => tx
            .prepare_cached(
                "UPDATE jobs SET state = ?2, result = ?3, error = ?4, lease_owner = NULL, \
                 lease_expires_at = NULL, updated_at = ?5, finished_at = ?5, \
                 history = CASE WHEN ?6 IS NULL THEN history \
                   ELSE json_insert(history, '$[#]', json(?6)) END \
                 WHERE id = ?1 AND state = 'active' AND lease_owner = ?7",
            )?
            .execute(params![
                id,
                state.as_str(),
                result,
                error,
                now.0,
                attempt,
                owner
            ])?,
        Transition::Requeue {
            at,
            error,
            uncount,
            parked,
        } => {
            let state = Transition::requeued_state(at, now);
            let changed = tx
                .prepare_cached(
                    "UPDATE jobs SET state = ?2, run_at = ?3, error = COALESCE(?4, error), \
                 attempts = attempts - ?5, lease_owner = NULL, lease_expires_at = NULL, \
                 updated_at = ?6, \
                 history = CASE WHEN ?7 IS NULL THEN history \
                   ELSE json_insert(history, '$[#]', json(?7)) END \
                 WHERE id = ?1 AND state = 'active' AND lease_owner = ?8",
                )?
                .execute(params![
                    id,
                    state.as_str(),
                    at.0,
                    error,
                    i64::from(uncount),
                    now.0,
                    attempt,
                    owner
                ])?;
            if parked && changed == 1 {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO parked (id, handler) \
                     SELECT id, handler FROM jobs WHERE id = ?1",
                )?
                .execute(params![id])?;
            }
            changed
        }
        Transition::Delete => tx
            .prepare_cached(
                "DELETE FROM jobs WHERE id = ?1 AND state = 'active' AND lease_owner = ?2",
            )?
            .execute(params![id, owner])?,
    };
    Ok(changed > 0)
}

/// Wakes the jobs of `queues` parked for `handler` that are still scheduled: they become
/// waiting at `now`. Forgets every park of `handler` whose job is no longer scheduled.
pub(super) fn unpark(
    conn: &mut Connection,
    handler: &str,
    queues: &[String],
    now: Timestamp,
) -> StoreResult<usize> {
    let context = "wake jobs parked for their handler";
    let queues = serde_json::to_string(queues).map_err(|e| StoreError::Backend {
        context: context.to_owned(),
        source: Box::new(e),
    })?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    let woken = tx
        .prepare_cached(
            "UPDATE jobs SET state = 'waiting', run_at = ?3, updated_at = ?3 \
             WHERE state = 'scheduled' AND queue IN (SELECT value FROM json_each(?2)) \
             AND id IN (SELECT id FROM parked WHERE handler = ?1)",
        )
        .and_then(|mut stmt| stmt.execute(params![handler, queues, now.0]))
        .map_err(db(context))?;
    tx.prepare_cached(
        "DELETE FROM parked WHERE handler = ?1 AND NOT EXISTS \
         (SELECT 1 FROM jobs WHERE jobs.id = parked.id AND jobs.state = 'scheduled')",
    )
    .and_then(|mut stmt| stmt.execute(params![handler]))
    .map_err(db(context))?;
    tx.commit().map_err(db(context))?;
    Ok(woken)
}
