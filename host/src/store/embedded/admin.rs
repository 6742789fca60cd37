//! What producers and admins do to the embedded store outside a job's own life: read a job,
//! list and count jobs, retry failed ones, cancel one, pause and resume a queue, clear a
//! queue's ready jobs and prune finished jobs by the retention policy.
//!
//! Rule: a change that depends on a job's current state (retry, cancel) reads and writes it
//! in one `BEGIN IMMEDIATE` transaction, so a worker settling the job meanwhile cannot
//! interleave.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::codec::{JOB_COLUMNS, collect_jobs, parse_state};
use super::db;
use crate::store::{
    CancelOutcome, Job, JobState, ListFilter, Page, QueueCounts, RetentionPolicy, RetryTarget,
    StoreError, StoreResult, Timestamp,
};

/// Job `id`, if it exists.
pub(super) fn get(conn: &mut Connection, id: &str) -> StoreResult<Option<Job>> {
    let context = "read a job";
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .map_err(db(context))?;
    let rows = stmt.query([id]).map_err(db(context))?;
    Ok(collect_jobs(rows, context)?.pop().map(|(_, job)| job))
}

/// A page of the jobs `filter` selects, newest first.
pub(super) fn list(conn: &mut Connection, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
    let context = "list jobs";
    let mut conditions = Vec::new();
    if filter.queue.is_some() {
        conditions.push("queue = :queue");
    }
    if filter.state.is_some() {
        conditions.push("state = :state");
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs {where_clause} ORDER BY seq DESC LIMIT :limit OFFSET :offset"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db(context))?;
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(page.offset).unwrap_or(i64::MAX);
    let state = filter.state.map(JobState::as_str);
    let mut named: Vec<(&str, &dyn rusqlite::ToSql)> =
        vec![(":limit", &limit), (":offset", &offset)];
    if let Some(queue) = &filter.queue {
        named.push((":queue", queue));
    }
    if let Some(state) = &state {
        named.push((":state", state));
    }
    let rows = stmt.query(named.as_slice()).map_err(db(context))?;
    Ok(collect_jobs(rows, context)?
        .into_iter()
        .map(|(_, job)| job)
        .collect())
}

/// How many jobs each queue has in each state, and which queues are paused.
pub(super) fn counts(conn: &mut Connection) -> StoreResult<Vec<QueueCounts>> {
    let context = "count jobs";
    let mut by_queue = count_by_state(conn, context)?;
    let paused: Vec<String> = conn
        .prepare_cached("SELECT name FROM paused_queues")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .map_err(db(context))?;
    for queue in paused {
        queue_counts(&mut by_queue, queue).paused = true;
    }
    Ok(by_queue.into_values().collect())
}

/// The job counts of every queue that has jobs, by queue.
fn count_by_state(conn: &Connection, context: &str) -> StoreResult<BTreeMap<String, QueueCounts>> {
    let mut by_queue = BTreeMap::new();
    let mut stmt = conn
        .prepare_cached("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")
        .map_err(db(context))?;
    let mut rows = stmt.query([]).map_err(db(context))?;
    while let Some(row) = rows.next().map_err(db(context))? {
        let queue: String = row.get(0).map_err(db(context))?;
        let state: String = row.get(1).map_err(db(context))?;
        let count: u64 = row.get(2).map_err(db(context))?;
        let counts = queue_counts(&mut by_queue, queue);
        let slot = match state.parse::<JobState>() {
            Ok(JobState::Scheduled) => &mut counts.scheduled,
            Ok(JobState::Waiting) => &mut counts.waiting,
            Ok(JobState::Active) => &mut counts.active,
            Ok(JobState::Succeeded) => &mut counts.succeeded,
            Ok(JobState::Failed) => &mut counts.failed,
            Ok(JobState::Cancelled) => &mut counts.cancelled,
            Err(e) => {
                return Err(StoreError::Corrupt {
                    id: format!("(one of {count} in queue `{}`)", counts.queue),
                    reason: e.to_string(),
                });
            }
        };
        *slot += count;
    }
    Ok(by_queue)
}

/// The counts of `queue`, starting at zero.
fn queue_counts(by_queue: &mut BTreeMap<String, QueueCounts>, queue: String) -> &mut QueueCounts {
    by_queue
        .entry(queue.clone())
        .or_insert_with(|| QueueCounts {
            queue,
            ..QueueCounts::default()
        })
}

/// Sends the failed jobs `target` names back to waiting with their attempts reset.
pub(super) fn retry(
    conn: &mut Connection,
    target: RetryTarget,
    now: Timestamp,
) -> StoreResult<usize> {
    let context = "retry failed jobs";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    const REVIVE: &str = "UPDATE jobs SET state = 'waiting', attempts = 0, run_at = ?1, \
        updated_at = ?1, finished_at = NULL, result = NULL, cancel_requested = 0, \
        lease_owner = NULL, lease_expires_at = NULL WHERE state = 'failed'";
    let revived = match target {
        RetryTarget::One(id) => {
            let state = job_state(&tx, &id, context)?;
            if state != JobState::Failed {
                return Err(StoreError::InvalidState {
                    id,
                    state,
                    action: "retry",
                });
            }
            tx.prepare_cached(&format!("{REVIVE} AND id = ?2"))
                .and_then(|mut stmt| stmt.execute(params![now.0, id]))
        }
        RetryTarget::AllFailed { queue: Some(queue) } => tx
            .prepare_cached(&format!("{REVIVE} AND queue = ?2"))
            .and_then(|mut stmt| stmt.execute(params![now.0, queue])),
        RetryTarget::AllFailed { queue: None } => tx
            .prepare_cached(REVIVE)
            .and_then(|mut stmt| stmt.execute([now.0])),
    }
    .map_err(db(context))?;
    tx.commit().map_err(db(context))?;
    Ok(revived)
}

/// Cancels job `id` if it has not started, or asks its worker to stop it if it is running.
pub(super) fn cancel(
    conn: &mut Connection,
    id: &str,
    now: Timestamp,
) -> StoreResult<CancelOutcome> {
    let context = &format!("cancel job `{id}`");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    let outcome = match job_state(&tx, id, context)? {
        JobState::Scheduled | JobState::Waiting => {
            tx.prepare_cached(
                "UPDATE jobs SET state = 'cancelled', updated_at = ?2, finished_at = ?2 \
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![id, now.0]))
            .map_err(db(context))?;
            CancelOutcome::Cancelled
        }
        JobState::Active => {
            tx.prepare_cached(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![id, now.0]))
            .map_err(db(context))?;
            CancelOutcome::Requested
        }
        finished => CancelOutcome::AlreadyFinished(finished),
    };
    tx.commit().map_err(db(context))?;
    Ok(outcome)
}

/// The state of job `id`, or `NotFound`.
fn job_state(conn: &Connection, id: &str, context: &str) -> StoreResult<JobState> {
    let state: Option<String> = conn
        .prepare_cached("SELECT state FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
        .map_err(db(context))?;
    let state = state.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    parse_state(id, &state)
}

/// Stops claims from `queue` until it is resumed.
pub(super) fn pause(conn: &mut Connection, queue: &str) -> StoreResult<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO paused_queues (name) VALUES (?1)")
        .and_then(|mut stmt| stmt.execute([queue]))
        .map_err(db(&format!("pause queue `{queue}`")))?;
    Ok(())
}

/// Lets claims from `queue` go on.
pub(super) fn resume(conn: &mut Connection, queue: &str) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM paused_queues WHERE name = ?1")
        .and_then(|mut stmt| stmt.execute([queue]))
        .map_err(db(&format!("resume queue `{queue}`")))?;
    Ok(())
}

