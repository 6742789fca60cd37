//! How long this host has been in steady contact with its job store, which decides whether
//! its reaper may take back expired leases.
//!
//! The rule: a lease is taken back only by a host that has itself reached the store,
//! without a failed or stalled call, for at least one whole lease period. When the store
//! itself stalls or goes away (a `redis-server` stopped, a network cut between every host
//! and Redis), no host could renew, so every lease looks expired the moment the store comes
//! back; the hosts that are alive renew within a renew period of that moment, well inside
//! the lease period every reaper waits first, so they keep their jobs. A host that really
//! died renews nothing and loses its jobs one lease period later. A host cut off alone, while
//! the others still reach the store, loses its jobs when its leases expire, as before: the
//! others' contact was never broken.
//!
//! A call counts as a break when it fails, or when it took longer than a renew period (a
//! third of the lease: the store answered, but renewals queued behind it may have come too
//! late). And while any call has been waiting longer than a renew period, the store is
//! stalling now: a reaper that sent its list of expired leases then would have it answered
//! only when the store resumes, judged by a time from inside the stall. Fed by the claim
//! loops, the renewer and the reaper, so a host notices a stall within a second (an idle
//! claim loop) or a renew period (a busy host's renewer). The bound holds for leases longer
//! than 3 s (the default is 30 s): a stall that expires a live host's lease has lasted two
//! renew periods, more than one renew period plus an idle claim loop's second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::lock;
use crate::store::Timestamp;

/// Since when this host has reached its store without a break.
pub(super) struct Contact {
    state: Mutex<State>,
    /// A call slower than this is a break (a renew period, a third of the lease).
    slow: Duration,
    /// Contact must be unbroken this long before expired leases are taken back (the lease).
    lease: Duration,
}

#[derive(Default)]
struct State {
    /// Start of the current run of unbroken contact; `None` while the store is unreachable.
    since: Option<Timestamp>,
    /// Calls waiting for the store, by ticket, with when each started.
    in_flight: HashMap<u64, Timestamp>,
    next_ticket: u64,
}

/// One call in flight; dropping it without [`Contact::end`] (a cancelled call) forgets it.
pub(super) struct Call<'a> {
    contact: &'a Contact,
    ticket: u64,
    started: Timestamp,
}

impl Contact {
    /// Contact that starts `now` (the store was just opened), for leases of `lease`.
    pub(super) fn new(now: Timestamp, lease: Duration) -> Self {
        Contact {
            state: Mutex::new(State {
                since: Some(now),
                ..State::default()
            }),
            slow: lease / 3,
            lease,
        }
    }

    /// A store call starting `now`; end it with [`end`](Self::end).
    pub(super) fn begin(&self, now: Timestamp) -> Call<'_> {
        let mut state = lock(&self.state);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.in_flight.insert(ticket, now);
        Call {
            contact: self,
            ticket,
            started: now,
        }
    }

    /// Records that `call` answered at `ended`, successfully or not.
    pub(super) fn end(&self, call: Call<'_>, ended: Timestamp, succeeded: bool) {
        let mut state = lock(&self.state);
        if !succeeded {
            state.since = None;
        } else if ended.since(call.started) > self.slow {
            state.since = Some(ended);
        } else {
            state.since.get_or_insert(ended);
        }
    }

    /// Whether expired leases may be taken back at `now`: contact has been unbroken for a
    /// lease, and no call has been waiting longer than a renew period.
    pub(super) fn steady(&self, now: Timestamp) -> bool {
        let state = lock(&self.state);
        let unbroken = state
            .since
            .is_some_and(|since| now.since(since) >= self.lease);
        let stalling = state
            .in_flight
            .values()
            .any(|&started| now.since(started) > self.slow);
        unbroken && !stalling
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        lock(&self.contact.state).in_flight.remove(&self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    fn at(secs: i64) -> Timestamp {
        Timestamp(secs * 1_000)
    }

    #[test]
    fn a_failed_or_slow_call_restarts_the_count() {
        let contact = Contact::new(at(0), LEASE);
        assert!(!contact.steady(at(29)), "a lease of contact first");
        let call = contact.begin(at(40));
        contact.end(call, at(40), true);
        assert!(contact.steady(at(40)));
        let call = contact.begin(at(41));
        contact.end(call, at(51), false);
        assert!(!contact.steady(at(100)), "unreachable");
        let call = contact.begin(at(100));
        contact.end(call, at(100), true);
        assert!(!contact.steady(at(129)));
        assert!(contact.steady(at(130)));
        // Answered, but after a 32 s stall: contact counts from the answer.
        let call = contact.begin(at(130));
        contact.end(call, at(162), true);
        assert!(!contact.steady(at(191)));
        assert!(contact.steady(at(192)));
    }

    #[test]
    fn a_call_waiting_longer_than_a_renew_period_is_a_stall() {
        let contact = Contact::new(at(0), LEASE);
        let call = contact.begin(at(100));
        assert!(contact.steady(at(110)), "10 s is a renew period");
        assert!(!contact.steady(at(111)), "stalling now");
        drop(call);
        assert!(contact.steady(at(111)), "a cancelled call is forgotten");
    }
}
