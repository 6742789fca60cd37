//! How a `jobs` row becomes a [`Job`] and back: the columns every job query selects, the
//! decoding of a row, and the JSON of an attempt record appended to a job's history.
//!
//! Rule: a stored value this build cannot decode (an unknown state, a history that is not
//! JSON) is reported as [`StoreError::Corrupt`] naming the job, never as a SQLite error and
//! never by panicking.

use rusqlite::Row;

use super::db;
use crate::store::{
    AttemptRecord, Job, JobState, Lease, Progress, StoreError, StoreResult, Tick, Timestamp,
    UnknownJobState,
};

/// The columns every job query selects, in the order `read_job` reads them.
pub(super) const JOB_COLUMNS: &str = "seq, id, handler, queue, payload, priority, state, \
    attempts, max_attempts, run_at, lease_owner, lease_expires_at, result, error, \
    progress_percent, progress_message, unique_key, cancel_requested, created_at, updated_at, \
    finished_at, history, tick_schedule, tick_at, tick_manual";

/// Reads every row of a query selecting `JOB_COLUMNS`, each with its `seq`.
pub(super) fn collect_jobs(
    mut rows: rusqlite::Rows<'_>,
    context: &str,
) -> StoreResult<Vec<(i64, Job)>> {
    let mut jobs = Vec::new();
    while let Some(row) = rows.next().map_err(db(context))? {
        jobs.push(read_job(row)?);
    }
    Ok(jobs)
}

/// Decodes the stored state of job `id`.
pub(super) fn parse_state(id: &str, state: &str) -> StoreResult<JobState> {
    state
        .parse()
        .map_err(|e: UnknownJobState| corrupt(id, e.to_string()))
}

/// The JSON of `attempt`, as appended to the history of job `id`.
pub(super) fn attempt_json(id: &str, attempt: &AttemptRecord) -> StoreResult<String> {
    serde_json::to_string(attempt)
        .map_err(|e| corrupt(id, format!("attempt record cannot be encoded: {e}")))
}

fn corrupt(id: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        id: id.to_owned(),
        reason,
    }
}

/// Reads one row selected with `JOB_COLUMNS`, returning its `seq` too.
fn read_job(row: &Row<'_>) -> StoreResult<(i64, Job)> {
    let (seq, mut job, state, history) = read_columns(row).map_err(db("read a job row"))?;
    job.state = parse_state(&job.id, &state)?;
    job.history = serde_json::from_str(&history)
        .map_err(|e| corrupt(&job.id, format!("attempt history is not valid json: {e}")))?;
    Ok((seq, job))
}

/// The row's columns, with the state and the history still as stored text (`read_job`
/// decodes them, so a bad value is reported as corrupt rather than as a SQLite error).
fn read_columns(row: &Row<'_>) -> rusqlite::Result<(i64, Job, String, String)> {
    let lease = match (row.get(10)?, row.get::<_, Option<i64>>(11)?) {
        (Some(owner), Some(at)) => Some(Lease {
            owner,
            expires_at: Timestamp(at),
        }),
        _ => None,
    };
    let progress = match row.get::<_, Option<u8>>(14)? {
        Some(percent) => Some(Progress {
            percent,
            message: row.get(15)?,
        }),
        None => None,
    };
    let job = Job {
        id: row.get(1)?,
        handler: row.get(2)?,
        queue: row.get(3)?,
        payload: row.get(4)?,
        priority: row.get(5)?,
        state: JobState::Waiting,
        attempts: row.get(7)?,
        max_attempts: row.get(8)?,
        run_at: Timestamp(row.get(9)?),
        lease,
        result: row.get(12)?,
        error: row.get(13)?,
        progress,
        unique_key: row.get(16)?,
        cancel_requested: row.get(17)?,
        created_at: Timestamp(row.get(18)?),
        updated_at: Timestamp(row.get(19)?),
        finished_at: row.get::<_, Option<i64>>(20)?.map(Timestamp),
        history: Vec::new(),
        tick: match (
            row.get::<_, Option<String>>(22)?,
            row.get::<_, Option<i64>>(23)?,
        ) {
            (Some(schedule), Some(at)) => Some(Tick {
                schedule,
                at: Timestamp(at),
                manual: row.get(24)?,
            }),
            _ => None,
        },
    };
    Ok((row.get(0)?, job, row.get(6)?, row.get(21)?))
}
