//! How an idle worker waits on the embedded store: until a job of its queues is ready, a
//! delayed one falls due, or the file changed, and when the next delayed job is due.
//!
//! Jobs made ready by this process wake the waiters at once (the store's `Notify`); commits by
//! another process (the CLI) or another handle are seen by polling SQLite's `data_version`
//! every `POLL_INTERVAL`. Rule: the waiting itself is async (tokio timers); only the checks
//! touch SQLite, on the blocking thread like every other call.

use std::time::Duration;

use rusqlite::Connection;

use super::{EmbeddedStore, db};
use crate::store::{StoreResult, Timestamp};

/// How often `wait` checks whether another connection committed. Bounds the wake-up latency
/// for jobs enqueued by another process (the CLI); same-process enqueues wake at once.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What one check of the file found.
struct Snapshot {
    /// `data_version` when the check began: a later commit by another connection changes it.
    version: i64,
    /// Some unpaused queue has a waiting job.
    ready: bool,
    /// The earliest delayed job of the unpaused queues.
    next: Option<Timestamp>,
}

/// Returns when a job of `queues` may be ready, or after `timeout`.
pub(super) async fn until_ready(
    store: &EmbeddedStore,
    queues: &[String],
    now: Timestamp,
    timeout: Duration,
) -> StoreResult<()> {
    let mut deadline = tokio::time::Instant::now() + timeout;
    // Registered before the check below, so an enqueue between the two is not missed.
    let notified = store.inner.changed.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let queues = queues.to_vec();
    let seen = store.run(move |conn| snapshot(conn, &queues)).await?;
    match seen.next {
        _ if seen.ready => return Ok(()),
        Some(at) if at <= now => return Ok(()),
        Some(at) => deadline = deadline.min(tokio::time::Instant::now() + at.since(now)),
        None => {}
    }
    loop {
        tokio::select! {
            () = &mut notified => return Ok(()),
            () = tokio::time::sleep_until(deadline) => return Ok(()),
            () = tokio::time::sleep(POLL_INTERVAL) => {
                let version = store
                    .run(|conn| data_version(conn).map_err(db("poll for changes")))
                    .await?;
                if version != seen.version {
                    return Ok(());
                }
            }
        }
    }
}

/// `JobStore::next_run_at`: when the next delayed job of the unpaused `queues` is due.
pub(super) fn next_run_at(
    conn: &mut Connection,
    queues: &[String],
) -> StoreResult<Option<Timestamp>> {
    next_scheduled(conn, queues).map_err(db("find the next scheduled job"))
}

/// Checks `queues` for work. The version is read before the checks: a commit landing between
/// them changes it, so the poll in `until_ready` wakes for it rather than missing it.
fn snapshot(conn: &mut Connection, queues: &[String]) -> StoreResult<Snapshot> {
    let context = "check for waiting jobs";
    let version = data_version(conn).map_err(db(context))?;
    let ready = any_waiting(conn, queues).map_err(db(context))?;
    let next = next_scheduled(conn, queues).map_err(db(context))?;
    Ok(Snapshot {
        version,
        ready,
        next,
    })
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
