//! The claim loop of one queue: waits for a free slot in the queue's concurrency and the
//! host's global cap, claims as many ready jobs as there are free slots in one round trip,
//! and hands each to the worker as a job future. An idle loop waits on the store's wake-up
//! instead of polling; an unreachable store is retried with backoff.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::attempt::run_job;
use crate::registry::describe;
use crate::store::JobStore;

/// Most jobs claimed in one round trip.
const CLAIM_BATCH: usize = 64;
/// Longest an idle claim loop waits before looking again (delayed jobs, paused queues).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Backoff bounds when the job store is unreachable.
pub(super) const STORE_RETRY_MIN: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);

pub(super) type JobFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The claim loop of one queue, as a function of the channel it hands job futures to.
pub(super) fn claim_loop<S: JobStore + 'static>(
    shared: Arc<Shared<S>>,
    queue: String,
    limit: Arc<QueueSlots>,
    stop: CancellationToken,
) -> impl FnOnce(mpsc::UnboundedSender<JobFuture>) -> JobFuture {
    move |jobs| {
        Box::pin(async move {
            let mut failures = 0u32;
            while !stop.is_cancelled() {
                let permits = tokio::select! {
                    permits = acquire(&shared.global, &limit) => permits,
                    () = stop.cancelled() => return,
                };
                let now = shared.clock.now();
                let lease = shared.config.current().host.lease;
                let claim = shared
                    .store
                    .claim(&queue, permits.len(), &shared.owner, lease, now);
                let claimed = shared.observed(claim).await;
                let claimed = match claimed {
                    Ok(claimed) => {
                        failures = 0;
                        claimed
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%queue, "failed to claim jobs: {}", describe(&error));
                        drop(permits);
                        tokio::select! {
                            () = tokio::time::sleep(store_backoff(failures)) => {}
                            () = stop.cancelled() => return,
                        }
                        continue;
                    }
                };
                if claimed.is_empty() {
                    drop(permits);
                    idle(&shared, &queue, &stop).await;
                    continue;
                }
                let mut permits = permits.into_iter();
                for job in claimed {
                    let permit = permits.next().expect("one permit per claimed job");
                    let _ = jobs.send(Box::pin(run_job(shared.clone(), job, permit)));
                }
            }
        })
    }
}

/// A queue's slots on this host: one permit per job it may run at once.
pub(super) struct QueueSlots {
    permits: Arc<Semaphore>,
    /// Permits a lowered concurrency still has to take back: each running job's permit, as
    /// it finishes, pays one off instead of returning, so the queue shrinks as soon as the
    /// jobs above its new concurrency are done and no claim slips in between.
    owed: AtomicUsize,
}

impl QueueSlots {
    pub(super) fn new(concurrency: usize) -> Self {
        QueueSlots {
            permits: Arc::new(Semaphore::new(concurrency)),
            owed: AtomicUsize::new(0),
        }
    }

    /// Adds `more` slots, first cancelling what a shrink still owes.
    pub(super) fn grow(&self, more: usize) {
        let owed = (self.owed)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
                Some(owed.saturating_sub(more))
            })
            .unwrap_or_default();
        self.permits.add_permits(more - owed.min(more));
    }

    /// Removes `fewer` slots: the free ones now, the rest as running jobs finish.
    pub(super) fn shrink(&self, fewer: usize) {
        let taken = self.permits.forget_permits(fewer);
        self.owed.fetch_add(fewer - taken, Ordering::SeqCst);
    }
}

/// Waits for at least one free slot in both the global cap and the queue's, then takes as
/// many more as are free right now, up to a claim batch.
async fn acquire(global: &Arc<Semaphore>, queue: &Arc<QueueSlots>) -> Vec<SlotPermit> {
    let permit = |q, g| SlotPermit {
        queue: Some(q),
        slots: queue.clone(),
        _global: g,
    };
    let q = queue.permits.clone().acquire_owned().await;
    let g = global.clone().acquire_owned().await;
    let mut permits = vec![permit(q.expect("never closed"), g.expect("never closed"))];
    while permits.len() < CLAIM_BATCH {
        let Ok(q) = queue.permits.clone().try_acquire_owned() else {
            break;
        };
        let Ok(g) = global.clone().try_acquire_owned() else {
            break;
        };
        permits.push(permit(q, g));
    }
    permits
}

/// A running job's place in its queue's concurrency and in the host's global cap.
pub(super) struct SlotPermit {
    /// `None` only once dropped.
    queue: Option<OwnedSemaphorePermit>,
    slots: Arc<QueueSlots>,
    _global: OwnedSemaphorePermit,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let owed = (self.slots.owed).fetch_update(Ordering::SeqCst, Ordering::SeqCst, |owed| {
            owed.checked_sub(1)
        });
        if owed.is_ok()
            && let Some(permit) = self.queue.take()
        {
            permit.forget();
        }
    }
}

async fn idle<S: JobStore>(shared: &Shared<S>, queue: &str, stop: &CancellationToken) {
    let queues = [queue.to_owned()];
    tokio::select! {
        result = shared.store.wait(&queues, shared.clock.now(), IDLE_WAIT) => {
            if let Err(error) = result {
                tracing::warn!(%queue, "failed to wait for jobs: {}", describe(&error));
                tokio::time::sleep(STORE_RETRY_MIN).await;
            }
        }
        () = stop.cancelled() => {}
    }
}

pub(super) fn store_backoff(failures: u32) -> Duration {
    STORE_RETRY_MIN
        .saturating_mul(1 << failures.min(10))
        .min(STORE_RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two permits of `slots`, as two running jobs hold them.
    async fn hold_two(global: &Arc<Semaphore>, slots: &Arc<QueueSlots>) -> Vec<SlotPermit> {
        let mut held = acquire(global, slots).await;
        held.truncate(2);
        held
    }

    #[tokio::test]
    async fn a_lowered_concurrency_takes_back_the_slots_of_finishing_jobs() {
        let global = Arc::new(Semaphore::new(100));
        let slots = Arc::new(QueueSlots::new(3));
        let running = hold_two(&global, &slots).await;
        assert_eq!(slots.permits.available_permits(), 1);
        // 3 -> 1 while two run: the free slot goes now, one finishing job pays off the other.
        slots.shrink(2);
        assert_eq!(slots.permits.available_permits(), 0);
        drop(running);
        assert_eq!(slots.permits.available_permits(), 1, "one slot is left");
        assert_eq!(slots.owed.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn growing_first_cancels_what_a_shrink_still_owes() {
        let global = Arc::new(Semaphore::new(100));
        let slots = Arc::new(QueueSlots::new(2));
        let running = hold_two(&global, &slots).await;
        slots.shrink(2);
        assert_eq!(slots.owed.load(Ordering::SeqCst), 2);
        // 0 -> 3: two of the three cancel the debt, one is free at once.
        slots.grow(3);
        assert_eq!(slots.permits.available_permits(), 1);
        drop(running);
        assert_eq!(slots.permits.available_permits(), 3);
    }
}
