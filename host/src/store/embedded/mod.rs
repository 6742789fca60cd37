//! The embedded job store: one SQLite file in WAL mode that the host and the CLI (separate
//! processes) use at once, surviving restarts and `kill -9` because every change is a
//! transaction.
//!
//! Rule: nothing here blocks the async threads. Every SQLite call runs inside
//! `tokio::task::spawn_blocking` on this handle's single connection, which sits behind a std
//! `Mutex` (held only on the blocking thread, never across an `.await`). Calls through one
//! handle are therefore serialised; other processes and other handles coordinate through
//! SQLite's file locks, waiting up to `schema::BUSY_TIMEOUT` for the write lock.
//!
//! Layout: the `jobs` table holds one row per job, with its attempt history as a JSON array
//! appended in SQL (`json_insert`) so settling never parses it; `paused_queues` lists paused
//! queues; `schedules` holds each schedule's cursor, latest tick and its job. `seq` (the
//! rowid) is the enqueue order and the FIFO tie-breaker. Writes that change many jobs
//! (`claim`, `settle`, `enqueue`) take the write lock up front (`BEGIN IMMEDIATE`) and handle
//! the whole batch in one transaction with cached prepared statements.
//!
//! Durability (`Durability`): WAL with `synchronous=NORMAL` commits without an fsync; the WAL
//! is synced at checkpoints. A commit survives the process dying (`kill -9`, panic), but the
//! last commits can be lost if the machine loses power. `synchronous=FULL` syncs the WAL on
//! every commit and also survives power loss, at the cost of one fsync per transaction (per
//! batch, not per job, so batching keeps most of the throughput).
//!
//! This file holds the handle, its connection and the `JobStore` impl, which runs each call
//! on the blocking thread and wakes local waiters; the SQL is in `schema` (tables, `PRAGMA`s,
//! version check), `codec` (row <-> `Job`), `lifecycle` (enqueue, claim, renew, progress,
//! settle, recover), `admin` (get, list, counts, retry, cancel, pause, resume, clear, prune),
//! `schedules` (schedule ticks and their records) and `wait` (waiting for ready jobs, the
//! next due time).

mod admin;
mod codec;
mod lifecycle;
mod schedules;
mod schema;
mod wait;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, MAIN_DB, OpenFlags};
use tokio::sync::Notify;

use super::{
    CancelOutcome, Enqueued, Job, JobStore, ListFilter, NewJob, Page, Progress, QueueCounts,
    RenewReport, RetentionPolicy, RetryTarget, ScheduleRecord, Settlement, StoreError, StoreResult,
    Timestamp,
};

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
    /// The file opened, and its identity (device, inode) then: `check` compares them, so a
    /// host notices its file deleted or replaced instead of writing where no one reads.
    path: PathBuf,
    identity: (u64, u64),
    /// Fired after this process makes jobs ready, so local `wait`ers wake without polling.
    changed: Notify,
}

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
    /// A file that cannot be written is refused (`ReadOnly`).
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> StoreResult<Self> {
        Self::open_with(path.as_ref(), durability, OpenFlags::SQLITE_OPEN_CREATE)
    }

    /// Opens the store file at `path` like [`open`](Self::open), but never creates one: a
    /// missing file is `Missing` (what the CLI does, so a mistyped path is an error).
    pub fn open_existing(path: impl AsRef<Path>, durability: Durability) -> StoreResult<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        Self::open_with(path, durability, OpenFlags::empty())
    }

    fn open_with(path: &Path, durability: Durability, create: OpenFlags) -> StoreResult<Self> {
        let context = format!("open `{}`", path.display());
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | create;
        let conn = Connection::open_with_flags(path, flags).map_err(db(&context))?;
        // SQLite falls back to read-only when the file cannot be written; a store must be.
        if conn.is_readonly(MAIN_DB).map_err(db(&context))? {
            return Err(StoreError::ReadOnly {
                path: path.to_owned(),
            });
        }
        schema::configure(&conn, durability).map_err(db(&context))?;
        schema::migrate(&conn, path)?;
        let identity = identity(path).map_err(|source| StoreError::Backend {
            context: context.clone(),
            source: Box::new(source),
        })?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_owned(),
                identity,
                changed: Notify::new(),
            }),
        })
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

    /// `Gone` unless the file at the store's path is still the one it opened.
    fn check_file(&self) -> StoreResult<()> {
        let Inner { path, identity, .. } = &*self.inner;
        match self::identity(path) {
            Ok(now) if now == *identity => Ok(()),
            Ok(_) => Err(StoreError::Gone { path: path.clone() }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::Gone { path: path.clone() })
            }
            Err(error) => Err(StoreError::Backend {
                context: format!("look at `{}`", path.display()),
                source: Box::new(error),
            }),
        }
    }

    /// Wakes this process's `wait`ers: some job may have become ready.
    fn notify(&self) {
        self.inner.changed.notify_waiters();
    }
}

