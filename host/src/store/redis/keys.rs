//! The names of a queue's keys and what job ids say about them.
//!
//! All keys of a queue share one hash tag (`<namespace>:{q:<queue>}:...`), so every script
//! touches a single cluster slot. Job ids are `<queue>/<uuid v7>`: the queue is everything
//! before the last `/`, so `get(id)` knows the keys without a lookup, and the uuid orders
//! jobs by age across queues.

use std::collections::BTreeMap;

use crate::store::Timestamp;

/// The ten per-queue keys every script receives as KEYS[1..10], in this order.
pub(super) const QUEUE_KEYS: [&str; 10] = [
    "waiting",
    "scheduled",
    "active",
    "succeeded",
    "failed",
    "cancelled",
    "all",
    "unique",
    "paused",
    "leases",
];

/// The queue a Redis job id belongs to (everything before the last `/`).
pub fn queue_of(id: &str) -> Option<&str> {
    id.rsplit_once('/').map(|(queue, _)| queue)
}

/// The time-ordered part of an id (after the last `/`), used to sort across queues.
pub(super) fn order_key(id: &str) -> &str {
    id.rsplit_once('/').map_or(id, |(_, uuid)| uuid)
}

/// How many digits of a `waiting` member hold the job's run_at.
const RUN_AT_DIGITS: usize = 16;

/// Added to run_at in a `waiting` member, so that negative times sort too.
const RUN_AT_OFFSET: i64 = 1_000_000_000_000_000;

/// Job `id`'s member of the `waiting` zset (score: -priority): its run_at as 16 digits, then
/// the id. Equal priorities run by run_at, then by id (time-ordered, so FIFO). The same as
/// `ready_member` in lib.lua and the README's key table.
pub(super) fn waiting_member(run_at: Timestamp, id: &str) -> String {
    let at = run_at.0.saturating_add(RUN_AT_OFFSET);
    format!("{at:0width$}{id}", width = RUN_AT_DIGITS)
}

/// The job id in a `waiting` member.
pub(super) fn waiting_id(member: &str) -> &str {
    member.get(RUN_AT_DIGITS..).unwrap_or_default()
}

/// The names of one queue's keys.
pub(super) struct QueueKeys<'a> {
    /// `<namespace>:{q:<queue>}:`
    pub(super) prefix: String,
    pub(super) queue: &'a str,
}

impl<'a> QueueKeys<'a> {
    pub(super) fn new(namespace: &str, queue: &'a str) -> Self {
        QueueKeys {
            prefix: format!("{namespace}:{{q:{queue}}}:"),
            queue,
        }
    }

    pub(super) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(super) fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }
}

/// Groups items by the queue their id names, keeping input order within each group. Items
/// whose id names no queue are returned separately.
pub(super) fn group_by_queue<T>(
    items: impl IntoIterator<Item = T>,
    id: impl Fn(&T) -> &str,
) -> (BTreeMap<String, Vec<T>>, Vec<T>) {
    let mut groups: BTreeMap<String, Vec<T>> = BTreeMap::new();
    let mut orphans = Vec::new();
    for item in items {
        match queue_of(id(&item)) {
            Some(queue) => groups.entry(queue.to_owned()).or_default().push(item),
            None => orphans.push(item),
        }
    }
    (groups, orphans)
}
