//! The claim loop of one queue: waits for a free slot in the queue's concurrency and the
//! host's global cap, claims as many ready jobs as there are free slots in one round trip,
//! and hands each to the worker as a job future. An idle loop waits on the store's wake-up
//! instead of polling; an unreachable store is retried with backoff.

use std::future::Future;
use std::sync::Arc;
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
    limit: Arc<Semaphore>,
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

/// Waits for at least one free slot in both the global cap and the queue's, then takes as
/// many more as are free right now, up to a claim batch.
async fn acquire(global: &Arc<Semaphore>, queue: &Arc<Semaphore>) -> Vec<SlotPermit> {
    let first = SlotPermit {
        _queue: queue.clone().acquire_owned().await.expect("never closed"),
        _global: global.clone().acquire_owned().await.expect("never closed"),
    };
    let mut permits = vec![first];
    while permits.len() < CLAIM_BATCH {
        let Ok(q) = queue.clone().try_acquire_owned() else {
            break;
        };
        let Ok(g) = global.clone().try_acquire_owned() else {
            break;
        };
        permits.push(SlotPermit {
            _queue: q,
            _global: g,
        });
    }
    permits
}

/// A running job's place in its queue's concurrency and in the host's global cap.
pub(super) struct SlotPermit {
    _queue: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
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
