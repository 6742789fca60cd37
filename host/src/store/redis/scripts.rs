//! The Lua scripts (`*.lua` beside this file), compiled once per process, and how the store
//! invokes them: every script but `enqueue.lua` gets `lib.lua` in front of it, and every one
//! receives the queue's ten keys and the same first four arguments.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use super::RedisStore;
use super::keys::{QUEUE_KEYS, QueueKeys};
use crate::store::{SettleAction, Settlement, StoreError, StoreResult, Timestamp};

/// The compiled scripts, hashed once per process.
pub(super) struct Scripts {
    pub(super) enqueue: Script,
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) settle: Script,
    pub(super) progress: Script,
    pub(super) recover: Script,
    pub(super) cancel: Script,
    pub(super) retry: Script,
    pub(super) clear: Script,
    pub(super) prune: Script,
    pub(super) quarantine: Script,
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
    recover: with_lib(include_str!("recover.lua")),
    cancel: with_lib(include_str!("cancel.lua")),
    retry: with_lib(include_str!("retry.lua")),
    clear: with_lib(include_str!("clear.lua")),
    prune: with_lib(include_str!("prune.lua")),
    quarantine: with_lib(include_str!("quarantine.lua")),
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
}

/// Settlement arguments for `settle.lua`: action, at, text, attempt JSON.
pub(super) fn settle_args(
    settlement: &Settlement,
) -> StoreResult<(&'static str, String, Vec<u8>, String)> {
    let record = match (&settlement.action, &settlement.attempt) {
        (SettleAction::Release { .. } | SettleAction::SucceedAndDelete, _) | (_, None) => {
            String::new()
        }
        (_, Some(record)) => serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
            id: settlement.id.clone(),
            reason: format!("attempt record cannot be encoded: {e}"),
        })?,
    };
    let (action, at, text) = match &settlement.action {
        SettleAction::Succeed { result } => ("succeed", String::new(), result.clone()),
        SettleAction::SucceedAndDelete => ("delete", String::new(), Vec::new()),
        SettleAction::Retry { at, error } => ("retry", at.0.to_string(), error.clone().into()),
        SettleAction::Fail { error } => ("fail", String::new(), error.clone().into()),
        SettleAction::Cancel => ("cancel", String::new(), Vec::new()),
        SettleAction::Release { at } => ("release", at.0.to_string(), Vec::new()),
    };
    Ok((action, at, text, record))
}
