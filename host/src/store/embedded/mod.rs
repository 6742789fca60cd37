//! The embedded job store: one SQLite file in WAL mode that the host and the CLI (separate
//! processes) use at once, surviving restarts and `kill -9` because every change is a
//! transaction.
//!
//! Rule: nothing here blocks the async threads. Every SQLite call runs inside
//! `tokio::task::spawn_blocking` on this handle's single connection, which sits behind a std
//! `Mutex` (held only on the blocking thread, never across an `.await`). Calls through one
//! handle are therefore serialised; other processes and other handles coordinate through
//! SQLite's file locks, waiting up to `BUSY_TIMEOUT` for the write lock.
//!
//! Layout: the `jobs` table holds one row per job, with its attempt history as a JSON array
//! appended in SQL (`json_insert`) so settling never parses it; `paused_queues` lists paused
//! queues. `seq` (the rowid) is the enqueue order and the FIFO tie-breaker. Writes that change many
//! jobs (`claim`, `settle`, `enqueue`) take the write lock up front (`BEGIN IMMEDIATE`) and
//! handle the whole batch in one transaction with cached prepared statements.
//!
//! Durability (`Durability`): WAL with `synchronous=NORMAL` commits without an fsync; the WAL
//! is synced at checkpoints. A commit survives the process dying (`kill -9`, panic), but the
//! last commits can be lost if the machine loses power. `synchronous=FULL` syncs the WAL on
//! every commit and also survives power loss, at the cost of one fsync per transaction (per
//! batch, not per job, so batching keeps most of the throughput).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::Notify;

use super::lifecycle::{Held, Transition};
use super::{
    AttemptRecord, CancelOutcome, Enqueued, Job, JobState, JobStore, Lease, ListFilter, NewJob,
    Page, Progress, QueueCounts, RenewReport, RetentionPolicy, RetryTarget, SettleAction,
    Settlement, StoreError, StoreResult, Timestamp, UnknownJobState,
};

/// Schema version written to `PRAGMA user_version`; a file with a larger one is refused.
const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another process's write lock before failing. Long enough to
/// ride out a large prune or batch from the CLI, short enough to surface a stuck lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `wait` checks whether another connection committed. Bounds the wake-up latency
/// for jobs enqueued by another process (the CLI); same-process enqueues wake at once.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Prepared statements kept per connection; the store uses a few dozen distinct ones.
const STATEMENT_CACHE: usize = 64;

/// How hard each commit is pushed to disk (see the module doc for the trade-off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// WAL + `synchronous=NORMAL`: survives process crashes, may lose the last commits on
    /// power loss. The default: job stores favour throughput, and delivery is at-least-once.
    #[default]
    Normal,
    /// WAL + `synchronous=FULL`: every commit is fsynced, so it also survives power loss.
    Full,
}

/// The SQLite job store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection. A std `Mutex` because it is only locked on blocking threads, for the
    /// duration of one synchronous SQLite call sequence.
    conn: Mutex<Connection>,
    /// The store file, for error messages.
    path: PathBuf,
    /// Fired after this process makes jobs ready, so local `wait`ers wake without polling.
    changed: Notify,
}

/// The columns every job query selects, in the order `read_job` reads them.
const JOB_COLUMNS: &str = "seq, id, handler, queue, payload, priority, state, attempts, \
    max_attempts, run_at, lease_owner, lease_expires_at, result, error, progress_percent, \
    progress_message, unique_key, cancel_requested, created_at, updated_at, finished_at, history";

const SCHEMA: &str = "
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    handler TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    claimed_at INTEGER,
    result BLOB,
    error TEXT,
    progress_percent INTEGER,
    progress_message TEXT,
    unique_key TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    history TEXT NOT NULL DEFAULT '[]'
);
-- claim: ready jobs of a queue in claim order; rows leave it when claimed.
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, seq)
    WHERE state IN ('scheduled', 'waiting');
