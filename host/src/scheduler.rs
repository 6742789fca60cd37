//! The scheduler: turns each `[[schedules]]` entry's cron ticks into jobs, through
//! [`Ops::enqueue_tick`], on every host that runs it.
//!
//! Rules it keeps:
//! - A tick is enqueued once however many hosts run the scheduler: the store checks each
//!   schedule's cursor and writes the tick's job in one atomic step (`JobStore::enqueue_tick`),
//!   so a second host's enqueue of the same tick (or of an earlier one) is a no-op.
//! - A tick enqueued more than [`MISFIRE_GRACE`] after its time is missed (every host was
//!   down, or the store was unreachable). Missed ticks are dropped under `misfire = "skip"`;
//!   under `"run-once"` the latest of them is enqueued once, as a catch-up. Where missed
//!   ticks start is the schedule's cursor in the store, so a restarted host (or another
//!   host) knows what was missed.
//! - It never blocks jobs (it is its own task and only awaits the store), it ends when its
//!   shutdown future resolves, and a store outage is logged and retried every
//!   [`RETRY`], never fatal.
//! - It follows the live config: each pass reads the schedules in force, a reload wakes
//!   the sleep between passes, a removed schedule is no longer enqueued, and a schedule
//!   added by a reload starts with its first tick after that pass (or after its cursor, if
//!   the store has one from an earlier run).
//! - Time comes from a [`Clock`]; [`Scheduler::pass`] does one round at a given instant, so
//!   tests drive schedules without waiting.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Misfire, ScheduleConfig};
use crate::ops::{Ops, OpsError};
use crate::store::{JobStore, Timestamp};

/// How late a tick may be enqueued and still count as on time. Longer than a store hiccup
/// or a busy host's delay; shorter than any outage worth calling one.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// How soon a round that failed (the store was unreachable) is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

/// The longest the scheduler sleeps between rounds, so a wall clock that jumped (a
/// suspended machine, a corrected clock) is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The first span searched, back from now, for a schedule's latest missed tick; each miss
/// doubles it. A per-second schedule after a long outage then looks at an hour of ticks,
/// not at every tick since the outage began.
const FIRST_WINDOW: Duration = Duration::from_secs(3600);

/// The scheduler of one host.
pub struct Scheduler<S> {
    ops: Ops<S>,
    clock: Arc<dyn Clock>,
    /// Per schedule, the instant up to which this host has handled every tick, so a round
    /// looks only at newer ones. Starts at the host's start (or the reload that added the
    /// schedule): a schedule the store has no record of begins with its first tick after that.
    handled: HashMap<String, Timestamp>,
    started: Timestamp,
    /// Whether a round has completed: a schedule first seen after that was added by a
    /// reload, and does not count ticks since the host's start.
    passed: bool,
}

impl<S: JobStore> Scheduler<S> {
    /// A scheduler for the schedules in `ops`'s config, reading the time from `clock`.
    pub fn new(ops: Ops<S>, clock: Arc<dyn Clock>) -> Self {
        let started = clock.now();
        Scheduler {
            ops,
            clock,
            handled: HashMap::new(),
            started,
            passed: false,
        }
    }

