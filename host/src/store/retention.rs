//! How long finished jobs are kept: per queue and finished state, a count and an age.

use std::time::Duration;

use super::JobState;

/// How many finished jobs of one state a queue keeps, and for how long: a job is deleted
/// once it is beyond the newest `count` or older than `age`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// How many of the newest finished jobs are kept at most; `u64::MAX` is no limit.
    pub count: u64,
    /// How long after finishing a job is kept at most; `Duration::MAX` is no limit.
    pub age: Duration,
}

impl Keep {
    /// Keeps every job, forever.
    pub const ALL: Keep = Keep {
        count: u64::MAX,
        age: Duration::MAX,
    };

    /// Whether no finished job is kept at all (a count or an age of zero).
    pub fn keeps_none(&self) -> bool {
        self.count == 0 || self.age.is_zero()
    }

    /// The count limit, `None` when there is none.
    pub fn max_count(&self) -> Option<u64> {
        (self.count != u64::MAX).then_some(self.count)
    }

    /// The age limit, `None` when there is none.
    pub fn max_age(&self) -> Option<Duration> {
        (self.age != Duration::MAX).then_some(self.age)
    }
}

/// How long a queue's finished jobs are kept, per finished state, so the store does not grow
/// without bound. The default keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Jobs that succeeded; usually kept only for inspection, so briefly.
    pub succeeded: Keep,
    /// Jobs that failed for good (the dead letters); kept longer so they can be retried.
    pub failed: Keep,
    /// Jobs that were cancelled.
    pub cancelled: Keep,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded: Keep::ALL,
            failed: Keep::ALL,
            cancelled: Keep::ALL,
        }
    }
}

impl Retention {
    /// Each finished state with what is kept of it.
    pub fn rules(&self) -> [(JobState, Keep); 3] {
        [
            (JobState::Succeeded, self.succeeded),
            (JobState::Failed, self.failed),
            (JobState::Cancelled, self.cancelled),
        ]
    }
}

/// The retention of every queue: queues named in `queues` by their own, every other queue
/// by `default`. Counts are per queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub default: Retention,
    pub queues: std::collections::BTreeMap<String, Retention>,
}

impl RetentionPolicy {
    /// The same retention for every queue.
    pub fn uniform(retention: Retention) -> Self {
        RetentionPolicy {
            default: retention,
            queues: Default::default(),
        }
    }

    /// The retention of `queue`.
    pub fn of(&self, queue: &str) -> Retention {
        self.queues.get(queue).copied().unwrap_or(self.default)
    }
}
