//! The job record codec: a job is one string key holding a MessagePack map (the README's
//! "Redis job format"). Decoding a record into a `Job` (with the claim laid over it when the
//! job is active), and patching a record into the one its job has after a settlement
//! (`Patch`), keeping every field the patch does not name as it was.
//!
//! A claim does not rewrite the record: a claimed job is active through its queue's `leases`
//! hash and `active` set, and readers lay the lease over the record (`Claim`).

use rmpv::ValueRef;

use crate::store::{
    AttemptRecord, Job, JobDefaults, JobState, Lease, Progress, StoreError, StoreResult, Tick,
    Timestamp,
};

/// The claim a `leases` entry and the `active` set describe, laid over a job's record.
pub(super) struct Claim {
    pub(super) owner: String,
    pub(super) claimed_at: Timestamp,
    pub(super) expires_at: Timestamp,
}

impl Claim {
    /// Makes the record's `job` the active job it is under this claim: a claim does not
    /// rewrite the record, so the attempt it runs is one more than the record says.
    pub(super) fn lay_over(self, job: &mut Job) {
        job.state = JobState::Active;
        job.attempts = job.attempts.saturating_add(1);
        job.updated_at = job.updated_at.max(self.claimed_at);
        job.lease = Some(Lease {
            owner: self.owner,
            expires_at: self.expires_at,
        });
    }

    /// From a `leases` value and the `active` score.
    pub(super) fn parse(value: &[u8], expires_at: f64) -> Option<Self> {
        let (claimed_at, owner) = lease_parts(value)?;
        Some(Claim {
            owner: owner.to_owned(),
            claimed_at,
            expires_at: Timestamp(expires_at as i64),
        })
    }
}

/// A `leases` value: when the claim was made, a colon, the lease owner (as `lease_value` in
/// lib.lua writes it).
pub(super) fn lease_value(claimed_at: Timestamp, owner: &str) -> String {
    format!("{}:{owner}", claimed_at.0)
}

/// The claim time and owner of a `leases` value, or `None` for a value Kiln did not write.
pub(super) fn lease_parts(value: &[u8]) -> Option<(Timestamp, &str)> {
    let value = std::str::from_utf8(value).ok()?;
    let (at, owner) = value.split_once(':')?;
    Some((Timestamp(at.parse().ok()?), owner))
}

/// One job record (a MessagePack map), field name -> value, while it is decoded.
pub(super) struct Record<'a> {
    fields: Vec<(&'a str, ValueRef<'a>)>,
}

impl<'a> Record<'a> {
    /// Reads the map; a value that is not a map of text keys is an error.
    pub(super) fn parse(mut bytes: &'a [u8]) -> Result<Self, String> {
        let value = rmpv::decode::read_value_ref(&mut bytes)
            .map_err(|e| format!("the job record is not MessagePack: {e}"))?;
        let ValueRef::Map(entries) = value else {
            return Err("the job record is not a MessagePack map".to_owned());
        };
        let fields = entries
            .into_iter()
            .filter_map(|(key, value)| match key {
                ValueRef::String(key) => Some((key.into_str()?, value)),
                _ => None,
            })
            .collect();
        Ok(Record { fields })
    }