    /// Runs rounds until `shutdown` resolves; with no schedules configured, it waits for a
    /// reload that adds some.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut reloads = self.ops.live_config().subscribe();
        loop {
            if self.ops.config().schedules.is_empty() {
                // Nothing to enqueue is a whole round: a schedule a reload adds next starts
                // after the reload, not at the host's start.
                self.passed = true;
                tokio::select! {
                    () = &mut shutdown => return,
                    changed = reloads.changed() => if changed.is_err() { return },
                }
                continue;
            }
            let now = self.clock.now();
            // A round stuck on an unreachable store does not hold up the shutdown; what it
            // stored so far is whole (each tick is one atomic store call).
            let round = tokio::select! {
                () = &mut shutdown => return,
                round = self.pass(now) => round,
            };
            let next = match round {
                Ok(next) => next.unwrap_or(now + MAX_SLEEP),
                Err(error) => {
                    tracing::warn!("scheduler round failed, retrying in {RETRY:?}: {error:#}");
                    now + RETRY
                }
            };
            let sleep = next.since(self.clock.now()).min(MAX_SLEEP);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(sleep) => {}
                Ok(()) = reloads.changed() => {}
            }
        }
    }

    /// One round at `now`: every schedule's due ticks are enqueued (those already enqueued
    /// by any host are left), missed ones per its misfire policy. Returns the earliest next
    /// fire time. An unreachable store ends the round with an error (the ticks are tried
    /// again next round); any other refusal is logged and that tick dropped.
    pub async fn pass(&mut self, now: Timestamp) -> Result<Option<Timestamp>, OpsError> {
        let schedules = self.ops.config().schedules.clone();
        let keys: Vec<(String, String)> = (schedules.iter())
            .map(|s| (s.name.clone(), s.queue.clone()))
            .collect();
        let records = self.ops.store().schedule_records(&keys).await?;
        // A removed schedule is forgotten, so adding it back later starts afresh.
        self.handled
            .retain(|name, _| schedules.iter().any(|s| &s.name == name));
        let mut earliest: Option<Timestamp> = None;
        for (schedule, record) in schedules.iter().zip(records) {
            let cursor = record.and_then(|r| r.cursor);
            let from = match self.handled.get(&schedule.name) {
                Some(handled) => cursor.map_or(*handled, |c| c.max(*handled)),
                // The first round that sees this schedule: the store knows where it got
                // to, so ticks missed while no host ran count from there. Otherwise it
                // starts at the host's start, or now for one a reload added.
                None => cursor.unwrap_or(if self.passed { now } else { self.started }),
            };
            self.enqueue_due(schedule, from, now).await?;
            self.handled.insert(schedule.name.clone(), now);
            if let Some(next) = schedule.next_after(now) {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
        self.passed = true;
        Ok(earliest)
    }

    /// Enqueues `schedule`'s ticks in `(from, now]`: the on-time ones, and a catch-up for
    /// the missed ones under `run-once`.
    async fn enqueue_due(
        &self,
        schedule: &ScheduleConfig,
        from: Timestamp,
        now: Timestamp,
    ) -> Result<(), OpsError> {
        let on_time_from = Timestamp(now.0.saturating_sub(millis(MISFIRE_GRACE))).max(from);
        let mut ticks = Vec::new();
        if let Some(missed) = latest_in(schedule, from, on_time_from) {
            match schedule.misfire {
                Misfire::Skip => tracing::warn!(
                    schedule = schedule.name,
                    latest = %missed,
                    "schedule missed ticks while no host enqueued them; skipped (misfire = skip)"
                ),
                Misfire::RunOnce => ticks.push(missed),
            }
        }
        let mut at = on_time_from;
        while let Some(next) = schedule.next_after(at).filter(|next| *next <= now) {
            ticks.push(next);
            at = next;
        }
        for tick in ticks {
            self.enqueue(schedule, tick).await?;
        }
        Ok(())
    }

    async fn enqueue(&self, schedule: &ScheduleConfig, tick: Timestamp) -> Result<(), OpsError> {
        let name = schedule.name.as_str();
        match self.ops.enqueue_tick(schedule, tick, false).await {
            Ok(Some(job)) => {
                tracing::info!(schedule = name, tick = %tick, job = job.id, "schedule tick enqueued");
                Ok(())
            }
            Ok(None) => {
                tracing::debug!(schedule = name, tick = %tick, "schedule tick already enqueued");
                Ok(())
            }
            Err(error @ OpsError::Unavailable(_)) => {
                tracing::warn!(schedule = name, tick = %tick, "schedule tick not enqueued yet");
                Err(error)
            }
            Err(error) => {
                tracing::error!(schedule = name, tick = %tick, "schedule tick dropped: {error}");
                Ok(())
            }
        }
    }
}

/// The latest fire time of `schedule` in `(after, until]`, searching back from `until` in
/// windows that double, so a long outage costs a few searches rather than one per tick.
fn latest_in(schedule: &ScheduleConfig, after: Timestamp, until: Timestamp) -> Option<Timestamp> {
    if until <= after {
        return None;
    }
    let mut window = millis(FIRST_WINDOW);
    loop {
        let start = Timestamp(until.0.saturating_sub(window)).max(after);
        let mut latest = None;
        let mut at = start;
        while let Some(next) = schedule.next_after(at).filter(|next| *next <= until) {
            latest = Some(next);
            at = next;
        }
        if latest.is_some() || start == after {
            return latest;
        }
        window = window.saturating_mul(2);
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
