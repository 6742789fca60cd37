//! The admin side of the Redis store: reading and listing jobs, counts, retrying failed
//! jobs, cancelling, pausing, clearing and pruning queues.

use crate::store::JobDefaults;
use std::collections::{BTreeMap, HashMap};

use super::keys::{order_key, queue_of, waiting_id};
use super::record::{Claim, decode};
use super::scripts::{CancelReply, RetryReply, SCRIPTS};
use super::{RedisStore, backend, bad_reply, millis};
use crate::store::{
    CancelOutcome, Job, JobState, ListFilter, Page, QueueCounts, RetentionPolicy, RetryTarget,
    StoreError, StoreResult, Timestamp,
};

/// What Redis holds of one job: its record, its `leases` value and its `active` score (each
/// `None` when absent; a record is also `None` when the key holds something else).
pub(super) struct Stored {
    pub(super) record: Option<Vec<u8>>,
    pub(super) lease: Option<Vec<u8>>,
    pub(super) expires_at: Option<f64>,
}

impl Stored {
    /// The job this holds, with its lease laid over it; `None` when there is no record.
    fn decode(&self, id: &str, defaults: &JobDefaults) -> Option<StoreResult<Job>> {
        let record = self.record.as_ref()?;
        let claim = self
            .lease
            .as_ref()
            .zip(self.expires_at)
            .and_then(|(lease, at)| Claim::parse(lease, at));
        Some(decode(id, record, claim, defaults))
    }
}