    pub(super) fn take(&mut self, field: &str) -> Option<ValueRef<'a>> {
        let at = self.fields.iter().position(|(name, _)| *name == field)?;
        match self.fields.swap_remove(at).1 {
            ValueRef::Nil => None,
            value => Some(value),
        }
    }

    pub(super) fn bytes_opt(&mut self, field: &str) -> Result<Option<Vec<u8>>, String> {
        match self.take(field) {
            None => Ok(None),
            Some(ValueRef::String(text)) => Ok(Some(text.as_bytes().to_vec())),
            Some(ValueRef::Binary(bytes)) => Ok(Some(bytes.to_vec())),
            Some(_) => Err(format!("field `{field}` is not a string")),
        }
    }

    pub(super) fn bytes(&mut self, field: &str) -> Result<Vec<u8>, String> {
        self.bytes_opt(field)?
            .ok_or_else(|| format!("field `{field}` is missing"))
    }

    pub(super) fn text_opt(&mut self, field: &str) -> Result<Option<String>, String> {
        self.bytes_opt(field)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| format!("field `{field}` is not utf-8"))
            })
            .transpose()
    }

    pub(super) fn text(&mut self, field: &str) -> Result<String, String> {
        self.text_opt(field)?
            .ok_or_else(|| format!("field `{field}` is missing"))
    }

    pub(super) fn number_opt<T: TryFrom<i64>>(&mut self, field: &str) -> Result<Option<T>, String> {
        let Some(value) = self.take(field) else {
            return Ok(None);
        };
        let whole = match value {
            ValueRef::Integer(n) => n.as_i64(),
            // Lua writes whole numbers as integers; a float is accepted only when whole.
            ValueRef::F64(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                Some(f as i64)
            }
            _ => None,
        };
        whole
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("field `{field}` is not a valid integer: {value}"))
    }

    pub(super) fn number<T: TryFrom<i64>>(&mut self, field: &str) -> Result<T, String> {
        self.number_opt(field)?
            .ok_or_else(|| format!("field `{field}` is missing"))
    }

    pub(super) fn time_opt(&mut self, field: &str) -> Result<Option<Timestamp>, String> {
        Ok(self.number_opt(field)?.map(Timestamp))
    }

    pub(super) fn time(&mut self, field: &str) -> Result<Timestamp, String> {
        self.number(field).map(Timestamp)
    }

    /// The schedule tick a job records (`schedule`, `tick`, `tick_manual`), if any.
    fn tick(&mut self) -> Result<Option<Tick>, String> {
        let (Some(schedule), Some(at)) = (self.text_opt("schedule")?, self.time_opt("tick")?)
        else {
            return Ok(None);
        };
        let manual = matches!(self.take("tick_manual"), Some(ValueRef::Boolean(true)));
        Ok(Some(Tick {
            schedule,
            at,
            manual,
        }))
    }

    /// The job this record describes, active under `claim` when it is claimed, or why the
    /// record does not describe a job.
    pub(super) fn job(
        mut self,
        claim: Option<Claim>,
        defaults: &JobDefaults,
    ) -> Result<Job, String> {
        let state: JobState = self.text("state")?.parse().map_err(|e| format!("{e}"))?;
        let history: Vec<AttemptRecord> = serde_json::from_str(&self.text("history")?)
            .map_err(|e| format!("attempt history is not valid json: {e}"))?;
        let progress = match self.number_opt::<u8>("progress_percent")? {
            Some(percent) => Some(Progress {
                percent,
                message: self.text_opt("progress_message")?,
            }),
            None => None,
        };
        let cancel_requested = match self.take("cancel_requested") {
            None | Some(ValueRef::Boolean(false)) => false,
            Some(ValueRef::Boolean(true)) => true,
            Some(other) => {
                return Err(format!(
                    "field `cancel_requested` is not a boolean: {other}"
                ));
            }
        };
        let (id, handler, queue) = (self.text("id")?, self.text("handler")?, self.text("queue")?);
        // An outside producer may leave these to the config (the README's field table).
        let priority = match self.number_opt("priority")? {
            Some(priority) => priority,
            None => defaults.priority(&queue),
        };
        let max_attempts = match self.number_opt("max_attempts")? {
            Some(max_attempts) => max_attempts,
            None => defaults.max_attempts(&handler, &queue),
        };
        let mut job = Job {
            id,
            handler,
            queue,
            payload: self.bytes("payload")?,
            priority,
            state,
            attempts: self.number("attempts")?,
            max_attempts,
            run_at: self.time("run_at")?,
            lease: None,
            result: self.bytes_opt("result")?,
            error: self.text_opt("error")?,
            progress,
            unique_key: self.text_opt("unique_key")?,
            cancel_requested,
            created_at: self.time("created_at")?,
            updated_at: self.time("updated_at")?,
            finished_at: self.time_opt("finished_at")?,
            history,
            tick: self.tick()?,
        };
        // A claim leaves the record as it was: the job is active with one more attempt.
        if let Some(claim) = claim {
            claim.lay_over(&mut job);
        }
        Ok(job)
    }
}

/// Why a record listed as a waiting or claimed job is not that job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NotWaiting {
    /// It cannot be read as a job of this queue with this id.
    Unreadable(String),
    /// It is a sound job record, but in this state (a claimed job's record says waiting).
    State(JobState),
}

impl NotWaiting {
    /// Why the record is moved aside, when it is.
    pub(super) fn reason(&self) -> String {
        match self {
            NotWaiting::Unreadable(reason) => reason.clone(),
            NotWaiting::State(state) => format!("listed as waiting but its record says `{state}`"),
        }
    }
}

/// The record `bytes` of job `id` of `queue`, as a waiting job, or why it is not one. A
/// claim reads a waiting record (it only looked for the bytes of `state: 'waiting'`), and an
/// active job's record still says waiting.
pub(super) fn waiting_job(
    id: &str,
    queue: &str,
    bytes: &[u8],
    defaults: &JobDefaults,
) -> Result<Job, NotWaiting> {
    let job = Record::parse(bytes)
        .and_then(|record| record.job(None, defaults))
        .map_err(NotWaiting::Unreadable)?;
    if job.state != JobState::Waiting {
        return Err(NotWaiting::State(job.state));
    }
    if job.id != id || job.queue != queue {
        let reason = "field `id` or `queue` does not match the key";
        return Err(NotWaiting::Unreadable(reason.to_owned()));
    }
    Ok(job)
}

/// A value a `Patch` gives a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field<'a> {
    /// A MessagePack string of these bytes (Lua has no binary type; see the README).
    Text(&'a [u8]),
    Int(i64),
    /// The field is removed (a result or error cleared).
    Absent,
}

