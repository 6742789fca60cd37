//! The Lua scripts (`*.lua` beside this file), compiled once per process, how the store
//! invokes them, and what they reply. Every script but `enqueue.lua` gets `lib.lua` in front
//! of it, and every one receives the queue's ten keys and the same first four arguments.
//! Every reply is decoded here (`Reply`), into one small type per script whose codes are
//! the names the script gives them at its top.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation, Value};

use super::keys::{QUEUE_KEYS, QueueKeys};
use super::{RedisStore, backend, bad_reply};
use crate::store::{Enqueued, StoreResult, Timestamp};

/// The compiled scripts, hashed once per process.
pub(super) struct Scripts {
    pub(super) enqueue: Script,
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) settle: Script,
    pub(super) progress: Script,
    pub(super) promote: Script,
    pub(super) cancel: Script,
    pub(super) retry: Script,
    pub(super) clear: Script,
    pub(super) prune: Script,
    pub(super) quarantine: Script,
    pub(super) unpark: Script,
    pub(super) tick: Script,
}

pub(super) const LIB: &str = include_str!("lib.lua");

/// A script with `lib.lua` in front of it.
pub(super) fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("enqueue.lua")),
    claim: with_lib(include_str!("claim.lua")),
    renew: with_lib(include_str!("renew.lua")),
    settle: with_lib(include_str!("settle.lua")),
    progress: with_lib(include_str!("progress.lua")),
    promote: with_lib(include_str!("promote.lua")),
    cancel: with_lib(include_str!("cancel.lua")),
    retry: with_lib(include_str!("retry.lua")),
    clear: with_lib(include_str!("clear.lua")),
    prune: with_lib(include_str!("prune.lua")),
    quarantine: with_lib(include_str!("quarantine.lua")),
    unpark: with_lib(include_str!("unpark.lua")),
    tick: with_lib(include_str!("tick.lua")),
});

impl RedisStore {
    /// Starts an invocation of `script` on `queue` with the common KEYS and ARGV.
    pub(super) fn invocation<'s>(
        &self,
        script: &'s Script,
        keys: &QueueKeys<'_>,
        now: Timestamp,
    ) -> ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        for name in QUEUE_KEYS {
            invocation.key(keys.key(name));
        }
        invocation
            .arg(&keys.prefix)
            .arg(keys.queue)
            .arg(now.0)
            .arg(self.wake_channel());
        invocation
    }

    /// Runs `invocation` and decodes its reply as `R`; `context` says what was being done
    /// ("claim jobs from queue `emails`").
    pub(super) async fn run<R: Reply>(
        &self,
        invocation: &ScriptInvocation<'_>,
        context: &str,
    ) -> StoreResult<R> {
        let reply: Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(context))?;
        R::from_reply(reply).map_err(|detail| bad_reply(context, detail))
    }
}

/// A script's reply, decoded. Each script's reply is one type below, and this file is the
/// only place that knows the shapes and codes the scripts send back.
pub(super) trait Reply: Sized {
    /// Decodes `reply`, or says what about it is not what the script promises.
    fn from_reply(reply: Value) -> Result<Self, String>;
}

/// A count (`clear.lua`, `prune.lua`).
impl Reply for usize {
    fn from_reply(reply: Value) -> Result<Self, String> {
        redis::from_redis_value(reply).map_err(|e| e.to_string())
    }
}

/// `enqueue.lua`: two entries per job, its id and 1 when a unique key matched an unfinished
/// job (whose id it is), else 0. The producers' contract, so plain numbers.
impl Reply for Vec<Enqueued> {
    fn from_reply(reply: Value) -> Result<Self, String> {
        let entries = array(reply)?;
        entries
            .chunks(2)
            .map(|pair| match pair {
                [Value::BulkString(id), Value::Int(existing @ (0 | 1))] => Ok(Enqueued {
                    id: String::from_utf8_lossy(id).into_owned(),
                    existing: *existing == 1,
                }),
                _ => Err(format!("unexpected entry {pair:?}")),
            })
            .collect()
    }
}

