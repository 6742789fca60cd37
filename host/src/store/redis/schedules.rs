//! Schedule ticks in the Redis store: `tick.lua` checks a schedule's cursor and writes the
//! tick's job and the new cursor in one script, in the slot of the job's queue, so any
//! number of hosts (on one server or a cluster) enqueue each cron tick once. A schedule's
//! record is three fields of that queue's `schedules` hash (see `tick.lua`); a schedule
//! moved to another queue starts a new record there.

use super::scripts::SCRIPTS;
use super::{RedisStore, backend};
use crate::store::{Enqueued, NewJob, ScheduleRecord, StoreError, StoreResult, Timestamp};

impl RedisStore {
    /// `JobStore::enqueue_tick`.
    pub(super) async fn enqueue_tick_job(
        &self,
        job: NewJob,
        now: Timestamp,
    ) -> StoreResult<Option<Enqueued>> {
        let Some(tick) = &job.tick else {
            return Err(StoreError::InvalidJob {
                handler: job.handler,
                reason: "a schedule tick's job must name its tick".to_owned(),
            });
        };
        if job.max_attempts == 0 {
            return Err(StoreError::InvalidJob {
                handler: job.handler,
                reason: "max_attempts must be at least 1".to_owned(),
            });
        }
        let queue = job.queue.as_str();
        self.register_queue(queue).await?;
        let keys = self.keys(queue);
        let id = format!("{queue}/{}", tick.job_uuid());
        let mut invocation = self.invocation(&SCRIPTS.tick, &keys, now);
        invocation
            .key(keys.job(&id))
            .key(keys.key("schedules"))
            .arg(&id)
            .arg(&job.handler)
            .arg(job.payload.as_slice())
            .arg(job.priority)
            .arg(job.max_attempts)
            .arg(&tick.schedule)
            .arg(tick.at.0)
            .arg(if tick.manual { "1" } else { "0" });
        let context = format!("enqueue a tick of schedule `{}`", tick.schedule);
        self.run(&invocation, &context).await
    }

    /// `JobStore::schedule_records`.
    pub(super) async fn records(
        &self,
        schedules: &[(String, String)],
    ) -> StoreResult<Vec<Option<ScheduleRecord>>> {
        let mut records = Vec::with_capacity(schedules.len());
        for (name, queue) in schedules {
            let (cursor, tick, job): (Option<i64>, Option<i64>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(self.keys(queue).key("schedules"))
                    .arg(format!("cursor:{name}"))
                    .arg(format!("tick:{name}"))
                    .arg(format!("job:{name}"))
                    .query_async(&mut self.conn())
                    .await
                    .map_err(backend(format!("read the record of schedule `{name}`")))?;
            records.push(match (tick, job) {
                (Some(tick), Some(job)) => Some(ScheduleRecord {
                    cursor: cursor.map(Timestamp),
                    last_tick: Timestamp(tick),
                    last_job: job,
                }),
                _ => None,
            });
        }
        Ok(records)
    }
}