/// Deletes the jobs of `queue` that have not started; returns how many.
pub(super) fn clear(conn: &mut Connection, queue: &str) -> StoreResult<usize> {
    conn.prepare_cached("DELETE FROM jobs WHERE queue = ?1 AND state IN ('scheduled', 'waiting')")
        .and_then(|mut stmt| stmt.execute([queue]))
        .map_err(db(&format!("clear queue `{queue}`")))
}

/// Deletes the finished jobs each queue's retention no longer keeps; returns how many.
pub(super) fn prune(
    conn: &mut Connection,
    policy: &RetentionPolicy,
    now: Timestamp,
) -> StoreResult<usize> {
    let context = "prune finished jobs";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    // From the covering (state, queue) index: as many entries as finished jobs are kept.
    let queues: Vec<String> = tx
        .prepare_cached(
            "SELECT DISTINCT queue FROM jobs \
             WHERE state IN ('succeeded', 'failed', 'cancelled')",
        )
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .map_err(db(context))?;
    let mut deleted = 0;
    for queue in &queues {
        deleted += prune_queue(&tx, policy, queue, now).map_err(db(context))?;
    }
    // A park outlives its job's wait only until here (or the next load of its handler).
    tx.prepare_cached(
        "DELETE FROM parked WHERE NOT EXISTS \
         (SELECT 1 FROM jobs WHERE jobs.id = parked.id AND jobs.state = 'scheduled')",
    )
    .and_then(|mut stmt| stmt.execute([]))
    .map_err(db(context))?;
    tx.commit().map_err(db(context))?;
    Ok(deleted)
}

/// `prune`'s work for one queue, by age then by count for each finished state.
fn prune_queue(
    conn: &Connection,
    policy: &RetentionPolicy,
    queue: &str,
    now: Timestamp,
) -> rusqlite::Result<usize> {
    let mut deleted = 0;
    for (state, keep) in policy.of(queue).rules() {
        if let Some(age) = keep.max_age() {
            let cutoff = now
                .0
                .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            deleted += conn
                .prepare_cached(
                    "DELETE FROM jobs WHERE state = ?1 AND queue = ?2 AND finished_at < ?3",
                )?
                .execute(params![state.as_str(), queue, cutoff])?;
        }
        if let Some(count) = keep.max_count() {
            let keep = i64::try_from(count).unwrap_or(i64::MAX);
            deleted += conn
                .prepare_cached(
                    "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state = ?1 \
                     AND queue = ?2 AND finished_at IS NOT NULL \
                     ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?3)",
                )?
                .execute(params![state.as_str(), queue, keep])?;
        }
    }
    Ok(deleted)
}