/// Changes to a record: fields set or removed, and at most one attempt record appended to
/// its history. Every other field is kept byte for byte, so a patch needs no knowledge of
/// fields it does not touch (a producer's extra fields survive too).
#[derive(Debug, Default)]
pub(super) struct Patch<'a> {
    fields: Vec<(&'static str, Field<'a>)>,
    /// An attempt record as JSON, appended to the JSON array in `history`.
    attempt: Option<&'a str>,
}

impl<'a> Patch<'a> {
    /// The same patch, also setting `name` to `value`.
    pub(super) fn set(mut self, name: &'static str, value: Field<'a>) -> Self {
        self.fields.push((name, value));
        self
    }

    /// The same patch, also appending `attempt` (JSON) to the history when given.
    pub(super) fn append(mut self, attempt: Option<&'a str>) -> Self {
        self.attempt = attempt;
        self
    }

    fn touches(&self, name: &str) -> bool {
        (name == "history" && self.attempt.is_some())
            || self.fields.iter().any(|(field, _)| *field == name)
    }

    /// The record `raw` with these changes, or why `raw` cannot take them.
    pub(super) fn apply(&self, raw: &[u8]) -> Result<Vec<u8>, String> {
        let unreadable =
            |e: &dyn std::fmt::Display| format!("the job record is not MessagePack: {e}");
        let mut cursor = raw;
        let pairs = rmp::decode::read_map_len(&mut cursor).map_err(|e| unreadable(&e))?;
        let mut kept: Vec<&[u8]> = Vec::with_capacity(pairs as usize);
        let mut history = None;
        for _ in 0..pairs {
            let start = raw.len() - cursor.len();
            let key = rmpv::decode::read_value_ref(&mut cursor).map_err(|e| unreadable(&e))?;
            let value = rmpv::decode::read_value_ref(&mut cursor).map_err(|e| unreadable(&e))?;
            let name = match key {
                ValueRef::String(name) => name.into_str(),
                _ => None,
            };
            if let (Some("history"), ValueRef::String(text)) = (name, value) {
                history = text.into_str();
            }
            if !name.is_some_and(|name| self.touches(name)) {
                kept.push(&raw[start..raw.len() - cursor.len()]);
            }
        }
        let history = match self.attempt {
            Some(attempt) => Some(
                history
                    .and_then(|history| appended(history, attempt))
                    .ok_or("field `history` is not a JSON array")?,
            ),
            None => None,
        };
        self.write(&kept, history.as_deref())
    }

    /// A record of the `kept` pairs, then the patched fields, then `history` when given.
    fn write(&self, kept: &[&[u8]], history: Option<&str>) -> Result<Vec<u8>, String> {
        let size: usize = kept.iter().map(|pair| pair.len()).sum::<usize>()
            + self.fields.len() * 24
            + history.map_or(0, str::len);
        let mut out = Vec::with_capacity(size + 64);
        let set = self
            .fields
            .iter()
            .filter(|(_, value)| *value != Field::Absent);
        let count = kept.len() + set.clone().count() + usize::from(history.is_some());
        let too_big = |_| "the job record has too many fields".to_owned();
        rmp::encode::write_map_len(&mut out, u32::try_from(count).map_err(too_big)?)
            .map_err(|e| e.to_string())?;
        for pair in kept {
            out.extend_from_slice(pair);
        }
        let history = history.map(|text| ("history", Field::Text(text.as_bytes())));
        for (name, value) in set.copied().chain(history) {
            write_field(&mut out, name, value)?;
        }
        Ok(out)
    }
}

/// Appends one `name: value` pair to a MessagePack map being written.
fn write_field(out: &mut Vec<u8>, name: &str, value: Field<'_>) -> Result<(), String> {
    let failed = |e: rmp::encode::ValueWriteError| e.to_string();
    rmp::encode::write_str(out, name).map_err(failed)?;
    match value {
        Field::Text(bytes) => {
            let len =
                u32::try_from(bytes.len()).map_err(|_| format!("field `{name}` is too long"))?;
            rmp::encode::write_str_len(out, len).map_err(failed)?;
            out.extend_from_slice(bytes);
        }
        Field::Int(n) => {
            rmp::encode::write_sint(out, n).map_err(failed)?;
        }
        Field::Absent => {}
    }
    Ok(())
}

/// `history` (a JSON array) with one JSON attempt record appended, the text before it kept
/// as it was, or `None` for a history that does not look like an array.
fn appended(history: &str, record: &str) -> Option<String> {
    let body = history.trim_end().strip_suffix(']')?;
    if body.trim().strip_prefix('[')?.trim().is_empty() {
        Some(format!("[{record}]"))
    } else {
        Some(format!("{body},{record}]"))
    }
}

/// Decodes job `id`'s record, active under `claim` when claimed; a bad record is
/// `StoreError::Corrupt`.
pub(super) fn decode(
    id: &str,
    bytes: &[u8],
    claim: Option<Claim>,
    defaults: &JobDefaults,
) -> StoreResult<Job> {
    Record::parse(bytes)
        .and_then(|record| record.job(claim, defaults))
        .map_err(|reason| StoreError::Corrupt {
            id: id.to_owned(),
            reason,
        })
}
