//! The claim loops of the configured queues, kept in step with the live config: a reload
//! that adds a queue starts its loop, one that removes a queue stops its loop (its running
//! jobs finish), and a changed `concurrency` resizes the queue's slots in place. A
//! `paused` flag that the config turns on or off is applied to the store (`pause` /
//! `resume`), the same as `kiln pause` would; a queue paused by `kiln pause` while its flag
//! stays unchanged is left as it is.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::claim::{JobFuture, QueueSlots, claim_loop};
use crate::config::{Config, QueueConfig};
use crate::registry::describe;
use crate::store::{JobStore, StoreResult};

/// The claim loop of one queue, as this host runs it.
struct QueueLoop {
    /// The concurrency `limit` was sized for, to resize it by the difference.
    concurrency: usize,
    /// The configured flag last applied, so only a change in the config touches the store.
    paused: bool,
    /// The queue's slots; running jobs hold permits of it until they finish.
    limit: Arc<QueueSlots>,
    /// Stops this queue's loop alone (a child of the worker's stop-claiming token).
    stop: CancellationToken,
}

/// Every queue's claim loop.
pub(super) struct Queues<S> {
    shared: Arc<Shared<S>>,
    jobs: mpsc::UnboundedSender<JobFuture>,
    stop: CancellationToken,
    loops: JoinSet<()>,
    running: BTreeMap<String, QueueLoop>,
}

impl<S: JobStore + 'static> Queues<S> {
    /// Starts a claim loop for each queue of the current config, pausing those configured
    /// paused.
    pub(super) async fn start(
        shared: Arc<Shared<S>>,
        jobs: mpsc::UnboundedSender<JobFuture>,
    ) -> StoreResult<Self> {
        let config = shared.config.current();
        let mut queues = Queues {
            shared,
            jobs,
            stop: CancellationToken::new(),
            loops: JoinSet::new(),
            running: BTreeMap::new(),
        };
        for (name, queue) in &config.queues {
            if queue.paused {
                queues.shared.store.pause(name).await?;
            }
            queues.spawn(name, queue);
        }
        Ok(queues)
    }

    /// How many queues are claimed from.
    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    /// Brings the loops in step with `config`, after a reload.
    pub(super) async fn apply(&mut self, config: &Config) {
        let removed: Vec<String> = (self.running.keys())
            .filter(|name| !config.queues.contains_key(*name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(queue) = self.running.remove(&name) {
                queue.stop.cancel();
                tracing::info!(queue = %name, "queue removed from the config: no longer claimed");
            }
        }
        for (name, queue) in &config.queues {
            let Some(running) = self.running.get_mut(name) else {
                if queue.paused {
                    self.set_paused(name, true).await;
                }
                self.spawn(name, queue);
                tracing::info!(queue = %name, "queue added by the config: claiming");
                continue;
            };
            resize(running, queue.concurrency);
            if running.paused != queue.paused {
                running.paused = queue.paused;
                self.set_paused(name, queue.paused).await;
            }
        }
    }

    /// Stops every loop and waits for them to end (running jobs are not waited for).
    pub(super) async fn stop(mut self) {
        self.stop.cancel();
        while self.loops.join_next().await.is_some() {}
    }

    fn spawn(&mut self, name: &str, queue: &QueueConfig) {
        let limit = Arc::new(QueueSlots::new(queue.concurrency));
        let stop = self.stop.child_token();
        let task = claim_loop(
            self.shared.clone(),
            name.to_owned(),
            limit.clone(),
            stop.clone(),
        );
        self.loops.spawn(task(self.jobs.clone()));
        let entry = QueueLoop {
            concurrency: queue.concurrency,
            paused: queue.paused,
            limit,
            stop,
        };
        self.running.insert(name.to_owned(), entry);
    }

    async fn set_paused(&self, queue: &str, paused: bool) {
        let store = &self.shared.store;
        let (result, done) = if paused {
            (store.pause(queue).await, "paused")
        } else {
            (store.resume(queue).await, "resumed")
        };
        match result {
            Ok(()) => tracing::info!(%queue, "queue {done} by the config"),
            Err(error) => tracing::warn!(
                %queue,
                "failed to apply the config's `paused = {paused}`: {}",
                describe(&error)
            ),
        }
    }
}

/// Grows or shrinks a queue's slots to `concurrency`: growing adds slots at once, shrinking
/// takes back the free ones now and the rest as running jobs finish (see [`QueueSlots`]).
fn resize(queue: &mut QueueLoop, concurrency: usize) {
    let before = std::mem::replace(&mut queue.concurrency, concurrency);
    if concurrency > before {
        queue.limit.grow(concurrency - before);
    } else if concurrency < before {
        queue.limit.shrink(before - concurrency);
    }
}
