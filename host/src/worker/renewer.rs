//! The renewer: renews the leases of every job running on this host in one batch, a few
//! times per lease period, and interrupts jobs that were cancelled or taken over meanwhile.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Shared, StopReason, lock};
use crate::registry::describe;
use crate::store::JobStore;

/// Renews the leases of every running job in one batch, a few times per lease period, and
/// interrupts jobs that were cancelled or taken over meanwhile.
pub(super) async fn renewer<S: JobStore>(shared: Arc<Shared<S>>, stop: CancellationToken) {
    let period = shared.config.host.lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = stop.cancelled() => return,
        }
        let ids: Vec<String> = lock(&shared.running).keys().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let lease = shared.config.host.lease;
        let now = shared.clock.now();
        match shared.store.renew(&ids, &shared.owner, lease, now).await {
            Ok(report) => {
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
            Err(error) => tracing::warn!(
                jobs = ids.len(),
                "failed to renew leases: {}",
                describe(&error)
            ),
        }
    }
}
