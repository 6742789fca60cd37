//! Schedules: enqueueing one tick (for the scheduler and `kiln schedules trigger`) and the
//! schedules as users see them (`kiln schedules`).
//!
//! A tick's job is built by the same rules as every other enqueue (`new_job`: handler,
//! queue, payload cap, priority, attempts) and then stored with its tick through
//! `JobStore::enqueue_tick`, which enqueues each cron tick once across every host.

use serde::Serialize;

use super::{EnqueueRequest, Enqueued, Ops, OpsError};
use crate::config::ScheduleConfig;
use crate::store::{JobState, JobStore, OutcomeClass, Tick, Timestamp};

/// How many fire times `kiln schedules` shows.
pub const UPCOMING: usize = 3;

/// One schedule, as `kiln schedules` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub name: String,
    pub handler: String,
    pub queue: String,
    pub cron: String,
    pub timezone: String,
    pub misfire: &'static str,
    /// The next fire times, after now.
    pub next: Vec<FireTime>,
    /// The latest tick enqueued (cron or manual), if any.
    pub last_tick: Option<LastTick>,
}

/// One fire time in the schedule's zone and in UTC.
#[derive(Debug, Clone, Serialize)]
pub struct FireTime {
    /// RFC 3339 with the zone's offset at that instant.
    pub local: String,
    pub utc: Timestamp,
}

/// A schedule's latest tick and how its job is doing.
#[derive(Debug, Clone, Serialize)]
pub struct LastTick {
    pub at: Timestamp,
    pub job: String,
    /// The job's state; `None` once the job was pruned.
    pub state: Option<JobState>,
    /// How its last attempt ended, once it ran.
    pub outcome: Option<OutcomeClass>,
    /// Its last error, if any.
    pub error: Option<String>,
}

impl<S: JobStore> Ops<S> {
    /// The configured schedule `name`.
    pub fn schedule(&self, name: &str) -> Result<ScheduleConfig, OpsError> {
        let config = self.config();
        let schedules = &config.schedules;
        schedules
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| OpsError::UnknownSchedule {
                name: name.to_owned(),
                known: schedules.iter().map(|s| s.name.clone()).collect(),
            })
    }

    /// Enqueues the job of `schedule`'s tick at `at`: `None` when a host already enqueued
    /// that tick (or a later one). A `manual` tick is always enqueued.
    pub async fn enqueue_tick(
        &self,
        schedule: &ScheduleConfig,
        at: Timestamp,
        manual: bool,
    ) -> Result<Option<Enqueued>, OpsError> {
        let request = EnqueueRequest {
            queue: Some(schedule.queue.clone()),
            ..EnqueueRequest::new(&schedule.handler, schedule.payload.clone())
        };
        let mut job = self.new_job(request)?;
        job.tick = Some(Tick {
            schedule: schedule.name.clone(),
            at,
            manual,
        });
        Ok(self.store.enqueue_tick(job, self.now()).await?)
    }

    /// `kiln schedules trigger NAME`: a tick of `name` now, whatever its cron says.
    pub async fn trigger(&self, name: &str) -> Result<Enqueued, OpsError> {
        let schedule = self.schedule(name)?;
        self.enqueue_tick(&schedule, self.now(), true)
            .await?
            .ok_or_else(|| OpsError::Conflict("the job store enqueued no job".into()))
    }

    /// Every configured schedule with its next fire times and its latest tick.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>, OpsError> {
        let config = self.config();
        let schedules = &config.schedules;
        let keys: Vec<(String, String)> = (schedules.iter())
            .map(|s| (s.name.clone(), s.queue.clone()))
            .collect();
        let records = self.store.schedule_records(&keys).await?;
        let now = self.now();
        let mut views = Vec::with_capacity(schedules.len());
        for (schedule, record) in schedules.iter().zip(records) {
            let last_tick = match record {
                Some(record) => Some(self.last_tick(record.last_tick, record.last_job).await?),
                None => None,
            };
            views.push(ScheduleView {
                name: schedule.name.clone(),
                handler: schedule.handler.clone(),
                queue: schedule.queue.clone(),
                cron: schedule.cron.to_string(),
                timezone: schedule.zone_name.clone(),
                misfire: schedule.misfire.as_str(),
                next: (schedule.upcoming(now, UPCOMING).into_iter())
                    .map(|utc| FireTime {
                        local: schedule.local_time(utc),
                        utc,
                    })
                    .collect(),
                last_tick,
            });
        }
        Ok(views)
    }

    async fn last_tick(&self, at: Timestamp, id: String) -> Result<LastTick, OpsError> {
        let job = self.store.get(&id).await?;
        Ok(LastTick {
            at,
            state: job.as_ref().map(|j| j.state),
            outcome: job
                .as_ref()
                .and_then(|j| j.history.last())
                .map(|a| a.outcome),
            error: job.and_then(|j| j.error),
            job: id,
        })
    }
}
