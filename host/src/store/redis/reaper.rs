//! The reaper: takes back jobs whose lease expired (their host died or stalled), and
//! promotes due scheduled jobs to waiting.
//!
//! It lists expired leases (`active` score before now) a batch at a time, reads their
//! records and leases, and decides each in Rust with `Held::lost`: back to waiting with the
//! lost attempt counted, failed after the last attempt, cancelled when a cancel was
//! requested. `settle.lua` writes the decisions only while each lease is still the same
//! expired one, so a host that renewed in between keeps its job; a job whose record changed
//! in between is read and decided again.
//!
//! Garbage is moved aside or unlisted, and logged: an active id without a lease, or whose
//! record is sound but not a claimed job's, is unlisted; a record that cannot be read is
//! moved aside as a failed job (`quarantine.lua` keeps the value under `garbage:ID`); an id
//! whose record is missing is dropped. Promoting due jobs stays one script
//! (`promote.lua`), a pure move.

use super::admin::Stored;
use super::record::NotWaiting;
use super::scripts::{MovedReply, Refusal, SCRIPTS, log_broken};
use super::settle::{Holding, Leases, ROUNDS, Unheld, Write, still_changing};
use super::{MOVE_BATCH, RedisStore, backend};
use crate::store::{StoreResult, Timestamp};

/// Garbage listed as active that the reaper only unlists.
struct Unlisting<'a> {
    /// Its position among the ids of the round.
    at: usize,
    /// The record it read, when the decision depends on it (it is written only while the
    /// record is unchanged).
    expected: Option<&'a [u8]>,
    /// Why it is garbage, logged once it is unlisted.
    why: String,
}

impl RedisStore {
    /// Runs the reaper on one queue until it has nothing more to move; returns how many
    /// expired leases it took back.
    pub(super) async fn recover_queue(&self, queue: &str, now: Timestamp) -> StoreResult<usize> {
        let mut recovered = 0;
        loop {
            let expired = self.expired(queue, now).await?;
            recovered += self.take_back(queue, &expired, now).await?;
            if expired.len() < MOVE_BATCH {
                break;
            }
        }
        self.promote(queue, now).await?;
        Ok(recovered)
    }

