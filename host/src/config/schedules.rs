//! `[[schedules]]`: recurring jobs, validated into [`ScheduleConfig`]s.
//!
//! Each entry is checked at load: its name is present and unique, its cron expression
//! parses, its time zone is an IANA name in the bundled database, its handler is one this
//! config or the handlers directory knows (the rule `ops` applies to every enqueue), and
//! its queue is configured. Every error names the entry (`schedules.NAME.KEY`, or
//! `schedules[N]` before a name is known) and the line of the offending value.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use jiff::tz::TimeZone;
use toml::Spanned;

use super::error::ConfigError;
use super::raw::RawSchedule;
use super::validate::Checker;
use super::{HandlerConfig, HostConfig, QueueConfig};
use crate::cron::Cron;
use crate::registry::check_name;
use crate::store::Timestamp;

/// What a schedule does with ticks that no host enqueued in time (every host was down, or
/// the store was unreachable): see the README's "Schedules".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfire {
    /// Missed ticks are dropped; the schedule goes on with the next one.
    Skip,
    /// One catch-up job, for the latest missed tick, is enqueued when a host is back.
    RunOnce,
}

impl Misfire {
    /// The name written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::Skip => "skip",
            Misfire::RunOnce => "run-once",
        }
    }
}

/// One validated `[[schedules]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// Unique among the schedules; part of every tick's identity in the store.
    pub name: String,
    /// The handler each tick's job runs.
    pub handler: String,
    /// When it fires.
    pub cron: Cron,
    /// The zone `cron` is read in; fire times follow its daylight-saving rules.
    pub timezone: TimeZone,
    /// The zone's IANA name, as written (`UTC` by default).
    pub zone_name: String,
    /// Each job's payload: the TOML value as JSON, or empty when none is given.
    pub payload: Vec<u8>,
    /// The queue ticks go to: the entry's `queue`, else the handler's.
    pub queue: String,
    /// What happens to ticks missed while no host ran.
    pub misfire: Misfire,
}

impl ScheduleConfig {
    /// The first fire time strictly after `after`, if the expression fires again.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let after = jiff::Timestamp::from_millisecond(after.0).ok()?;
        let at = self.cron.next_after(&self.timezone, after)?;
        Some(Timestamp(at.as_millisecond()))
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, after: Timestamp, n: usize) -> Vec<Timestamp> {
        std::iter::successors(self.next_after(after), |at| self.next_after(*at))
            .take(n)
            .collect()
    }

    /// `at` as a time in the schedule's zone, RFC 3339 with its offset
    /// (`2026-03-29T03:00:00+02:00`).
    pub fn local_time(&self, at: Timestamp) -> String {
        match jiff::Timestamp::from_millisecond(at.0) {
            Ok(t) => t
                .to_zoned(self.timezone.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            Err(_) => at.to_string(),
        }
    }
}

