//! The `JobStore` impl. The worker's path (enqueue, claim, renew, progress, wait) is here;
//! settling is in `settle.rs`, the reaper in `reaper.rs`, the admin operations in
//! `admin.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::keys::{group_by_queue, queue_of};
use super::record::{Claim, waiting_job};
use super::scripts::{ClaimReply, ProgressReply, Quarantined, Renewal, SCRIPTS, log_broken};
use super::settle::Holding;
use super::wake::Registration;
use super::{MAX_CLAIM_BATCH, MOVE_BATCH, RedisStore, backend, lock};
use crate::store::{
    CancelOutcome, Enqueued, Job, JobStore, ListFilter, NewJob, Page, Progress, QueueCounts,
    RenewReport, RetentionPolicy, RetryTarget, ScheduleRecord, Settlement, StoreError, StoreResult,
    Timestamp,
};

impl RedisStore {
    /// Enqueues jobs that all belong to `queue` in one script call.
    async fn enqueue_queue(
        &self,
        queue: &str,
        jobs: &[NewJob],
        now: Timestamp,
    ) -> StoreResult<Vec<Enqueued>> {
        self.register_queue(queue).await?;
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.enqueue, &keys, now);
        for job in jobs {
            let id = format!("{queue}/{}", uuid::Uuid::now_v7());
            invocation
                .key(keys.job(&id))
                .arg(&id)
                .arg(&job.handler)
                .arg(job.payload.as_slice())
                .arg(job.priority)
                .arg(job.run_at.map(|at| at.0.to_string()).unwrap_or_default())
                .arg(job.max_attempts)
                .arg(if job.unique_key.is_some() { "1" } else { "0" })
                .arg(job.unique_key.as_deref().unwrap_or(""));
        }
        self.run(&invocation, &format!("enqueue jobs in queue `{queue}`"))
            .await
    }

    /// Moves a claimed job the host cannot decode aside as failed, so it cannot block its
    /// queue, and logs why.
    pub(super) async fn quarantine(&self, queue: &str, id: &str, reason: &str, now: Timestamp) {
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.quarantine, &keys, now);
        invocation.key(keys.job(id)).arg(id).arg(reason);
        let context = format!("move job `{id}` aside");
        match self.run(&invocation, &context).await {
            Ok(Quarantined::Moved(reason)) => {
                tracing::error!(queue, job = %id, "moved a corrupt job aside as failed: {reason}")
            }
            Ok(Quarantined::Missing) => log_broken(
                queue,
                id,
                &format!("{reason}; its job key holds nothing, so its id was unlisted"),
            ),
            Err(e) => {
                tracing::error!(queue, job = %id, "failed to move a corrupt job aside ({reason}): {e:#}")
            }
        }
    }

    /// Renews `owner`'s leases on jobs of one queue; adds to `report`.
    async fn renew_queue(
        &self,
        queue: &str,
        ids: &[&String],
        owner: &str,
        (now, expires_at): (Timestamp, Timestamp),
        report: &mut RenewReport,
    ) -> StoreResult<()> {
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.renew, &keys, now);
        invocation.arg(owner).arg(expires_at.0);
        for id in ids {
            invocation.key(keys.job(id)).arg(id.as_str());
        }
        let context = format!("renew leases in queue `{queue}`");
        let renewals: Vec<Renewal> = self.run(&invocation, &context).await?;
        for (id, renewal) in ids.iter().zip(renewals) {
            match renewal {
                Renewal::Lost => {
                    self.forget_claims([(id.as_str(), owner)]);
                    report.lost.push((*id).clone());
                }
                Renewal::CancelRequested => report.cancel_requested.push((*id).clone()),
                Renewal::Held => {}
            }
        }
        Ok(())
    }

    /// Whether any of `queues` is unpaused and has a waiting job.
    async fn any_ready(&self, queues: &[String]) -> StoreResult<bool> {
        for queue in queues {
            let keys = self.keys(queue);
            let (waiting, paused): (u64, bool) = redis::pipe()
                .cmd("ZCARD")
                .arg(keys.key("waiting"))
                .cmd("EXISTS")
                .arg(keys.key("paused"))
                .query_async(&mut self.conn())
                .await
                .map_err(backend("check for waiting jobs"))?;
            if waiting > 0 && !paused {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl JobStore for RedisStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> StoreResult<Vec<Enqueued>> {
        if let Some(bad) = jobs.iter().find(|job| job.max_attempts == 0) {
            return Err(StoreError::InvalidJob {
                handler: bad.handler.clone(),
                reason: "max_attempts must be at least 1".to_owned(),
            });
        }
        let mut by_queue: BTreeMap<String, (Vec<usize>, Vec<NewJob>)> = BTreeMap::new();
        for (index, job) in jobs.into_iter().enumerate() {
            let entry = by_queue.entry(job.queue.clone()).or_default();
            entry.0.push(index);
            entry.1.push(job);
        }
        let mut results: Vec<Option<Enqueued>> = Vec::new();
        for (queue, (indices, batch)) in by_queue {
            let enqueued = self.enqueue_queue(&queue, &batch, now).await?;
            for (index, result) in indices.into_iter().zip(enqueued) {
                if results.len() <= index {
                    results.resize(index + 1, None);
                }
                results[index] = Some(result);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<Vec<Job>> {
        let max = max.min(MAX_CLAIM_BATCH);
        if max == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.claim, &keys, now);
        invocation
            .arg(max)
            .arg(owner)
            .arg((now + lease).0)
            .arg(MOVE_BATCH)
            .arg(self.inner.defaults.queue_json(queue));
        let context = format!("claim jobs from queue `{queue}`");
        let ClaimReply { claimed, broken } = self.run(&invocation, &context).await?;
        broken.log(queue);
        let mut jobs = Vec::with_capacity(claimed.len());
        let mut kept = Vec::with_capacity(claimed.len());
        for (id, record) in claimed {
            match waiting_job(&id, queue, &record, &self.inner.defaults) {
                Ok(mut job) => {
                    let holding = Holding::new(&job, record, owner, now);
                    let claim = Claim {
                        owner: owner.to_owned(),
                        claimed_at: now,
                        expires_at: now + lease,
                    };
                    claim.lay_over(&mut job);
                    kept.push((id, Arc::new(holding)));
                    jobs.push(job);
                }
                Err(unfit) => self.quarantine(queue, &id, &unfit.reason(), now).await,
            }
        }
        lock(&self.inner.claims).extend(kept);
        Ok(jobs)
    }

    async fn renew(
        &self,
        ids: &[String],
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<RenewReport> {
        let (groups, orphans) = group_by_queue(ids, |id| id.as_str());
        let mut report = RenewReport {
            lost: orphans.into_iter().cloned().collect(),
            cancel_requested: Vec::new(),
        };
        for (queue, ids) in groups {
            self.renew_queue(&queue, &ids, owner, (now, now + lease), &mut report)
                .await?;
        }
        // Report in input order, whatever order the queues were visited in.
        let position: HashMap<&String, usize> =
            ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
        for list in [&mut report.lost, &mut report.cancel_requested] {
            list.sort_by_key(|id| position.get(id).copied());
        }
        Ok(report)
    }

    async fn settle(&self, batch: Vec<Settlement>, now: Timestamp) -> StoreResult<Vec<String>> {
        let order: Vec<String> = batch.iter().map(|s| s.id.clone()).collect();
        let (groups, orphans) = group_by_queue(batch, |s| s.id.as_str());
        let mut stale_ids: Vec<String> = orphans.into_iter().map(|s| s.id).collect();
        for (queue, batch) in groups {
            stale_ids.extend(self.settle_queue(&queue, &batch, now).await?);
        }
        // Reported in input order, once per stale settlement (a job settled twice in one
        // batch has one).
        let mut left: HashMap<String, usize> = HashMap::new();
        for id in stale_ids {
            *left.entry(id).or_default() += 1;
        }
        Ok(order
            .into_iter()
            .filter(|id| match left.get_mut(id) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            })
            .collect())
    }

    async fn progress(
        &self,
        id: &str,
        owner: &str,
        progress: Progress,
        now: Timestamp,
    ) -> StoreResult<()> {
        let not_held = || StoreError::LeaseNotHeld {
            id: id.to_owned(),
            owner: owner.to_owned(),
        };
        let queue = queue_of(id).ok_or_else(not_held)?;
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.progress, &keys, now);
        invocation
            .key(keys.job(id))
            .arg(owner)
            .arg(progress.percent.min(100))
            .arg(if progress.message.is_some() { "1" } else { "0" })
            .arg(progress.message.as_deref().unwrap_or(""))
            .arg(id);
        let context = format!("record progress of job `{id}`");
        match self.run(&invocation, &context).await? {
            ProgressReply::Recorded => Ok(()),
            ProgressReply::NotHeld => Err(not_held()),
        }
    }

    async fn recover(&self, now: Timestamp) -> StoreResult<usize> {
        let mut total = 0;
        for queue in self.queues().await? {
            total += self.recover_queue(&queue, now).await?;
        }
        Ok(total)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Job>> {
        self.get_job(id).await
    }

    async fn list(&self, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
        self.list_jobs(filter, page).await
    }

    async fn counts(&self) -> StoreResult<Vec<QueueCounts>> {
        self.count_jobs().await
    }

    async fn retry_failed(&self, target: RetryTarget, now: Timestamp) -> StoreResult<usize> {
        self.retry_jobs(target, now).await
    }

    async fn cancel(&self, id: &str, now: Timestamp) -> StoreResult<CancelOutcome> {
        self.cancel_job(id, now).await
    }

    async fn pause(&self, queue: &str) -> StoreResult<()> {
        self.pause_queue(queue).await
    }

    async fn resume(&self, queue: &str) -> StoreResult<()> {
        self.resume_queue(queue).await
    }

    async fn clear(&self, queue: &str) -> StoreResult<usize> {
        self.clear_queue(queue).await
    }

    async fn prune(&self, policy: &RetentionPolicy, now: Timestamp) -> StoreResult<usize> {
        self.prune_jobs(policy, now).await
    }

    async fn wait(&self, queues: &[String], now: Timestamp, timeout: Duration) -> StoreResult<()> {
        let mut deadline = tokio::time::Instant::now() + timeout;
        // Registered before the first await: a wake-up from here on is kept as a permit.
        let registration = Registration::new(&self.inner.wakers, queues);
        // Reconnects (and resubscribes) the subscription if it dropped since the last wait.
        redis::cmd("PING")
            .exec_async(&mut self.inner.subscriber.clone())
            .await
            .map_err(backend("check the wake subscription"))?;
        if self.any_ready(queues).await? {
            return Ok(());
        }
        match self.next_run_at(queues).await? {
            Some(at) if at <= now => return Ok(()),
            Some(at) => deadline = deadline.min(tokio::time::Instant::now() + at.since(now)),
            None => {}
        }
        tokio::select! {
            () = registration.waiter.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        Ok(())
    }

    async fn unpark(&self, handler: &str, queues: &[String], now: Timestamp) -> StoreResult<usize> {
        let mut woken = 0;
        for queue in queues {
            woken += self.unpark_queue(queue, handler, now).await?;
        }
        Ok(woken)
    }

    async fn next_run_at(&self, queues: &[String]) -> StoreResult<Option<Timestamp>> {
        let mut earliest: Option<i64> = None;
        for queue in queues {
            let keys = self.keys(queue);
            let (paused, first): (bool, Vec<(String, f64)>) = redis::pipe()
                .cmd("EXISTS")
                .arg(keys.key("paused"))
                .cmd("ZRANGE")
                .arg(keys.key("scheduled"))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query_async(&mut self.conn())
                .await
                .map_err(backend("find the next scheduled job"))?;
            let at = first.first().map(|(_, at)| *at as i64);
            if let (false, Some(at)) = (paused, at) {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(earliest.map(Timestamp))
    }

    async fn enqueue_tick(&self, job: NewJob, now: Timestamp) -> StoreResult<Option<Enqueued>> {
        self.enqueue_tick_job(job, now).await
    }

    async fn schedule_records(
        &self,
        schedules: &[(String, String)],
    ) -> StoreResult<Vec<Option<ScheduleRecord>>> {
        self.records(schedules).await
    }
}