/// `tick.lua`: the new job's id and 0, or '' and 1 when the tick was already enqueued.
impl Reply for Option<Enqueued> {
    fn from_reply(reply: Value) -> Result<Self, String> {
        match array(reply)?.as_slice() {
            [Value::BulkString(id), Value::Int(0)] => Ok(Some(Enqueued {
                id: String::from_utf8_lossy(id).into_owned(),
                existing: false,
            })),
            [_, Value::Int(1)] => Ok(None),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

/// `id, reason` pairs for broken entries a script moved aside or dropped.
#[derive(Default)]
pub(super) struct Broken(Vec<(String, String)>);

impl Broken {
    /// Logs each entry as an error of `queue`.
    pub(super) fn log(&self, queue: &str) {
        for (id, reason) in &self.0 {
            log_broken(queue, id, reason);
        }
    }

    fn from_flat(flat: Vec<String>) -> Result<Self, String> {
        if !flat.len().is_multiple_of(2) {
            return Err("a report of broken entries has an odd length".to_owned());
        }
        let mut pairs = flat.into_iter();
        let mut broken = Vec::new();
        while let (Some(id), Some(reason)) = (pairs.next(), pairs.next()) {
            broken.push((id, reason));
        }
        Ok(Broken(broken))
    }
}

/// Logs a broken entry of `queue` that the store moved aside or dropped.
pub(super) fn log_broken(queue: &str, id: &str, reason: &str) {
    tracing::error!(queue, job = %id, "broken job entry in redis: {reason}");
}

/// `claim.lua`: each claimed job's id and record as stored, in claim order, and what it
/// found broken on the way.
pub(super) struct ClaimReply {
    pub(super) claimed: Vec<(String, Vec<u8>)>,
    pub(super) broken: Broken,
}

impl Reply for ClaimReply {
    fn from_reply(reply: Value) -> Result<Self, String> {
        let (claimed, broken): (Vec<(String, Vec<u8>)>, Vec<String>) =
            redis::from_redis_value(reply).map_err(|e| e.to_string())?;
        Ok(ClaimReply {
            claimed,
            broken: Broken::from_flat(broken)?,
        })
    }
}

/// `renew.lua`, per id: what became of the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Renewal {
    /// Not active under this owner any more.
    Lost,
    /// Renewed.
    Held,
    /// Renewed, and an admin requested a cancel.
    CancelRequested,
}

impl Reply for Vec<Renewal> {
    fn from_reply(reply: Value) -> Result<Self, String> {
        array(reply)?
            .into_iter()
            .map(|code| match text_of(&code)? {
                "lost" => Ok(Renewal::Lost),
                "held" => Ok(Renewal::Held),
                "cancel requested" => Ok(Renewal::CancelRequested),
                other => Err(format!("unknown renew code `{other}`")),
            })
            .collect()
    }
}

/// Why `settle.lua` did not write a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The lease is not the one the decision read (or no longer expired, for the reaper),
    /// or the job was written earlier in the same batch.
    Stale,
    /// The stored record is not the one the decision read.
    Changed,
}

/// `settle.lua`: the writes it refused, by position in the batch (from 0), with why. The
/// rest were written.
pub(super) struct SettleReply(pub(super) Vec<(usize, Refusal)>);

impl Reply for SettleReply {
    fn from_reply(reply: Value) -> Result<Self, String> {
        let entries = array(reply)?;
        if !entries.len().is_multiple_of(2) {
            return Err("refusals come in pairs".to_owned());
        }
        let refusal = |pair: &[Value]| match pair {
            [Value::Int(position @ 1..), code] => {
                let refusal = match text_of(code)? {
                    "stale" => Refusal::Stale,
                    "changed" => Refusal::Changed,
                    other => return Err(format!("unknown settle code `{other}`")),
                };
                let position = usize::try_from(*position - 1).map_err(|e| e.to_string())?;
                Ok((position, refusal))
            }
            _ => Err(format!("unexpected refusal {pair:?}")),
        };
        entries
            .chunks(2)
            .map(refusal)
            .collect::<Result<_, _>>()
            .map(SettleReply)
    }
}

/// `promote.lua` and `unpark.lua`: how many ids the script moved (promote: due ids it took
/// off `scheduled`, promoted or, when broken, dropped; unpark: parked jobs it woke), and
/// what it found broken.
pub(super) struct MovedReply {
    pub(super) moved: usize,
    pub(super) broken: Broken,
}

impl Reply for MovedReply {
    fn from_reply(reply: Value) -> Result<Self, String> {
        let (moved, broken): (usize, Vec<String>) =
            redis::from_redis_value(reply).map_err(|e| e.to_string())?;
        Ok(MovedReply {
            moved,
            broken: Broken::from_flat(broken)?,
        })
    }
}

/// `progress.lua`: whether the progress was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProgressReply {
    Recorded,
    /// The owner does not hold the job (or it has no record).
    NotHeld,
}

