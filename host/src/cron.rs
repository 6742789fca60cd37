//! Cron expressions ([`Cron`]) and when they fire in a time zone.
//!
//! An expression has 5 fields as in crontab (`minute hour day-of-month month day-of-week`)
//! or 6 with seconds first. Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n`
//! or `a/n`, or a comma list of those; months and weekdays also take three-letter English
//! names (`jan`, `mon`), and weekday 7 is Sunday like 0. As in Vixie cron, when both the
//! day-of-month and the day-of-week fields are restricted (neither starts with `*`), a day
//! matching either runs; otherwise a day must match both. `@yearly`, `@monthly`, `@weekly`,
//! `@daily` and `@hourly` stand for their usual expressions.
//!
//! Daylight saving (the rule the README states): an expression whose hour field starts with
//! `*` (`*`, `*/2`) follows elapsed time: a time of day that a spring-forward change skips
//! does not fire, and an hour a fall-back change repeats fires in both of its occurrences,
//! so hourly and every-15-minutes schedules neither skip nor double. An expression that
//! names its hours follows the wall clock: a time inside a spring-forward gap fires once at
//! the first valid instant after the gap (02:30 daily fires at 03:00), and a time a
//! fall-back change repeats fires once, at its first occurrence.
//!
//! Everything here is pure calendar arithmetic on jiff's bundled time zone database, so the
//! fire times do not depend on the machine's zone files.

use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// How far (in days) the search for a matching date looks before it says the expression
/// never fires. 30 years: a leap day restricted to a weekday recurs within 28.
const SEARCH_DAYS: usize = 366 * 30;

/// The widest span of civil time that a zone change repeats or skips, with margin (real
/// changes are at most two hours). Fire times within it of a change are checked against
/// every nearby civil match, because civil order and instant order differ there.
const FOLD_WINDOW: SignedDuration = SignedDuration::from_hours(3);

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// The expression as written, for display.
    text: String,
    /// Bit `n` set when second `n` (0-59) matches.
    seconds: u64,
    /// Bit `n` set when minute `n` (0-59) matches.
    minutes: u64,
    /// Bit `n` set when hour `n` (0-23) matches.
    hours: u64,
    /// Bit `n` set when day `n` (1-31) of the month matches.
    days: u64,
    /// Bit `n` set when month `n` (1-12) matches.
    months: u64,
    /// Bit `n` set when weekday `n` (0 = Sunday .. 6) matches.
    weekdays: u64,
    /// The day-of-month field starts with `*` (see the module doc for how days combine).
    any_day: bool,
    /// The day-of-week field starts with `*`.
    any_weekday: bool,
    /// The hour field starts with `*`: fire times follow elapsed time across zone changes
    /// rather than the wall clock (the module doc's daylight-saving rule).
    elapsed: bool,
}

/// Why a cron expression was refused; the message names the field and the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// One field's name and range.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
};
const WEEKDAY: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &WEEKDAYS,
};

