//! Reading and steering jobs: get one, one attempt's log, list, retry one or every failed
//! job, cancel.

use super::{Ops, OpsError};
use crate::store::{
    AttemptRecord, CancelOutcome, Job, JobState, JobStore, ListFilter, Page, RetryTarget,
};

impl<S: JobStore> Ops<S> {
    /// Job `id`, or `JobNotFound`.
    pub async fn job(&self, id: &str) -> Result<Job, OpsError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| OpsError::JobNotFound(id.to_owned()))
    }

    /// The record, log included, of job `id`'s `attempt`-th recorded attempt (1-based, oldest
    /// first, counting on across retries), or of its last one when `None`. An unknown job is
    /// `JobNotFound`; a job without that attempt is `Invalid` (`--attempt`).
    pub async fn logs(&self, id: &str, attempt: Option<u32>) -> Result<AttemptRecord, OpsError> {
        let job = self.job(id).await?;
        let recorded = job.history.len();
        let index = match attempt {
            None => recorded.checked_sub(1),
            Some(n) => usize::try_from(n).ok().and_then(|n| n.checked_sub(1)),
        };
        let found = index.and_then(|index| job.history.into_iter().nth(index));
        found.ok_or_else(|| {
            let reason = match attempt {
                None => format!("job `{id}` has no attempts yet"),
                Some(n) => format!("job `{id}` has no attempt {n} ({recorded} recorded)"),
            };
            OpsError::invalid("--attempt", reason)
        })
    }

    /// Jobs newest first, of one configured queue and one state when given.
    pub async fn list(
        &self,
        queue: Option<String>,
        state: Option<JobState>,
        page: Page,
    ) -> Result<Vec<Job>, OpsError> {
        if let Some(queue) = &queue {
            self.known_queue(queue)?;
        }
        Ok(self.store.list(ListFilter { queue, state }, page).await?)
    }

    /// Moves failed job `id` back to waiting with fresh attempts.
    pub async fn retry(&self, id: &str) -> Result<usize, OpsError> {
        let target = RetryTarget::One(id.to_owned());
        Ok(self.store.retry_failed(target, self.now()).await?)
    }

    /// Moves every failed job (of one configured queue, when given) back to waiting.
    pub async fn retry_all_failed(&self, queue: Option<String>) -> Result<usize, OpsError> {
        if let Some(queue) = &queue {
            self.known_queue(queue)?;
        }
        let target = RetryTarget::AllFailed { queue };
        Ok(self.store.retry_failed(target, self.now()).await?)
    }

    /// Cancels job `id`: at once when it has not started, by interrupting it when it runs.
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, OpsError> {
        Ok(self.store.cancel(id, self.now()).await?)
    }
}
