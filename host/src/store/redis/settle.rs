//! Settling jobs and taking back expired leases (the reaper).

use std::collections::HashMap;

use super::record::{Record, settled_record};
use super::scripts::{SCRIPTS, settle_args};
use super::{HOST_SETTLE_MAX_RECORD, MOVE_BATCH, RedisStore, backend, lock, log_report};
use crate::store::{SettleAction, Settlement, StoreResult, Timestamp};

impl RedisStore {
    /// Settles jobs of one queue in one script call; returns the stale ids.
    pub(super) async fn settle_queue(
        &self,
        queue: &str,
        batch: &[Settlement],
        now: Timestamp,
    ) -> StoreResult<Vec<String>> {
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.settle, &keys, now);
        let mut unique_keys = self.unique_keys_to_release(queue, batch).await?;
        {
            let claims = lock(&self.inner.claims);
            for settlement in batch {
                let (action, at, text, record) = settle_args(settlement)?;
                let outcome = match &settlement.action {
                    SettleAction::Succeed { .. } => Some(Ok(&text[..])),
                    SettleAction::Fail { .. } => Some(Err(&text[..])),
                    _ => None,
                };
                let held = claims
                    .get(&settlement.id)
                    .filter(|claimed| claimed.owner == settlement.owner);
                let claimed = held.filter(|claimed| claimed.record.len() <= HOST_SETTLE_MAX_RECORD);
                let settled = claimed.zip(outcome).and_then(|(claimed, outcome)| {
                    let new = settled_record(claimed, outcome, &record, now)?;
                    Some((&claimed.record[..], new, claimed.unique_key.clone()))
                });
                let (claimed, new, mut unique_key) = settled.unwrap_or_default();
                if settlement.action == SettleAction::SucceedAndDelete {
                    unique_key = match held {
                        Some(claimed) => claimed.unique_key.clone(),
                        None => unique_keys.remove(&settlement.id),
                    };
                }
                invocation
                    .key(keys.job(&settlement.id))
                    .arg(&settlement.id)
                    .arg(&settlement.owner)
                    .arg(action)
                    .arg(at)
                    .arg(text)
                    .arg(record)
                    .arg(claimed)
                    .arg(new)
                    .arg(unique_key.unwrap_or_default());
            }
        }
        let stale = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(format!("settle jobs in queue `{queue}`")))?;
        self.forget_claims(batch.iter().map(|s| (s.id.as_str(), s.owner.as_str())));
        Ok(stale)
    }

    /// The unique keys of the jobs `batch` deletes that this handle did not claim (it knows
    /// the others'), read from Redis; a settlement that deletes a job releases its key. A
    /// record that is missing or unreadable has none.
    pub(super) async fn unique_keys_to_release(
        &self,
        queue: &str,
        batch: &[Settlement],
    ) -> StoreResult<HashMap<String, String>> {
        let unknown: Vec<&str> = {
            let claims = lock(&self.inner.claims);
            batch
                .iter()
                .filter(|s| s.action == SettleAction::SucceedAndDelete)
                .filter(|s| claims.get(&s.id).is_none_or(|c| c.owner != s.owner))
                .map(|s| s.id.as_str())
                .collect()
        };
        if unknown.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = self.keys(queue);
        let records: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(unknown.iter().map(|id| keys.job(id)).collect::<Vec<_>>())
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("read jobs of queue `{queue}`")))?;
        let unique_key = |bytes: &[u8]| Record::parse(bytes).ok()?.text_opt("unique_key").ok()?;
        Ok(unknown
            .into_iter()
            .zip(records)
            .filter_map(|(id, record)| Some((id.to_owned(), unique_key(&record?)?)))
            .collect())
    }

    /// Drops what this handle kept of jobs that `owner` no longer holds, given as
    /// `(id, owner)`; a later claim of the same job under another owner stays.
    pub(super) fn forget_claims<'a>(&self, held: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut claims = lock(&self.inner.claims);
        for (id, owner) in held {
            if claims.get(id).is_some_and(|claimed| claimed.owner == owner) {
                claims.remove(id);
            }
        }
    }

    /// Runs the reaper on one queue until it has nothing more to move.
    pub(super) async fn recover_queue(&self, queue: &str, now: Timestamp) -> StoreResult<usize> {
        let keys = self.keys(queue);
        let mut total = 0;
        loop {
            let mut invocation = self.invocation(&SCRIPTS.recover, &keys, now);
            invocation.arg(MOVE_BATCH).arg(MOVE_BATCH);
            let (recovered, report): (usize, Vec<String>) = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend(format!(
                    "recover expired leases in queue `{queue}`"
                )))?;
            log_report(queue, &report);
            total += recovered;
            if recovered < MOVE_BATCH {
                return Ok(total);
            }
        }
    }
}