-- next_run_at: the earliest delayed job of a queue.
CREATE INDEX jobs_due ON jobs (queue, run_at) WHERE state = 'scheduled';
-- enqueue: is an unfinished job with this key there?
CREATE INDEX jobs_unique ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'waiting', 'active');
-- counts (covering), recover (active jobs), wait, clear, retry_failed, list by state.
CREATE INDEX jobs_state ON jobs (state, queue);
-- prune by age and by count.
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE paused_queues (name TEXT PRIMARY KEY) WITHOUT ROWID;
";

/// Maps a SQLite error to `StoreError::Backend`, building the context only on failure.
fn db(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Backend {
        context: context.to_owned(),
        source: Box::new(source),
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file at `path`, switching it to WAL mode and
    /// creating or checking the schema. Blocks on file I/O; call it at start-up or from a
    /// blocking context.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let context = format!("open `{}`", path.display());
        let conn = Connection::open(&path).map_err(db(&context))?;
        configure(&conn, durability).map_err(db(&context))?;
        migrate(&conn, &path)?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path,
                changed: Notify::new(),
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on the connection on a blocking thread.
    async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic mid-call rolled its transaction back when it unwound, so the
            // connection is still consistent.
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut conn)
        })
        .await
        .map_err(|join| StoreError::Backend {
            context: "run a job store task".to_owned(),
            source: Box::new(join),
        })?
    }

    /// Wakes this process's `wait`ers: some job may have become ready.
    fn notify(&self) {
        self.inner.changed.notify_waiters();
    }
}

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode stayed `{mode}` instead of `wal`"
        )));
    }
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
}

/// Creates the schema in a new file, or checks that an existing one is not newer than this
/// build. Runs under the write lock so two processes opening a new file do not race.
fn migrate(conn: &Connection, path: &Path) -> StoreResult<()> {
    let context = format!("create the schema in `{}`", path.display());
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(db(&context))?;
    let result = (|| {
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(db(&context))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::IncompatibleSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == 0 {
            conn.execute_batch(SCHEMA).map_err(db(&context))?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(db(&context))?;
        }
        Ok(())
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(db(&context))?;
    result
}

/// Reads one row selected with `JOB_COLUMNS`, returning its `seq` too.
fn read_job(row: &Row<'_>) -> StoreResult<(i64, Job)> {
    let (seq, mut job, state, history) = read_columns(row).map_err(db("read a job row"))?;
    let corrupt = |id: &str, reason: String| StoreError::Corrupt {
        id: id.to_owned(),
        reason,
    };
    job.state = state
        .parse()
        .map_err(|e: UnknownJobState| corrupt(&job.id, e.to_string()))?;
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
    };
    Ok((row.get(0)?, job, row.get(6)?, row.get(21)?))
}

/// Reads every row of a query selecting `JOB_COLUMNS`.
fn collect_jobs(mut rows: rusqlite::Rows<'_>, context: &str) -> StoreResult<Vec<(i64, Job)>> {
    let mut jobs = Vec::new();
    while let Some(row) = rows.next().map_err(db(context))? {
        jobs.push(read_job(row)?);
    }
    Ok(jobs)
}

fn enqueue_batch(
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
    let mut results = Vec::with_capacity(jobs.len());
    {
        let mut find_unique = tx
            .prepare_cached(
                "SELECT id FROM jobs WHERE unique_key = ?1 \
                 AND state IN ('scheduled', 'waiting', 'active') LIMIT 1",
            )
            .map_err(db(context))?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO jobs (id, handler, queue, payload, priority, state, max_attempts, \
                 run_at, unique_key, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            )
            .map_err(db(context))?;
        for job in jobs {
            if let Some(key) = &job.unique_key {
                let existing: Option<String> = find_unique
                    .query_row([key], |row| row.get(0))
                    .optional()
                    .map_err(db(context))?;
                if let Some(id) = existing {
                    results.push(Enqueued { id, existing: true });
                    continue;
                }
            }
            let id = uuid::Uuid::now_v7().to_string();
            let run_at = job.run_at.unwrap_or(now);
            let state = if run_at > now {
                JobState::Scheduled
            } else {
                JobState::Waiting
            };
            insert
                .execute(params![
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
                ])
                .map_err(db(context))?;
            results.push(Enqueued {
                id,
                existing: false,
            });
        }
    }
    tx.commit().map_err(db(context))?;
    Ok(results)
}

fn claim_batch(
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

fn renew_batch(
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

/// Applies `transition` to job `id` if `owner` still holds it, appending `attempt` (JSON) to
/// its history if given. Returns whether it was applied.
fn apply(
    tx: &rusqlite::Transaction<'_>,
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
        Transition::Requeue { at, error, uncount } => {
            let state = Transition::requeued_state(at, now);
            tx.prepare_cached(
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
            ])?
        }
        Transition::Delete => tx
            .prepare_cached(
                "DELETE FROM jobs WHERE id = ?1 AND state = 'active' AND lease_owner = ?2",
            )?
            .execute(params![id, owner])?,
    };
    Ok(changed > 0)
}

fn attempt_json(id: &str, attempt: &AttemptRecord) -> StoreResult<String> {
    serde_json::to_string(attempt).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        reason: format!("attempt record cannot be encoded: {e}"),
    })
}