impl Cron {
    /// Parses `text`; see the module doc for the syntax.
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(CronError(format!(
                    "`{other}` is not a cron macro (@yearly, @monthly, @weekly, @daily, @hourly)"
                )));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(CronError(format!(
                    "`{text}` has {n} fields; expected 5 (minute hour day-of-month month \
                     day-of-week) or 6 with seconds first"
                )));
            }
        };
        let mut weekdays = field(&WEEKDAY, rest[4])?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let cron = Cron {
            text: text.trim().to_owned(),
            seconds: field(&SECOND, second)?,
            minutes: field(&MINUTE, rest[0])?,
            hours: field(&HOUR, rest[1])?,
            days: field(&DAY, rest[2])?,
            months: field(&MONTH, rest[3])?,
            weekdays,
            any_day: rest[2].starts_with('*'),
            any_weekday: rest[4].starts_with('*'),
            elapsed: rest[1].starts_with('*'),
        };
        let start = jiff::civil::date(2000, 1, 1).at(0, 0, 0, 0);
        if cron.next_civil(start).is_none() {
            return Err(CronError(format!("`{text}` never matches a date")));
        }
        Ok(cron)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first fire time strictly after `after` in zone `tz`, or `None` if there is none
    /// within the search horizon.
    pub fn next_after(&self, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let mut civil = tz
            .to_datetime(after)
            .with()
            .subsec_nanosecond(0)
            .build()
            .ok()?;
        if change_near(tz, after) {
            civil = civil.checked_sub(FOLD_WINDOW).ok()?;
        }
        let mut best: Option<(Timestamp, DateTime)> = None;
        // Ends: each match is later than the last, and `next_civil` gives up past its horizon.
        loop {
            let Some(found) = self.next_civil(civil) else {
                return best.map(|(at, _)| at);
            };
            if let Some((at, matched)) = best {
                let window = if change_near(tz, at) {
                    FOLD_WINDOW
                } else {
                    SignedDuration::ZERO
                };
                if found > matched.checked_add(window).ok()? {
                    return Some(at);
                }
            }
            for at in self.instants(tz, found) {
                if at > after && best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, found));
                }
            }
            civil = found.checked_add(SignedDuration::from_secs(1)).ok()?;
        }
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, tz: &TimeZone, after: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut times = Vec::with_capacity(n);
        let mut from = after;
        while times.len() < n {
            let Some(at) = self.next_after(tz, from) else {
                break;
            };
            times.push(at);
            from = at;
        }
        times
    }

    /// The instants civil time `at` fires at in `tz`: one, none (skipped by a
    /// spring-forward gap, for an elapsed-time expression) or two (repeated by a fall-back
    /// change, for an elapsed-time expression). See the module doc.
    fn instants(&self, tz: &TimeZone, at: DateTime) -> Vec<Timestamp> {
        match tz.to_ambiguous_timestamp(at).offset() {
            AmbiguousOffset::Unambiguous { offset } => {
                offset.to_timestamp(at).ok().into_iter().collect()
            }
            AmbiguousOffset::Gap { after, .. } if !self.elapsed => {
                // The first valid instant after the gap is the change itself.
                let inside = after.to_timestamp(at).ok();
                inside
                    .and_then(|t| tz.following(t).next())
                    .map(|change| change.timestamp())
                    .into_iter()
                    .collect()
            }
            AmbiguousOffset::Gap { .. } => Vec::new(),
            AmbiguousOffset::Fold { before, after } => {
                let mut times: Vec<Timestamp> = before.to_timestamp(at).ok().into_iter().collect();
                if self.elapsed {
                    times.extend(after.to_timestamp(at).ok());
                }
                times
            }
        }
    }

    /// The first civil time at or after `from` (whole seconds) that the fields match.
    fn next_civil(&self, from: DateTime) -> Option<DateTime> {
        let mut date = from.date();
        let mut floor = Some(from.time());
        for _ in 0..SEARCH_DAYS {
            if self.matches_date(date) {
                let time = self.first_time(floor.unwrap_or(Time::midnight()));
                if let Some(time) = time {
                    return Some(date.to_datetime(time));
                }
            }
            date = date.tomorrow().ok()?;
            floor = None;
        }
        None
    }

    fn matches_date(&self, date: Date) -> bool {
        let month = has(self.months, date.month() as u32);
        let day = has(self.days, date.day() as u32);
        let weekday = has(self.weekdays, date.weekday().to_sunday_zero_offset() as u32);
        let day_ok = if self.any_day || self.any_weekday {
            day && weekday
        } else {
            day || weekday
        };
        month && day_ok
    }

    /// The first time of day at or after `floor` that the time fields match.
    fn first_time(&self, floor: Time) -> Option<Time> {
        let (h0, m0, s0) = (
            floor.hour() as u32,
            floor.minute() as u32,
            floor.second() as u32,
        );
        let mut hour = next_bit(self.hours, h0)?;
        loop {
            let m_from = if hour == h0 { m0 } else { 0 };
            let mut minute = next_bit(self.minutes, m_from);
            while let Some(m) = minute {
                let s_from = if hour == h0 && m == m0 { s0 } else { 0 };
                if let Some(s) = next_bit(self.seconds, s_from) {
                    return Time::new(hour as i8, m as i8, s as i8, 0).ok();
                }
                minute = next_bit(self.minutes, m + 1);
            }
            hour = next_bit(self.hours, hour + 1)?;
        }
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether a zone change lies within four hours of `at`.
fn change_near(tz: &TimeZone, at: Timestamp) -> bool {
    let span = SignedDuration::from_hours(4);
    let (Ok(start), Ok(end)) = (at.checked_sub(span), at.checked_add(span)) else {
        return false;
    };
    tz.following(start)
        .next()
        .is_some_and(|change| change.timestamp() <= end)
}

fn has(mask: u64, bit: u32) -> bool {
    bit < 64 && mask & (1 << bit) != 0
}

/// The lowest set bit of `mask` at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = mask >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// Parses one field into its bit set.
fn field(spec: &Field, text: &str) -> Result<u64, CronError> {
    let mut mask = 0u64;
    for item in text.split(',') {
        mask |= item_bits(spec, item)
            .map_err(|reason| CronError(format!("{} field `{text}`: {reason}", spec.name)))?;
    }
    Ok(mask)
}

/// One comma-separated item: `*`, `v`, `a-b`, each optionally `/step`.
fn item_bits(spec: &Field, item: &str) -> Result<u64, String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => {
            let step: u32 = step
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("step `{step}` is not a whole number above 0"))?;
            (range, Some(step))
        }
        None => (item, None),
    };
    let (low, high) = if range == "*" {
        (spec.min, spec.max)
    } else if let Some((a, b)) = range.split_once('-') {
        let (low, high) = (value(spec, a)?, value(spec, b)?);
        if low > high {
            return Err(format!("range `{range}` runs backwards"));
        }
        (low, high)
    } else {
        let low = value(spec, range)?;
        // `a/n` runs from a to the end of the field, as in most crons.
        (low, if step.is_some() { spec.max } else { low })
    };
    let step = step.unwrap_or(1);
    Ok((low..=high)
        .step_by(step as usize)
        .fold(0, |m, v| m | 1 << v))
}

/// One value: a number within the field's range, or one of its names.
fn value(spec: &Field, text: &str) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = spec.names.iter().position(|n| *n == lower) {
        let first = if spec.min == 0 { 0 } else { 1 };
        return Ok(index as u32 + first);
    }
    match text.parse::<u32>() {
        Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is outside {}-{}", spec.min, spec.max)),
        Err(_) if text.is_empty() => Err("a value is missing".to_owned()),
        Err(_) => Err(format!("`{text}` is not a number or a name")),
    }
}

#[cfg(test)]
#[path = "cron_tests.rs"]
mod tests;
