//! Schedule ticks in the embedded store: a tick's job and its schedule's row in the
//! `schedules` table are written in one transaction, after checking the row's cursor, so
//! two hosts (or a host and the CLI) on one file never enqueue the same cron tick twice.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::db;
use super::lifecycle::insert_jobs;
use crate::store::{Enqueued, NewJob, ScheduleRecord, StoreError, StoreResult, Timestamp};

/// Enqueues `job` for its tick unless the schedule's cursor is at or past it (see
/// `JobStore::enqueue_tick`).
pub(super) fn enqueue_tick(
    conn: &mut Connection,
    job: NewJob,
    now: Timestamp,
) -> StoreResult<Option<Enqueued>> {
    let Some(tick) = job.tick.clone() else {
        return Err(StoreError::InvalidJob {
            handler: job.handler,
            reason: "a schedule tick's job must name its tick".to_owned(),
        });
    };
    let context = &format!("enqueue a tick of schedule `{}`", tick.schedule);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(context))?;
    let cursor: Option<Option<i64>> = tx
        .prepare_cached("SELECT cursor FROM schedules WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([&tick.schedule], |row| row.get(0))
                .optional()
        })
        .map_err(db(context))?;
    let cursor = cursor.flatten().map(Timestamp);
    if !tick.manual && cursor.is_some_and(|cursor| cursor >= tick.at) {
        return Ok(None);
    }
    let mut enqueued = insert_jobs(&tx, vec![job], now).map_err(db(context))?;
    let Some(enqueued) = enqueued.pop() else {
        return Ok(None);
    };
    let new_cursor = if tick.manual { cursor } else { Some(tick.at) };
    tx.prepare_cached(
        "INSERT INTO schedules (name, cursor, last_tick, last_job) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET cursor = ?2, last_tick = ?3, last_job = ?4",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            tick.schedule,
            new_cursor.map(|c| c.0),
            tick.at.0,
            enqueued.id
        ])
    })
    .map_err(db(context))?;
    tx.commit().map_err(db(context))?;
    Ok(Some(enqueued))
}

/// The record of each named schedule, in order.
pub(super) fn records(
    conn: &mut Connection,
    names: &[String],
) -> StoreResult<Vec<Option<ScheduleRecord>>> {
    let context = "read schedule records";
    let mut stmt = conn
        .prepare_cached("SELECT cursor, last_tick, last_job FROM schedules WHERE name = ?1")
        .map_err(db(context))?;
    names
        .iter()
        .map(|name| {
            stmt.query_row([name], |row| {
                Ok(ScheduleRecord {
                    cursor: row.get::<_, Option<i64>>(0)?.map(Timestamp),
                    last_tick: Timestamp(row.get(1)?),
                    last_job: row.get(2)?,
                })
            })
            .optional()
            .map_err(db(context))
        })
        .collect()
}
