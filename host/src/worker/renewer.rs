//! The renewer: renews the leases of every job running on this host in one batch, a few
//! times per lease period, and interrupts jobs that were cancelled or taken over meanwhile.
//! After a stall or an outage of the store it renews at once, so a live host keeps its jobs
//! (the reapers wait a lease period of steady contact first, see `contact`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::claim::store_backoff;
use super::{Shared, StopReason, lock};
use crate::registry::describe;
use crate::store::{JobStore, RenewReport};

/// Renews the leases of every running job in one batch, a few times per lease period, and
/// interrupts jobs that were cancelled or taken over meanwhile. The next renewal is due a
/// renew period after the last one started, so a renewal that took long (the store stalled)
/// is followed at once by one with a fresh expiry; a failed one is retried with backoff
/// within the period, so a host renews as soon as its store is back.
pub(super) async fn renewer<S: JobStore>(shared: Arc<Shared<S>>, stop: CancellationToken) {
    let period = shared.config.current().host.lease / 3;
    let mut wait = period;
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        wait = period;
        let ids: Vec<String> = lock(&shared.running).keys().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let lease = shared.config.current().host.lease;
        let now = shared.clock.now();
        let renewed = shared
            .observed(shared.store.renew(&ids, &shared.owner, lease, now))
            .await;
        match renewed {
            Ok(report) => {
                failures = 0;
                wait = period.saturating_sub(shared.clock.now().since(now));
                interrupt(&shared, &report);
            }
            Err(error) => {
                failures += 1;
                wait = store_backoff(failures).min(period);
                tracing::warn!(
                    jobs = ids.len(),
                    "failed to renew leases: {}",
                    describe(&error)
                );
            }
        }
    }
}

/// Interrupts the running jobs `report` says were taken over or cancelled.
fn interrupt<S>(shared: &Shared<S>, report: &RenewReport) {
    let running = lock(&shared.running);
    for (ids, reason) in [
        (&report.lost, StopReason::LeaseLost),
        (&report.cancel_requested, StopReason::Cancelled),
    ] {
        for id in ids {
            if let Some(job) = running.get(id) {
                tracing::info!(job = %id, ?reason, "interrupting running job");
                job.stop(reason);
            }
        }
    }
}
