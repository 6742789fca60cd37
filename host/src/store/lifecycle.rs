//! The lifecycle rules every job store applies, decided here once in Rust.
//!
//! A store asks two questions of a job it holds (an active job under some lease): what a
//! settlement does to it ([`Held::settle`]), and what becomes of it when its lease expired
//! ([`Held::lost`]). The answer is a [`Transition`], which each store then writes atomically
//! in its own way (a SQLite transaction; a Redis script that only checks and writes). The
//! rules:
//! - a retry with no attempts left fails the job for good;
//! - a retry or a release of a job whose cancel was requested meanwhile cancels it;
//! - a release takes the attempt back (it never ran, or shutdown cut it short);
//! - a job parked for its handler is released the same way, and marked so that a load of
//!   its handler wakes it before its time;
//! - a lost attempt (the lease expired) counts: the job goes back to waiting while attempts
//!   are left, and fails for good after its last one.

use super::{AttemptRecord, JobState, OutcomeClass, SettleAction, Timestamp};

/// What a held job looks like when a settlement or the reaper decides its fate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Attempts counted so far, including the one that is running.
    pub attempts: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// An admin cancelled the job while it ran.
    pub cancel_requested: bool,
}

/// Where one settled or recovered job goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// To a finished state (succeeded, failed or cancelled).
    Finish {
        state: JobState,
        result: Option<Vec<u8>>,
        error: Option<String>,
    },
    /// Back to scheduled (`at` in the future) or waiting; `uncount` takes the attempt back;
    /// `parked`: it waits for its handler to be loaded (`JobStore::unpark` wakes it).
    Requeue {
        at: Timestamp,
        error: Option<String>,
        uncount: bool,
        parked: bool,
    },
    /// Gone: it succeeded and its queue keeps no succeeded job.
    Delete,
}

impl Transition {
    /// The state a requeue at `at` lands in, seen at `now`.
    pub fn requeued_state(at: Timestamp, now: Timestamp) -> JobState {
        if at > now {
            JobState::Scheduled
        } else {
            JobState::Waiting
        }
    }

    fn cancelled() -> Transition {
        Transition::Finish {
            state: JobState::Cancelled,
            result: None,
            error: None,
        }
    }

    fn failed(error: String) -> Transition {
        Transition::Finish {
            state: JobState::Failed,
            result: None,
            error: Some(error),
        }
    }
}

/// Why the reaper failed a job whose last attempt was lost.
pub const LOST_LAST_ATTEMPT: &str = "lease expired after the last attempt";

impl Held {
    /// Whether another attempt may start after the running one.
    pub fn has_attempts_left(&self) -> bool {
        self.attempts < self.max_attempts
    }

    /// What `action` does to this job.
    pub fn settle(&self, action: SettleAction) -> Transition {
        match action {
            SettleAction::Succeed { result } => Transition::Finish {
                state: JobState::Succeeded,
                result: Some(result),
                error: None,
            },
            SettleAction::SucceedAndDelete => Transition::Delete,
            SettleAction::Fail { error } => Transition::failed(error),
            SettleAction::Cancel => Transition::cancelled(),
            SettleAction::Retry { .. }
            | SettleAction::Release { .. }
            | SettleAction::Park { .. }
                if self.cancel_requested =>
            {
                Transition::cancelled()
            }
            SettleAction::Retry { error, .. } if !self.has_attempts_left() => {
                Transition::failed(error)
            }
            SettleAction::Retry { at, error } => Transition::Requeue {
                at,
                error: Some(error),
                uncount: false,
                parked: false,
            },
            SettleAction::Release { at } => Transition::Requeue {
                at,
                error: None,
                uncount: true,
                parked: false,
            },
            SettleAction::Park { until } => Transition::Requeue {
                at: until,
                error: None,
                uncount: true,
                parked: true,
            },
        }
    }

    /// What becomes of this job now that the lease `owner` held until `expires_at` has
    /// expired, and the attempt record of the lost attempt (claimed at `claimed_at`).
    pub fn lost(
        &self,
        owner: &str,
        claimed_at: Timestamp,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> (Transition, AttemptRecord) {
        let message = format!("lease held by `{owner}` expired at {expires_at}");
        let record = AttemptRecord {
            attempt: self.attempts,
            digest: None,
            started_at: claimed_at,
            ended_at: now,
            outcome: OutcomeClass::Lost,
            message: Some(message.clone()),
            wall_ms: u64::try_from(now.since(claimed_at).as_millis()).unwrap_or(u64::MAX),
            fuel: None,
            http: None,
            tcp: None,
            log: String::new(),
            log_truncated: false,
        };
        let transition = if !self.has_attempts_left() && !self.cancel_requested {
            Transition::failed(LOST_LAST_ATTEMPT.to_owned())
        } else {
            self.settle(SettleAction::Retry {
                at: now,
                error: message,
            })
        };
        (transition, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000);

    fn held(attempts: u32, max_attempts: u32, cancel_requested: bool) -> Held {
        Held {
            attempts,
            max_attempts,
            cancel_requested,
        }
    }

    fn retry() -> SettleAction {
        SettleAction::Retry {
            at: Timestamp(2_000),
            error: "boom".into(),
        }
    }

    #[test]
    fn a_retry_requeues_while_attempts_are_left_then_fails() {
        assert!(matches!(
            held(1, 3, false).settle(retry()),
            Transition::Requeue { uncount: false, .. }
        ));
        assert_eq!(
            held(3, 3, false).settle(retry()),
            Transition::failed("boom".into())
        );
    }

    #[test]
    fn a_requested_cancel_wins_over_retry_and_release() {
        let release = SettleAction::Release { at: NOW };
        let park = SettleAction::Park { until: NOW };
        for action in [retry(), release, park] {
            assert_eq!(held(1, 3, true).settle(action), Transition::cancelled());
        }
    }

    #[test]
    fn a_lost_attempt_counts() {
        let (transition, record) = held(1, 2, false).lost("w", Timestamp(100), Timestamp(900), NOW);
        assert!(matches!(
            transition,
            Transition::Requeue {
                at: NOW,
                uncount: false,
                ..
            }
        ));
        assert_eq!(record.outcome, OutcomeClass::Lost);
        assert_eq!(record.wall_ms, 900);
        let (last, _) = held(2, 2, false).lost("w", Timestamp(100), Timestamp(900), NOW);
        assert_eq!(last, Transition::failed(LOST_LAST_ATTEMPT.into()));
        let (cancelled, _) = held(2, 2, true).lost("w", Timestamp(100), Timestamp(900), NOW);
        assert_eq!(cancelled, Transition::cancelled());
    }
}
