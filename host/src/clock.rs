//! Where the host reads the time. Everything that compares or records a time takes it from
//! a [`Clock`], so tests drive retries, backoff, leases and schedules by hand.

use crate::store::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
