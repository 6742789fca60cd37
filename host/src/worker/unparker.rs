//! The unparker: when a handler starts serving here, wakes the jobs that were parked
//! waiting for it (`SettleAction::Park`), on this host's queues, so they run at once
//! instead of at the end of their park.
//!
//! A park written just after its handler was loaded would miss that load's wake-up, so the
//! settler also reports each park it wrote; one whose handler is loaded by then is woken
//! here too.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::registry::describe;
use crate::store::JobStore;

pub(super) async fn unparker<S: JobStore>(
    shared: Arc<Shared<S>>,
    mut parks: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
) {
    let mut loads = shared.registry.loads();
    let loaded = |name: &String| shared.registry.get(name).is_some();
    loop {
        let mut names = BTreeSet::new();
        tokio::select! {
            () = stop.cancelled() => return,
            load = loads.recv() => match load {
                Ok(name) => {
                    names.insert(name);
                }
                Err(RecvError::Lagged(_)) => {
                    names.extend(shared.registry.handlers().iter().map(|h| h.name.clone()));
                }
                Err(RecvError::Closed) => return,
            },
            Some(name) = parks.recv() => {
                if loaded(&name) {
                    names.insert(name);
                }
            }
        }
        while let Ok(name) = parks.try_recv() {
            if loaded(&name) {
                names.insert(name);
            }
        }
        let queues: Vec<String> = shared.config.current().queues.keys().cloned().collect();
        for name in names {
            let now = shared.clock.now();
            match shared
                .observed(shared.store.unpark(&name, &queues, now))
                .await
            {
                Ok(0) => {}
                Ok(woken) => tracing::info!(
                    handler = %name, jobs = woken,
                    "woke the jobs that were waiting for the handler"
                ),
                Err(error) => tracing::warn!(
                    handler = %name,
                    "failed to wake the jobs waiting for the handler (they run when their \
                     park ends): {}",
                    describe(&error)
                ),
            }
        }
    }
}
