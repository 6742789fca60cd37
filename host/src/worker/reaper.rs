//! The reaper: returns jobs whose host died (their lease expired) to their queues (only
//! after a lease period of unbroken contact with the store, see `contact`), promotes due
//! delayed jobs, and prunes finished jobs past their queue's retention. Each round
//! first checks that the store is still the one opened (`JobStore::check`): a store file
//! deleted or replaced under the host stops it, since nothing it writes would be seen.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::registry::describe;
use crate::store::{JobStore, StoreError};

/// How often the reaper recovers expired leases and prunes finished jobs.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// Returns jobs of dead hosts to their queues and prunes finished jobs past retention;
/// sends on `gone` (and returns) when the store is gone.
pub(super) async fn reaper<S: JobStore>(
    shared: Arc<Shared<S>>,
    stop: CancellationToken,
    gone: oneshot::Sender<StoreError>,
) {
    loop {
        match shared.observed(shared.store.check()).await {
            Err(error @ StoreError::Gone { .. }) => {
                let _ = gone.send(error);
                return;
            }
            Err(error) => tracing::warn!("failed to check the job store: {}", describe(&error)),
            Ok(()) => {}
        }
        let now = shared.clock.now();
        if shared.contact.steady(now) {
            match shared.observed(shared.store.recover(now)).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(jobs = n, "recovered jobs whose lease expired"),
                Err(error) => {
                    tracing::warn!("failed to recover expired leases: {}", describe(&error))
                }
            }
        } else {
            tracing::debug!(
                "not taking back expired leases: the store has not answered steadily for a lease"
            );
        }
        let config = shared.config.current();
        let prune = shared.store.prune(&config.retention, now);
        if let Err(error) = shared.observed(prune).await {
            tracing::warn!("failed to prune finished jobs: {}", describe(&error));
        }
        tokio::select! {
            () = tokio::time::sleep(REAP_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