/// The counters of job `id` if it is active under `owner`.
fn held_by(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    owner: &str,
) -> rusqlite::Result<Option<Held>> {
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

/// Settles a batch; returns (stale ids, whether any job was requeued).
fn settle_batch(
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
        let is_release = matches!(action, SettleAction::Release { .. });
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
fn recover_expired(conn: &mut Connection, now: Timestamp) -> StoreResult<usize> {
    let context = "recover expired leases";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    type Expired = (String, Held, Option<i64>, Option<String>, i64);
    let expired: Vec<Expired> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, attempts, max_attempts, cancel_requested, claimed_at, lease_owner, \
                 lease_expires_at FROM jobs WHERE state = 'active' AND lease_expires_at < ?1",
            )
            .map_err(db(context))?;
        stmt.query_map([now.0], |row| {
            let held = Held {
                attempts: row.get(1)?,
                max_attempts: row.get(2)?,
                cancel_requested: row.get(3)?,
            };
            Ok((row.get(0)?, held, row.get(4)?, row.get(5)?, row.get(6)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(db(context))?
    };
    for (id, held, claimed_at, owner, expires_at) in &expired {
        let owner = owner.as_deref().unwrap_or_default();
        let expires_at = Timestamp(*expires_at);
        let claimed_at = claimed_at.map_or(expires_at, Timestamp);
        let (transition, record) = held.lost(owner, claimed_at, expires_at, now);
        let json = attempt_json(id, &record)?;
        apply(&tx, id, owner, transition, Some(&json), now).map_err(db(context))?;
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

fn list_jobs(conn: &mut Connection, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
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

fn count_jobs(conn: &mut Connection) -> StoreResult<Vec<QueueCounts>> {
    let context = "count jobs";
    let mut by_queue: BTreeMap<String, QueueCounts> = BTreeMap::new();
    let mut stmt = conn
        .prepare_cached("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")
        .map_err(db(context))?;
    let mut rows = stmt.query([]).map_err(db(context))?;
    while let Some(row) = rows.next().map_err(db(context))? {
        let queue: String = row.get(0).map_err(db(context))?;
        let state: String = row.get(1).map_err(db(context))?;
        let count: u64 = row.get(2).map_err(db(context))?;
        let counts = by_queue
            .entry(queue.clone())
            .or_insert_with(|| QueueCounts {
                queue,
                ..QueueCounts::default()
            });
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
    drop(rows);
    drop(stmt);
    let paused: Vec<String> = conn
        .prepare_cached("SELECT name FROM paused_queues")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .map_err(db(context))?;
    for queue in paused {
        by_queue
            .entry(queue.clone())
            .or_insert_with(|| QueueCounts {
                queue,
                ..QueueCounts::default()
            })
            .paused = true;
    }
    Ok(by_queue.into_values().collect())
}

fn retry_jobs(conn: &mut Connection, target: RetryTarget, now: Timestamp) -> StoreResult<usize> {
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

/// The state of job `id`, or `NotFound`.
fn job_state(conn: &Connection, id: &str, context: &str) -> StoreResult<JobState> {
    let state: Option<String> = conn
        .prepare_cached("SELECT state FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
        .map_err(db(context))?;
    let state = state.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    state
        .parse()
        .map_err(|e: UnknownJobState| StoreError::Corrupt {
            id: id.to_owned(),
            reason: e.to_string(),
        })
}

fn cancel_job(conn: &mut Connection, id: &str, now: Timestamp) -> StoreResult<CancelOutcome> {
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

fn prune_jobs(
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
        for (state, keep) in policy.of(queue).rules() {
            if let Some(age) = keep.max_age() {
                let cutoff = now
                    .0
                    .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
                deleted += tx
                    .prepare_cached(
                        "DELETE FROM jobs WHERE state = ?1 AND queue = ?2 AND finished_at < ?3",
                    )
                    .and_then(|mut stmt| stmt.execute(params![state.as_str(), queue, cutoff]))
                    .map_err(db(context))?;
            }
            if let Some(count) = keep.max_count() {
                let keep = i64::try_from(count).unwrap_or(i64::MAX);
                deleted += tx
                    .prepare_cached(
                        "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state = ?1 \
                         AND queue = ?2 AND finished_at IS NOT NULL \
                         ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?3)",
                    )
                    .and_then(|mut stmt| stmt.execute(params![state.as_str(), queue, keep]))
                    .map_err(db(context))?;
            }
        }
    }
    tx.commit().map_err(db(context))?;
    Ok(deleted)
}

/// Whether any of `queues` is unpaused and has a waiting job.
fn any_waiting(conn: &Connection, queues: &[String]) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 'waiting') \
         AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE name = ?1)",
    )?;
    for queue in queues {
        if stmt.query_row([queue], |row| row.get::<_, bool>(0))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The earliest `run_at` among scheduled jobs of the unpaused `queues`.
fn next_scheduled(conn: &Connection, queues: &[String]) -> rusqlite::Result<Option<Timestamp>> {
    let mut stmt = conn.prepare_cached(
        "SELECT min(run_at) FROM jobs WHERE queue = ?1 AND state = 'scheduled' \
         AND NOT EXISTS (SELECT 1 FROM paused_queues WHERE name = ?1)",
    )?;
    let mut earliest: Option<i64> = None;
    for queue in queues {
        let at: Option<i64> = stmt.query_row([queue], |row| row.get(0))?;
        earliest = match (earliest, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest.map(Timestamp))
}

/// Changes whenever another connection (process or handle) commits to the file.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |row| row.get(0))
}

impl JobStore for EmbeddedStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> StoreResult<Vec<Enqueued>> {
        let enqueued = self.run(move |conn| enqueue_batch(conn, jobs, now)).await?;
        self.notify();
        Ok(enqueued)
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let (queue, owner) = (queue.to_owned(), owner.to_owned());
        self.run(move |conn| claim_batch(conn, &queue, max, &owner, now + lease, now))
            .await
    }

    async fn renew(
        &self,
        ids: &[String],
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<RenewReport> {
        let (ids, owner) = (ids.to_vec(), owner.to_owned());
        self.run(move |conn| renew_batch(conn, &ids, &owner, now + lease))
            .await
    }

    async fn settle(&self, batch: Vec<Settlement>, now: Timestamp) -> StoreResult<Vec<String>> {
        let (stale, requeued) = self.run(move |conn| settle_batch(conn, batch, now)).await?;
        if requeued {
            self.notify();
        }
        Ok(stale)
    }

    async fn progress(
        &self,
        id: &str,
        owner: &str,
        progress: Progress,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.run(move |conn| {
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
        })
        .await
    }

    async fn recover(&self, now: Timestamp) -> StoreResult<usize> {
        let recovered = self.run(move |conn| recover_expired(conn, now)).await?;
        self.notify();
        Ok(recovered)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Job>> {
        let id = id.to_owned();
        self.run(move |conn| {
            let context = "read a job";
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
                .map_err(db(context))?;
            let rows = stmt.query([&id]).map_err(db(context))?;
            Ok(collect_jobs(rows, context)?.pop().map(|(_, job)| job))
        })
        .await
    }

    async fn list(&self, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
        self.run(move |conn| list_jobs(conn, filter, page)).await
    }

    async fn counts(&self) -> StoreResult<Vec<QueueCounts>> {
        self.run(count_jobs).await
    }

    async fn retry_failed(&self, target: RetryTarget, now: Timestamp) -> StoreResult<usize> {
        let revived = self.run(move |conn| retry_jobs(conn, target, now)).await?;
        if revived > 0 {
            self.notify();
        }
        Ok(revived)
    }

    async fn cancel(&self, id: &str, now: Timestamp) -> StoreResult<CancelOutcome> {
        let id = id.to_owned();
        self.run(move |conn| cancel_job(conn, &id, now)).await
    }

    async fn pause(&self, queue: &str) -> StoreResult<()> {
        let queue = queue.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("INSERT OR IGNORE INTO paused_queues (name) VALUES (?1)")
                .and_then(|mut stmt| stmt.execute([&queue]))
                .map_err(db(&format!("pause queue `{queue}`")))?;
            Ok(())
        })
        .await
    }

    async fn resume(&self, queue: &str) -> StoreResult<()> {
        let queue = queue.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("DELETE FROM paused_queues WHERE name = ?1")
                .and_then(|mut stmt| stmt.execute([&queue]))
                .map_err(db(&format!("resume queue `{queue}`")))?;
            Ok(())
        })
        .await?;
        self.notify();
        Ok(())
    }

    async fn clear(&self, queue: &str) -> StoreResult<usize> {
        let queue = queue.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(
                "DELETE FROM jobs WHERE queue = ?1 AND state IN ('scheduled', 'waiting')",
            )
            .and_then(|mut stmt| stmt.execute([&queue]))
            .map_err(db(&format!("clear queue `{queue}`")))
        })
        .await
    }

    async fn prune(&self, policy: &RetentionPolicy, now: Timestamp) -> StoreResult<usize> {
        let policy = policy.clone();
        self.run(move |conn| prune_jobs(conn, &policy, now)).await
    }

    async fn wait(&self, queues: &[String], now: Timestamp, timeout: Duration) -> StoreResult<()> {
        let mut deadline = tokio::time::Instant::now() + timeout;
        // Registered before the check below, so an enqueue between the two is not missed.
        let notified = self.inner.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let queues = queues.to_vec();
        // The version is read before the checks: a commit landing between them changes it,
        // so the poll below wakes for it rather than missing it.
        let (seen, ready, next) = self
            .run(move |conn| {
                let context = "check for waiting jobs";
                let seen = data_version(conn).map_err(db(context))?;
                let ready = any_waiting(conn, &queues).map_err(db(context))?;
                let next = next_scheduled(conn, &queues).map_err(db(context))?;
                Ok((seen, ready, next))
            })
            .await?;
        match next {
            _ if ready => return Ok(()),
            Some(at) if at <= now => return Ok(()),
            Some(at) => deadline = deadline.min(tokio::time::Instant::now() + at.since(now)),
            None => {}
        }
        loop {
            tokio::select! {
                () = &mut notified => return Ok(()),
                () = tokio::time::sleep_until(deadline) => return Ok(()),
                () = tokio::time::sleep(POLL_INTERVAL) => {
                    let version = self
                        .run(|conn| data_version(conn).map_err(db("poll for changes")))
                        .await?;
                    if version != seen {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn next_run_at(&self, queues: &[String]) -> StoreResult<Option<Timestamp>> {
        let queues = queues.to_vec();
        self.run(move |conn| {
            next_scheduled(conn, &queues).map_err(db("find the next scheduled job"))
        })
        .await
    }
}
