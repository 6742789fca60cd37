//! The job record codec: a job is one string key holding a MessagePack map (the README's
//! "Redis job format"). Decoding a record into a `Job` (with the claim laid over it when the
//! job is active), and building the record of a settled job from the one its claim read.
//!
//! A claim does not rewrite the record: a claimed job is active through its queue's `leases`
//! hash and `active` set, and readers lay the lease over the record (`Claim`).

use rmpv::ValueRef;

use crate::store::{
    AttemptRecord, Job, JobState, Lease, Progress, StoreError, StoreResult, Timestamp,
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

    /// From a `leases` value (`<claimed_at>:<owner>`) and the `active` score.
    pub(super) fn parse(value: &[u8], expires_at: f64) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?;
        let (at, owner) = value.split_once(':')?;
        Some(Claim {
            owner: owner.to_owned(),
            claimed_at: Timestamp(at.parse().ok()?),
            expires_at: Timestamp(expires_at as i64),
        })
    }
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

    /// The job this record describes, active under `claim` when it is claimed, or why the
    /// record does not describe a job.
    pub(super) fn job(mut self, claim: Option<Claim>) -> Result<Job, String> {
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
        let mut job = Job {
            id: self.text("id")?,
            handler: self.text("handler")?,
            queue: self.text("queue")?,
            payload: self.bytes("payload")?,
            priority: self.number("priority")?,
            state,
            attempts: self.number("attempts")?,
            max_attempts: self.number("max_attempts")?,
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
        };
        // A claim leaves the record as it was: the job is active with one more attempt.
        if let Some(claim) = claim {
            claim.lay_over(&mut job);
        }
        Ok(job)
    }
}

/// A record `claim.lua` claimed as the waiting job `id` of `queue`, as the job it now is, or
/// why it is not one (the claim only looked for the bytes of `state: 'waiting'`).
pub(super) fn claimed_job(
    id: &str,
    queue: &str,
    bytes: &[u8],
    claim: Claim,
) -> Result<Job, String> {
    let mut job = Record::parse(bytes)?.job(None)?;
    if job.state != JobState::Waiting {
        return Err(format!(
            "listed as waiting but its record says `{}`",
            job.state
        ));
    }
    if job.id != id || job.queue != queue {
        return Err("field `id` or `queue` does not match the key".to_owned());
    }
    claim.lay_over(&mut job);
    Ok(job)
}

/// What a claim returned of one job, kept so settling it as succeeded or failed needs no
/// MessagePack work in Redis: the host writes the new record and the script only checks that
/// the stored one is still the one claimed.
pub(super) struct Claimed {
    pub(super) owner: String,
    pub(super) claimed_at: Timestamp,
    /// The record as the claim read it.
    pub(super) record: Vec<u8>,
    /// The job's unique key, which a settlement that deletes the job releases.
    pub(super) unique_key: Option<String>,
}

/// `history` (a JSON array) with one JSON attempt record appended, as `appended` in lib.lua
/// does it, or `None` for a history that does not look like an array.
pub(super) fn appended(history: &str, record: &str) -> Option<String> {
    let body = history.trim_end().strip_suffix(']')?;
    if body.trim().strip_prefix('[')?.trim().is_empty() {
        Some(format!("[{record}]"))
    } else {
        Some(format!("{body},{record}]"))
    }
}

/// The record of a claimed job once it succeeded (`result`) or failed (`error`), as
/// `settle.lua` would write it: one more attempt, the attempt record appended, the claim's
/// owner and start kept. Returns `None` when the claimed record cannot be read (the script
/// then decides).
pub(super) fn settled_record(
    claimed: &Claimed,
    outcome: Result<&[u8], &[u8]>,
    attempt: &str,
    now: Timestamp,
) -> Option<Vec<u8>> {
    const SET: [&str; 9] = [
        "state",
        "attempts",
        "result",
        "error",
        "history",
        "lease_owner",
        "claimed_at",
        "updated_at",
        "finished_at",
    ];
    let raw = &claimed.record[..];
    let mut cursor = raw;
    let pairs = rmp::decode::read_map_len(&mut cursor).ok()?;
    let mut kept: Vec<&[u8]> = Vec::new();
    let (mut attempts, mut history) = (None, None);
    for _ in 0..pairs {
        let start = raw.len() - cursor.len();
        let key = rmpv::decode::read_value_ref(&mut cursor).ok()?;
        let value = rmpv::decode::read_value_ref(&mut cursor).ok()?;
        let ValueRef::String(name) = key else {
            return None;
        };
        let name = name.as_str()?;
        match (name, value) {
            ("attempts", ValueRef::Integer(n)) => attempts = n.as_i64(),
            ("history", ValueRef::String(text)) => history = text.into_str(),
            _ => {}
        }
        if !SET.contains(&name) {
            kept.push(&raw[start..raw.len() - cursor.len()]);
        }
    }
    let history = if attempt.is_empty() {
        history?.to_owned()
    } else {
        appended(history?, attempt)?
    };
    let (state, text_field, text) = match outcome {
        Ok(result) => ("succeeded", "result", result),
        Err(error) => ("failed", "error", error),
    };
    let mut out = Vec::with_capacity(raw.len() + text.len() + history.len() + 96);
    let count = u32::try_from(kept.len() + 8).ok()?;
    rmp::encode::write_map_len(&mut out, count).ok()?;
    for pair in kept {
        out.extend_from_slice(pair);
    }
    let mut text_pair = |name: &str, value: &[u8]| -> Option<()> {
        rmp::encode::write_str(&mut out, name).ok()?;
        rmp::encode::write_str_len(&mut out, u32::try_from(value.len()).ok()?).ok()?;
        out.extend_from_slice(value);
        Some(())
    };
    text_pair("state", state.as_bytes())?;
    text_pair(text_field, text)?;
    text_pair("history", history.as_bytes())?;
    text_pair("lease_owner", claimed.owner.as_bytes())?;
    for (name, value) in [
        ("attempts", attempts? + 1),
        ("claimed_at", claimed.claimed_at.0),
        ("updated_at", now.0),
        ("finished_at", now.0),
    ] {
        rmp::encode::write_str(&mut out, name).ok()?;
        rmp::encode::write_sint(&mut out, value).ok()?;
    }
    Some(out)
}

/// Decodes job `id`'s record, active under `claim` when claimed; a bad record is
/// `StoreError::Corrupt`.
pub(super) fn decode(id: &str, bytes: &[u8], claim: Option<Claim>) -> StoreResult<Job> {
    Record::parse(bytes)
        .and_then(|record| record.job(claim))
        .map_err(|reason| StoreError::Corrupt {
            id: id.to_owned(),
            reason,
        })
}
