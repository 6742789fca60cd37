//! The settler: writes finished jobs' settlements to the store in batches (whatever finished
//! while the last batch was being written). If the store is unreachable it keeps them and
//! retries with backoff; nothing is dropped. Each settlement the store applied is reported
//! as a `JobSettled` event.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::claim::store_backoff;
use super::{Settling, Shared};
use crate::events::{Event, Events};
use crate::registry::describe;
use crate::store::{JobStore, SettleAction};

/// Most settlements written in one round trip.
const SETTLE_BATCH: usize = 256;

pub(super) async fn settler<S: JobStore>(
    shared: Arc<Shared<S>>,
    mut settlements: mpsc::UnboundedReceiver<Settling>,
) {
    let mut batch = Vec::new();
    let mut failures = 0u32;
    let (store, clock, events, parks) = (
        shared.store.clone(),
        shared.clock.clone(),
        shared.events.clone(),
        shared.parks.clone(),
    );
    // Holding `shared` would keep the sender alive and this task from ever ending.
    drop(shared);
    loop {
        if batch.is_empty() {
            match settlements.recv().await {
                Some(settling) => batch.push(settling),
                None => return,
            }
        }
        while batch.len() < SETTLE_BATCH {
            match settlements.try_recv() {
                Ok(settling) => batch.push(settling),
                Err(_) => break,
            }
        }
        let settlements = batch.iter().map(|s| s.settlement.clone()).collect();
        match store.settle(settlements, clock.now()).await {
            Ok(stale) => {
                failures = 0;
                report(&events, &batch, &stale);
                for Settling { settlement, job } in &batch {
                    if matches!(settlement.action, SettleAction::Park { .. })
                        && !stale.contains(&settlement.id)
                    {
                        let _ = parks.send(job.handler.clone());
                    }
                }
                batch.clear();
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(
                    jobs = batch.len(),
                    "failed to settle jobs, will retry: {}",
                    describe(&error)
                );
                tokio::time::sleep(store_backoff(failures)).await;
            }
        }
    }
}

/// Emits `JobSettled` for each settlement in `batch` the store applied (not in `stale`).
fn report(events: &Events, batch: &[Settling], stale: &[String]) {
    for id in stale {
        tracing::warn!(job = %id, "settlement not applied: the job's lease was lost");
    }
    for Settling { settlement, job } in batch {
        if !stale.contains(&settlement.id) {
            events.emit(Event::JobSettled {
                job,
                action: &settlement.action,
            });
        }
    }
}