    /// Up to `MOVE_BATCH` ids of `queue` whose lease expired before `now`.
    async fn expired(&self, queue: &str, now: Timestamp) -> StoreResult<Vec<String>> {
        redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys(queue).key("active"))
            .arg("-inf")
            .arg(format!("({}", now.0))
            .arg("LIMIT")
            .arg(0)
            .arg(MOVE_BATCH)
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("list expired leases in queue `{queue}`")))
    }

    /// Takes back the expired leases on `ids`; returns how many it took back.
    async fn take_back(&self, queue: &str, ids: &[String], now: Timestamp) -> StoreResult<usize> {
        let mut todo: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut recovered = 0;
        for _ in 0..ROUNDS {
            if todo.is_empty() {
                break;
            }
            let stored = self.read_stored(queue, &todo).await?;
            let (taken, changed) = self.reap(queue, &todo, &stored, now).await?;
            recovered += taken;
            todo = changed;
        }
        match todo.first() {
            None => Ok(recovered),
            Some(id) => Err(still_changing(id)),
        }
    }

    /// Decides and writes the expired leases on `ids` (as `stored`) once; returns how many
    /// it took back and the ids whose record changed meanwhile.
    async fn reap<'a>(
        &self,
        queue: &str,
        ids: &[&'a str],
        stored: &[Stored],
        now: Timestamp,
    ) -> StoreResult<(usize, Vec<&'a str>)> {
        let (lost, unlistings) = self.sort_out(queue, ids, stored, now).await;
        let mut writes = Vec::with_capacity(lost.len() + unlistings.len());
        let mut written = Vec::with_capacity(writes.capacity());
        let mut unwritable = Vec::new();
        for (at, holding, expires_at) in &lost {
            match lost_write(holding, ids[*at], *expires_at, now) {
                Ok(write) => {
                    writes.push(write);
                    written.push((*at, None));
                }
                Err(reason) => unwritable.push((*at, reason)),
            }
        }
        for Unlisting { at, expected, why } in &unlistings {
            let lease = stored[*at].lease.as_deref().unwrap_or_default();
            writes.push(Write::unlist(ids[*at], lease, *expected));
            written.push((*at, Some(why.as_str())));
        }
        let refused = self.write(queue, Leases::Expired, &writes, now).await?;
        let tally = tally(queue, ids, &written, refused);
        for (at, reason) in unwritable {
            self.quarantine(queue, ids[at], &reason, now).await;
        }
        Ok(tally)
    }

    /// Sorts the expired leases on `ids` (as `stored`) into held jobs whose lease was lost
    /// (with its expiry) and garbage to unlist, by position in `ids`; moves aside the records
    /// that cannot be read. Leases renewed since they were listed are left alone.
    async fn sort_out<'s>(
        &self,
        queue: &str,
        ids: &[&str],
        stored: &'s [Stored],
        now: Timestamp,
    ) -> (Vec<(usize, Holding, Timestamp)>, Vec<Unlisting<'s>>) {
        let mut lost = Vec::new();
        let mut unlistings = Vec::new();
        for (at, (id, stored)) in ids.iter().zip(stored).enumerate() {
            let Some(expires_at) = stored.expires_at.filter(|&score| score < now.0 as f64) else {
                continue;
            };
            let (expected, unheld) = match Holding::read(id, queue, stored, &self.inner.defaults) {
                Ok(holding) => {
                    lost.push((at, holding, Timestamp(expires_at as i64)));
                    continue;
                }
                Err(unheld @ Unheld::NoLease) => (None, unheld),
                Err(unheld @ Unheld::NotWaiting(NotWaiting::State(_))) => {
                    (stored.record.as_deref(), unheld)
                }
                Err(unheld) => {
                    self.quarantine(queue, id, &unheld.to_string(), now).await;
                    continue;
                }
            };
            unlistings.push(Unlisting {
                at,
                expected,
                why: unheld.to_string(),
            });
        }
        (lost, unlistings)
    }

    /// Promotes due scheduled jobs of `queue` to waiting, a batch per script call.
    async fn promote(&self, queue: &str, now: Timestamp) -> StoreResult<()> {
        let keys = self.keys(queue);
        let context = format!("promote due jobs in queue `{queue}`");
        loop {
            let mut invocation = self.invocation(&SCRIPTS.promote, &keys, now);
            invocation
                .arg(MOVE_BATCH)
                .arg(self.inner.defaults.queue_json(queue));
            let MovedReply {
                moved: taken,
                broken,
            } = self.run(&invocation, &context).await?;
            broken.log(queue);
            if taken < MOVE_BATCH {
                return Ok(());
            }
        }
    }

    /// Wakes the jobs of `queue` parked for `handler` (`unpark.lua`); returns how many.
    pub(super) async fn unpark_queue(
        &self,
        queue: &str,
        handler: &str,
        now: Timestamp,
    ) -> StoreResult<usize> {
        let keys = self.keys(queue);
        let context = format!("wake jobs parked for handler `{handler}` in queue `{queue}`");
        let mut invocation = self.invocation(&SCRIPTS.unpark, &keys, now);
        invocation
            .key(keys.key("parked"))
            .arg(handler)
            .arg(self.inner.defaults.queue_json(queue));
        let MovedReply {
            moved: woken,
            broken,
        } = self.run(&invocation, &context).await?;
        broken.log(queue);
        Ok(woken)
    }
}

/// The write that takes back job `id`, whose lease `holding` expired at `expires_at`; or why
/// it cannot be written.
fn lost_write<'a>(
    holding: &'a Holding,
    id: &'a str,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<Write<'a>, String> {
    let (transition, attempt) =
        holding
            .held
            .lost(&holding.owner, holding.claimed_at, expires_at, now);
    let attempt = serde_json::to_string(&attempt)
        .map_err(|e| format!("the attempt record cannot be encoded: {e}"))?;
    holding.write(id, transition, Some(&attempt), now)
}

/// Counts the leases taken back among the `written` ones (position in `ids`, and why when
/// it is garbage only unlisted) that `settle.lua` did not refuse, logs the garbage it
/// unlisted, and returns the count with the ids whose record changed meanwhile. A stale one
/// was renewed meanwhile: its host keeps it.
fn tally<'a>(
    queue: &str,
    ids: &[&'a str],
    written: &[(usize, Option<&str>)],
    refused: Vec<(usize, Refusal)>,
) -> (usize, Vec<&'a str>) {
    let mut refusals = vec![None; written.len()];
    for (position, refusal) in refused {
        refusals[position] = Some(refusal);
    }
    let mut taken = 0;
    let mut changed = Vec::new();
    for (&(at, why), refusal) in written.iter().zip(refusals) {
        match (refusal, why) {
            (Some(Refusal::Changed), _) => changed.push(ids[at]),
            (Some(Refusal::Stale), _) => {}
            (None, None) => taken += 1,
            (None, Some(why)) => log_broken(queue, ids[at], &format!("{why}; unlisted")),
        }
    }
    (taken, changed)
}
