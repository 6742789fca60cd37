//! Queues: pause, resume, clear, and the counts per queue and state.

use super::{Ops, OpsError};
use crate::store::{JobStore, QueueCounts};

impl<S: JobStore> Ops<S> {
    /// Stops handing out jobs of a configured queue; running jobs finish.
    pub async fn pause(&self, queue: &str) -> Result<(), OpsError> {
        self.known_queue(queue)?;
        Ok(self.store.pause(queue).await?)
    }

    /// Lets a paused queue's jobs run again.
    pub async fn resume(&self, queue: &str) -> Result<(), OpsError> {
        self.known_queue(queue)?;
        Ok(self.store.resume(queue).await?)
    }

    /// Deletes the waiting and scheduled jobs of a configured queue; returns how many.
    pub async fn clear(&self, queue: &str) -> Result<usize, OpsError> {
        self.known_queue(queue)?;
        Ok(self.store.clear(queue).await?)
    }

    /// Job counts per queue and state: every configured queue, and any other queue the
    /// store holds jobs of, sorted by name.
    pub async fn stats(&self) -> Result<Vec<QueueCounts>, OpsError> {
        let mut counts = self.store.counts().await?;
        for queue in self.config().queues.keys() {
            if !counts.iter().any(|c| &c.queue == queue) {
                counts.push(QueueCounts {
                    queue: queue.clone(),
                    ..QueueCounts::default()
                });
            }
        }
        counts.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(counts)
    }
}