/// The device and inode of the file at `path`.
fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

impl JobStore for EmbeddedStore {
    async fn check(&self) -> StoreResult<()> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.check_file())
            .await
            .map_err(|join| StoreError::Backend {
                context: "check the job store file".to_owned(),
                source: Box::new(join),
            })?
    }

    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> StoreResult<Vec<Enqueued>> {
        let enqueued = self
            .run(move |conn| lifecycle::enqueue(conn, jobs, now))
            .await?;
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
        self.run(move |conn| lifecycle::claim(conn, &queue, max, &owner, now + lease, now))
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
        self.run(move |conn| lifecycle::renew(conn, &ids, &owner, now + lease))
            .await
    }

    async fn settle(&self, batch: Vec<Settlement>, now: Timestamp) -> StoreResult<Vec<String>> {
        let (stale, requeued) = self
            .run(move |conn| lifecycle::settle(conn, batch, now))
            .await?;
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
        self.run(move |conn| lifecycle::progress(conn, id, owner, progress, now))
            .await
    }

    async fn recover(&self, now: Timestamp) -> StoreResult<usize> {
        let recovered = self.run(move |conn| lifecycle::recover(conn, now)).await?;
        self.notify();
        Ok(recovered)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Job>> {
        let id = id.to_owned();
        self.run(move |conn| admin::get(conn, &id)).await
    }

    async fn list(&self, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
        self.run(move |conn| admin::list(conn, filter, page)).await
    }

    async fn counts(&self) -> StoreResult<Vec<QueueCounts>> {
        self.run(admin::counts).await
    }

    async fn retry_failed(&self, target: RetryTarget, now: Timestamp) -> StoreResult<usize> {
        let revived = self
            .run(move |conn| admin::retry(conn, target, now))
            .await?;
        if revived > 0 {
            self.notify();
        }
        Ok(revived)
    }

    async fn cancel(&self, id: &str, now: Timestamp) -> StoreResult<CancelOutcome> {
        let id = id.to_owned();
        self.run(move |conn| admin::cancel(conn, &id, now)).await
    }

    async fn pause(&self, queue: &str) -> StoreResult<()> {
        let queue = queue.to_owned();
        self.run(move |conn| admin::pause(conn, &queue)).await
    }

    async fn resume(&self, queue: &str) -> StoreResult<()> {
        let queue = queue.to_owned();
        self.run(move |conn| admin::resume(conn, &queue)).await?;
        self.notify();
        Ok(())
    }

    async fn clear(&self, queue: &str) -> StoreResult<usize> {
        let queue = queue.to_owned();
        self.run(move |conn| admin::clear(conn, &queue)).await
    }

    async fn prune(&self, policy: &RetentionPolicy, now: Timestamp) -> StoreResult<usize> {
        let policy = policy.clone();
        self.run(move |conn| admin::prune(conn, &policy, now)).await
    }

    async fn wait(&self, queues: &[String], now: Timestamp, timeout: Duration) -> StoreResult<()> {
        wait::until_ready(self, queues, now, timeout).await
    }

    async fn unpark(&self, handler: &str, queues: &[String], now: Timestamp) -> StoreResult<usize> {
        let (handler, queues) = (handler.to_owned(), queues.to_vec());
        let woken = self
            .run(move |conn| lifecycle::unpark(conn, &handler, &queues, now))
            .await?;
        if woken > 0 {
            self.notify();
        }
        Ok(woken)
    }

    async fn next_run_at(&self, queues: &[String]) -> StoreResult<Option<Timestamp>> {
        let queues = queues.to_vec();
        self.run(move |conn| wait::next_run_at(conn, &queues)).await
    }

    async fn enqueue_tick(&self, job: NewJob, now: Timestamp) -> StoreResult<Option<Enqueued>> {
        let enqueued = self
            .run(move |conn| schedules::enqueue_tick(conn, job, now))
            .await?;
        if enqueued.is_some() {
            self.notify();
        }
        Ok(enqueued)
    }

    async fn schedule_records(
        &self,
        schedules: &[(String, String)],
    ) -> StoreResult<Vec<Option<ScheduleRecord>>> {
        let names: Vec<String> = schedules.iter().map(|(name, _)| name.clone()).collect();
        self.run(move |conn| schedules::records(conn, &names)).await
    }
}