impl Reply for ProgressReply {
    fn from_reply(reply: Value) -> Result<Self, String> {
        match text_of(&reply)? {
            "recorded" => Ok(ProgressReply::Recorded),
            "not held" => Ok(ProgressReply::NotHeld),
            other => Err(format!("unknown progress code `{other}`")),
        }
    }
}

/// `cancel.lua`: what the cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CancelReply {
    /// It was scheduled or waiting and is cancelled now.
    Cancelled,
    /// It is active: the cancel is recorded for its worker.
    Requested,
    /// There is no such job.
    Missing,
    /// It had already finished; the state its record names (parsed by the caller, who
    /// knows the job a bad one makes corrupt).
    Finished(String),
}

impl Reply for CancelReply {
    fn from_reply(reply: Value) -> Result<Self, String> {
        let parts = array(reply)?;
        match (coded(&parts)?, parts.get(1)) {
            ("cancelled", None) => Ok(CancelReply::Cancelled),
            ("requested", None) => Ok(CancelReply::Requested),
            ("missing", None) => Ok(CancelReply::Missing),
            ("finished", Some(state)) => Ok(CancelReply::Finished(text_of(state)?.to_owned())),
            (code, _) => Err(format!("unexpected cancel reply `{code}` {parts:?}")),
        }
    }
}

/// `retry.lua`: how many failed jobs were revived, or why the one asked for was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RetryReply {
    Revived(usize),
    /// There is no such job.
    Missing,
    /// The job is not failed; the state its record names (parsed by the caller).
    NotFailed(String),
}

impl Reply for RetryReply {
    fn from_reply(reply: Value) -> Result<Self, String> {
        let parts = array(reply)?;
        match (coded(&parts)?, parts.get(1)) {
            ("revived", Some(Value::Int(count))) => usize::try_from(*count)
                .map(RetryReply::Revived)
                .map_err(|e| e.to_string()),
            ("missing", None) => Ok(RetryReply::Missing),
            ("not failed", Some(state)) => Ok(RetryReply::NotFailed(text_of(state)?.to_owned())),
            (code, _) => Err(format!("unexpected retry reply `{code}` {parts:?}")),
        }
    }
}

/// `quarantine.lua`: whether the value was moved aside, and why as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Quarantined {
    Moved(String),
    /// The job key held nothing: its id was unlisted instead.
    Missing,
}

impl Reply for Quarantined {
    fn from_reply(reply: Value) -> Result<Self, String> {
        let parts = array(reply)?;
        match (coded(&parts)?, parts.get(1)) {
            ("moved", Some(reason)) => Ok(Quarantined::Moved(text_of(reason)?.to_owned())),
            ("missing", None) => Ok(Quarantined::Missing),
            (code, _) => Err(format!("unexpected quarantine reply `{code}` {parts:?}")),
        }
    }
}

/// The entries of an array reply.
fn array(reply: Value) -> Result<Vec<Value>, String> {
    match reply {
        Value::Array(entries) => Ok(entries),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

/// The text of a string reply.
fn text_of(value: &Value) -> Result<&str, String> {
    match value {
        Value::BulkString(bytes) => {
            std::str::from_utf8(bytes).map_err(|_| format!("{value:?} is not utf-8"))
        }
        Value::SimpleString(text) => Ok(text),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

/// The code that starts an array reply: a short string named at the top of its script.
fn coded(parts: &[Value]) -> Result<&str, String> {
    parts
        .first()
        .ok_or_else(|| "an empty reply".to_owned())
        .and_then(text_of)
}
