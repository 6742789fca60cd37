//! The embedded store's file format: the tables and indexes, the `PRAGMA`s every connection
//! sets, and the schema version check run when a file is opened.
//!
//! Rule: a file written by a newer Kiln (a larger `user_version`) is refused, never read or
//! altered. Creating the schema runs under the write lock, so two processes opening a new
//! file at once do not race.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{Durability, db};
use crate::store::{StoreError, StoreResult};

/// Schema version written to `PRAGMA user_version`; a file with a larger one is refused.
/// 2 added schedule ticks (`SCHEDULES`).
const SCHEMA_VERSION: i64 = 2;

/// How long a writer waits for another process's write lock before failing. Long enough to
/// ride out a large prune or batch from the CLI, short enough to surface a stuck lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection; the store uses a few dozen distinct ones.
const STATEMENT_CACHE: usize = 64;

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

/// Version 2: the schedule tick a job was enqueued for, and one row per schedule with its
/// cursor (the latest cron tick enqueued) and its latest tick and job. Applied to new files
/// after `SCHEMA`, and to version 1 files when opened.
const SCHEDULES: &str = "
ALTER TABLE jobs ADD COLUMN tick_schedule TEXT;
ALTER TABLE jobs ADD COLUMN tick_at INTEGER;
ALTER TABLE jobs ADD COLUMN tick_manual INTEGER NOT NULL DEFAULT 0;
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    cursor INTEGER,
    last_tick INTEGER NOT NULL,
    last_job TEXT NOT NULL
) WITHOUT ROWID;
";

/// Added without a new schema version, since a build that does not know it loses nothing
/// (its parked jobs run at their time): created in new files and in older ones alike.
const PARKED: &str = "
-- parked: scheduled jobs waiting for their handler to be loaded, woken by its next load.
CREATE TABLE IF NOT EXISTS parked (id TEXT PRIMARY KEY, handler TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parked_handler ON parked (handler);
";

/// Sets the connection's busy timeout, statement cache, WAL mode and `durability`.
pub(super) fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
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
pub(super) fn migrate(conn: &Connection, path: &Path) -> StoreResult<()> {
    let context = format!("create the schema in `{}`", path.display());
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(db(&context))?;
    let result = create_or_check(conn, path, &context);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(db(&context))?;
    result
}

/// `migrate`'s work inside its transaction.
fn create_or_check(conn: &Connection, path: &Path, context: &str) -> StoreResult<()> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db(context))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::IncompatibleSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        conn.execute_batch(SCHEMA).map_err(db(context))?;
    }
    if found < 2 {
        conn.execute_batch(SCHEDULES).map_err(db(context))?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db(context))?;
    }
    conn.execute_batch(PARKED).map_err(db(context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EmbeddedStore, JobStore, NewJob, Tick, Timestamp};

    /// A file written by a version 1 Kiln (before schedules) opens, gains the schedule
    /// columns and table, and keeps its jobs.
    #[tokio::test]
    async fn a_version_1_file_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO jobs (id, handler, queue, payload, priority, state, max_attempts, \
                 run_at, created_at, updated_at) \
                 VALUES ('old', 'echo', 'default', x'', 0, 'waiting', 3, 5, 5, 5)",
                [],
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(&path, Durability::Normal).unwrap();
        let old = store
            .get("old")
            .await
            .unwrap()
            .expect("the old job is kept");
        assert_eq!(old.tick, None);
        let mut job = NewJob::new("echo", "default", Vec::new());
        job.tick = Some(Tick {
            schedule: "nightly".into(),
            at: Timestamp(60_000),
            manual: false,
        });
        let enqueued = store.enqueue_tick(job.clone(), Timestamp(61_000)).await;
        assert!(enqueued.unwrap().is_some());
        assert_eq!(
            store.enqueue_tick(job, Timestamp(62_000)).await.unwrap(),
            None
        );
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }
}