impl Checker<'_> {
    /// Every `[[schedules]]` entry, in file order.
    pub(super) fn schedules(
        &self,
        raw: &[Spanned<RawSchedule>],
        host: &HostConfig,
        queues: &BTreeMap<String, QueueConfig>,
        handlers: &BTreeMap<String, HandlerConfig>,
    ) -> Result<Vec<ScheduleConfig>, ConfigError> {
        let mut names = BTreeSet::new();
        let mut schedules = Vec::with_capacity(raw.len());
        for (index, entry) in raw.iter().enumerate() {
            let schedule = self.schedule(index, entry, host, queues, handlers)?;
            let span = entry
                .get_ref()
                .name
                .as_ref()
                .map_or(entry.span(), Spanned::span);
            if !names.insert(schedule.name.clone()) {
                return Err(self.origins.invalid(
                    format!("schedules.{}.name", schedule.name),
                    &span,
                    format!("a schedule named `{}` is already defined", schedule.name),
                ));
            }
            schedules.push(schedule);
        }
        Ok(schedules)
    }

    fn schedule(
        &self,
        index: usize,
        entry: &Spanned<RawSchedule>,
        host: &HostConfig,
        queues: &BTreeMap<String, QueueConfig>,
        handlers: &BTreeMap<String, HandlerConfig>,
    ) -> Result<ScheduleConfig, ConfigError> {
        let raw = entry.get_ref();
        let name = self.required(&format!("schedules[{index}]"), "name", &raw.name, entry)?;
        if name.get_ref().is_empty() {
            let key = format!("schedules[{index}].name");
            return Err(self.origins.invalid(key, &name.span(), "must not be empty"));
        }
        let prefix = format!("schedules.{}", name.get_ref());
        let key = |k: &str| format!("{prefix}.{k}");
        let handler = self.required(&prefix, "handler", &raw.handler, entry)?;
        self.schedule_handler(&key("handler"), handler, host, handlers)?;
        let cron_text = self.required(&prefix, "cron", &raw.cron, entry)?;
        let cron = Cron::parse(cron_text.get_ref()).map_err(|e| {
            self.origins
                .invalid(key("cron"), &cron_text.span(), e.to_string())
        })?;
        let zone_name = raw
            .timezone
            .as_ref()
            .map_or("UTC", |z| z.get_ref().as_str());
        let timezone = TimeZone::get(zone_name).map_err(|_| {
            let span = raw.timezone.as_ref().map_or(entry.span(), Spanned::span);
            self.origins.invalid(
                key("timezone"),
                &span,
                format!("`{zone_name}` is not an IANA time zone (such as \"Europe/Madrid\")"),
            )
        })?;
        let queue = match &raw.queue {
            Some(q) if !queues.contains_key(q.get_ref()) => {
                return Err(self.undefined_queue(key("queue"), q, queues));
            }
            Some(q) => q.get_ref().clone(),
            None => handlers
                .get(handler.get_ref())
                .map_or(super::DEFAULT_QUEUE, |h| h.queue.as_str())
                .to_owned(),
        };
        Ok(ScheduleConfig {
            name: name.get_ref().clone(),
            handler: handler.get_ref().clone(),
            cron,
            timezone,
            zone_name: zone_name.to_owned(),
            payload: self.payload(&key("payload"), &raw.payload)?,
            queue,
            misfire: self.misfire(&key("misfire"), &raw.misfire)?,
        })
    }

    /// A key the entry must have.
    fn required<'v>(
        &self,
        prefix: &str,
        name: &str,
        value: &'v Option<Spanned<String>>,
        entry: &Spanned<RawSchedule>,
    ) -> Result<&'v Spanned<String>, ConfigError> {
        value.as_ref().ok_or_else(|| {
            let span: Range<usize> = entry.span();
            self.origins.invalid(
                format!("{prefix}.{name}"),
                &span,
                "is required in a [[schedules]] entry",
            )
        })
    }

    /// The handler must be one a job could ever run on (`ops`'s rule for every enqueue).
    fn schedule_handler(
        &self,
        key: &str,
        handler: &Spanned<String>,
        host: &HostConfig,
        handlers: &BTreeMap<String, HandlerConfig>,
    ) -> Result<(), ConfigError> {
        let name = handler.get_ref();
        if let Err(reason) = check_name(name) {
            return Err(self.origins.invalid(key, &handler.span(), reason));
        }
        let file = host.handlers_dir.join(format!("{name}.wasm"));
        if handlers.contains_key(name) || file.exists() {
            return Ok(());
        }
        Err(self.origins.invalid(
            key,
            &handler.span(),
            format!(
                "unknown handler `{name}`: no `{name}.wasm` in `{}` and no `[handlers.{name}]`",
                host.handlers_dir.display()
            ),
        ))
    }

    fn payload(
        &self,
        key: &str,
        value: &Option<Spanned<toml::Value>>,
    ) -> Result<Vec<u8>, ConfigError> {
        let Some(value) = value else {
            return Ok(Vec::new());
        };
        serde_json::to_vec(value.get_ref()).map_err(|e| {
            self.origins
                .invalid(key, &value.span(), format!("not JSON: {e}"))
        })
    }

    fn misfire(&self, key: &str, value: &Option<Spanned<String>>) -> Result<Misfire, ConfigError> {
        match value {
            None => Ok(Misfire::Skip),
            Some(v) => match v.get_ref().as_str() {
                "skip" => Ok(Misfire::Skip),
                "run-once" => Ok(Misfire::RunOnce),
                other => Err(self.origins.invalid(
                    key,
                    &v.span(),
                    format!("`{other}` is not a misfire policy; use \"skip\" or \"run-once\""),
                )),
            },
        }
    }
}