impl RedisStore {
    pub(super) async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        let Some(queue) = queue_of(id) else {
            return Ok(None);
        };
        let mut jobs = self.read_jobs(queue, &[id.to_owned()]).await?;
        Ok(jobs.pop())
    }

    pub(super) async fn list_jobs(&self, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
        let queues = match filter.queue {
            Some(queue) => vec![queue],
            None => self.queues().await?,
        };
        let wanted = page.offset.saturating_add(page.limit);
        let mut candidates: Vec<(String, usize)> = Vec::new();
        for (index, queue) in queues.iter().enumerate() {
            let ids = self.newest_ids(queue, filter.state, wanted).await?;
            candidates.extend(ids.into_iter().map(|id| (id, index)));
        }
        candidates.sort_by(|a, b| order_key(&b.0).cmp(order_key(&a.0)));
        let page_ids = candidates.into_iter().skip(page.offset).take(page.limit);
        let mut by_queue: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut order = Vec::new();
        for (id, index) in page_ids {
            order.push(id.clone());
            by_queue.entry(index).or_default().push(id);
        }
        let mut jobs: HashMap<String, Job> = HashMap::new();
        for (index, ids) in by_queue {
            for job in self.read_listed(&queues[index], &ids).await? {
                jobs.insert(job.id.clone(), job);
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|id| jobs.remove(&id))
            .collect())
    }

    pub(super) async fn count_jobs(&self) -> StoreResult<Vec<QueueCounts>> {
        let mut all = Vec::new();
        for queue in self.queues().await? {
            let keys = self.keys(&queue);
            let mut pipe = redis::pipe();
            for state in JobState::ALL {
                pipe.cmd("ZCARD").arg(keys.key(state.as_str()));
            }
            pipe.cmd("EXISTS").arg(keys.key("paused"));
            let (scheduled, waiting, active, succeeded, failed, cancelled, paused) = pipe
                .query_async(&mut self.conn())
                .await
                .map_err(backend(format!("count jobs of queue `{queue}`")))?;
            let counts = QueueCounts {
                queue,
                scheduled,
                waiting,
                active,
                succeeded,
                failed,
                cancelled,
                paused,
            };
            let total = scheduled + waiting + active + succeeded + failed + cancelled;
            if total > 0 || paused {
                all.push(counts);
            }
        }
        Ok(all)
    }

    pub(super) async fn retry_jobs(
        &self,
        target: RetryTarget,
        now: Timestamp,
    ) -> StoreResult<usize> {
        let queues = match target {
            RetryTarget::One(id) => return self.retry_one(&id, now).await,
            RetryTarget::AllFailed { queue: Some(queue) } => vec![queue],
            RetryTarget::AllFailed { queue: None } => self.queues().await?,
        };
        let mut revived = 0;
        for queue in &queues {
            let keys = self.keys(queue);
            let mut invocation = self.invocation(&SCRIPTS.retry, &keys, now);
            invocation.arg("all");
            let context = format!("retry failed jobs of queue `{queue}`");
            match self.run(&invocation, &context).await? {
                RetryReply::Revived(count) => revived += count,
                other => return Err(bad_reply(&context, format!("{other:?} for all jobs"))),
            }
        }
        Ok(revived)
    }

    /// Revives failed job `id`; `NotFound` or `InvalidState` when it is missing or not failed.
    async fn retry_one(&self, id: &str, now: Timestamp) -> StoreResult<usize> {
        let queue = queue_of(id).ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.retry, &keys, now);
        invocation.key(keys.job(id)).arg("one").arg(id);
        match self.run(&invocation, &format!("retry job `{id}`")).await? {
            RetryReply::Revived(count) => Ok(count),
            RetryReply::Missing => Err(StoreError::NotFound(id.to_owned())),
            RetryReply::NotFailed(state) => Err(StoreError::InvalidState {
                id: id.to_owned(),
                state: record_state(id, &state)?,
                action: "retry",
            }),
        }
    }

    pub(super) async fn cancel_job(&self, id: &str, now: Timestamp) -> StoreResult<CancelOutcome> {
        let queue = queue_of(id).ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.cancel, &keys, now);
        invocation.key(keys.job(id)).arg(id);
        match self.run(&invocation, &format!("cancel job `{id}`")).await? {
            CancelReply::Cancelled => Ok(CancelOutcome::Cancelled),
            CancelReply::Requested => Ok(CancelOutcome::Requested),
            CancelReply::Missing => Err(StoreError::NotFound(id.to_owned())),
            CancelReply::Finished(state) => {
                record_state(id, &state).map(CancelOutcome::AlreadyFinished)
            }
        }
    }

    pub(super) async fn pause_queue(&self, queue: &str) -> StoreResult<()> {
        self.register_queue(queue).await?;
        redis::cmd("SET")
            .arg(self.keys(queue).key("paused"))
            .arg(1)
            .exec_async(&mut self.conn())
            .await
            .map_err(backend(format!("pause queue `{queue}`")))
    }

    pub(super) async fn resume_queue(&self, queue: &str) -> StoreResult<()> {
        let context = format!("resume queue `{queue}`");
        redis::cmd("DEL")
            .arg(self.keys(queue).key("paused"))
            .exec_async(&mut self.conn())
            .await
            .map_err(backend(context.clone()))?;
        redis::cmd("PUBLISH")
            .arg(self.wake_channel())
            .arg(queue)
            .exec_async(&mut self.conn())
            .await
            .map_err(backend(context))
    }

    pub(super) async fn clear_queue(&self, queue: &str) -> StoreResult<usize> {
        let keys = self.keys(queue);
        let invocation = self.invocation(&SCRIPTS.clear, &keys, Timestamp(0));
        self.run(&invocation, &format!("clear queue `{queue}`"))
            .await
    }

    pub(super) async fn prune_jobs(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> StoreResult<usize> {
        let mut deleted = 0;
        for queue in &self.queues().await? {
            let keys = self.keys(queue);
            let mut invocation = self.invocation(&SCRIPTS.prune, &keys, now);
            for (state, keep) in policy.of(queue).rules() {
                let by_age = keep.max_age().map(|age| now.0.saturating_sub(millis(age)));
                let by_count = match keep.max_count() {
                    Some(count) => self.count_cutoff(queue, state.as_str(), count).await?,
                    None => None,
                };
                let cutoff = by_age.max(by_count);
                invocation.arg(cutoff.map(|at| at.to_string()).unwrap_or_default());
            }
            let context = format!("prune finished jobs of queue `{queue}`");
            deleted += self.run::<usize>(&invocation, &context).await?;
        }
        Ok(deleted)
    }

    /// Reads jobs of one queue: their records with their leases laid over them. Missing
    /// ones are skipped.
    async fn read_jobs(&self, queue: &str, ids: &[String]) -> StoreResult<Vec<Job>> {
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, stored) in ids.iter().zip(self.read_stored(queue, ids).await?) {
            if let Some(job) = stored.decode(id, &self.inner.defaults) {
                jobs.push(job?);
            }
        }
        Ok(jobs)
    }

    /// Reads listed jobs of one queue like `read_jobs`, but a record that does not decode
    /// does not fail the listing: it is skipped with a warning naming its key and moved
    /// aside as a failed job, as a claim would move it.
    async fn read_listed(&self, queue: &str, ids: &[String]) -> StoreResult<Vec<Job>> {
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, stored) in ids.iter().zip(self.read_stored(queue, ids).await?) {
            let Some(decoded) = stored.decode(id, &self.inner.defaults) else {
                continue;
            };
            match decoded {
                Ok(job) => jobs.push(job),
                Err(StoreError::Corrupt { reason, .. }) => {
                    let key = self.keys(queue).job(id);
                    tracing::warn!(queue, job = %id, "listing skips the corrupt record at `{key}`: {reason}");
                    let now = self.server_time().await?;
                    self.quarantine(queue, id, &reason, now).await;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(jobs)
    }

    /// The server's clock: a listing has no `now` of its own, and the store never reads
    /// the wall clock.
    async fn server_time(&self) -> StoreResult<Timestamp> {
        let (seconds, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(backend("read the server's time"))?;
        Ok(Timestamp(seconds * 1000 + micros / 1000))
    }

    /// What Redis holds of jobs `ids` of one queue, in order, read in one pipeline.
    pub(super) async fn read_stored(
        &self,
        queue: &str,
        ids: &[impl AsRef<str>],
    ) -> StoreResult<Vec<Stored>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        type Read = (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>, Vec<Option<f64>>);
        let (records, leases, expiries): Read = redis::pipe()
            .cmd("MGET")
            .arg(ids.iter().map(|id| keys.job(id)).collect::<Vec<_>>())
            .cmd("HMGET")
            .arg(keys.key("leases"))
            .arg(&ids)
            .cmd("ZMSCORE")
            .arg(keys.key("active"))
            .arg(&ids)
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("read jobs of queue `{queue}`")))?;
        let stored = records.into_iter().zip(leases).zip(expiries);
        Ok(stored
            .map(|((record, lease), expires_at)| Stored {
                record,
                lease,
                expires_at,
            })
            .collect())
    }

    /// The newest `count` ids of one queue (in `state` if given), newest first.
    async fn newest_ids(
        &self,
        queue: &str,
        state: Option<JobState>,
        count: usize,
    ) -> StoreResult<Vec<String>> {
        let keys = self.keys(queue);
        let context = format!("list jobs of queue `{queue}`");
        let stop = i64::try_from(count).unwrap_or(i64::MAX) - 1;
        let Some(state) = state else {
            return redis::cmd("ZREVRANGE")
                .arg(keys.key("all"))
                .arg(0)
                .arg(stop)
                .query_async(&mut self.conn())
                .await
                .map_err(backend(context));
        };
        // State sets are ordered for the lifecycle, not by age: sort their ids (time-ordered
        // UUIDs) here. Costs one read of the whole set, which listing is rare enough for.
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.key(state.as_str()))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(backend(context))?;
        let mut ids: Vec<String> = members
            .into_iter()
            .map(|member| match state {
                JobState::Waiting => waiting_id(&member).to_owned(),
                _ => member,
            })
            .collect();
        ids.sort_by(|a, b| order_key(b).cmp(order_key(a)));
        ids.truncate(count);
        Ok(ids)
    }

    /// The finish time below which `queue`'s jobs in `state` exceed the newest `count`, or
    /// `None` if there are no more than `count`. Pruning below a time (rather than "all but
    /// N") never removes a job that finished after this was computed.
    async fn count_cutoff(&self, queue: &str, state: &str, count: u64) -> StoreResult<Option<i64>> {
        let key = self.keys(queue).key(state);
        let total: u64 = redis::cmd("ZCARD")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("count finished jobs of queue `{queue}`")))?;
        let excess = total.saturating_sub(count);
        if excess == 0 {
            return Ok(None);
        }
        let stop = i64::try_from(excess).unwrap_or(i64::MAX) - 1;
        let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(stop)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("find finished jobs of queue `{queue}`")))?;
        // The set is ordered by finish time: the last of the oldest `excess` is the cutoff.
        Ok(entries.last().map(|(_, at)| *at as i64 + 1))
    }
}

/// The state a record of job `id` names; a name that is no state makes the job corrupt.
fn record_state(id: &str, state: &str) -> StoreResult<JobState> {
    state.parse().map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        reason: format!("{e}"),
    })
}
