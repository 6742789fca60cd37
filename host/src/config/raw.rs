//! The raw layer of the configuration: a serde mirror of `config.toml` that only knows the
//! file's shape. Every table denies unknown keys, and every value that is checked later keeps
//! its byte span so the validated layer (`validate.rs`) can name the line of a bad value.
//! Nothing here interprets a value; units, ranges and cross-references are checked later.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

/// A value that may be written as a string or an integer: durations (`"30s"`), byte sizes
/// (`"64MiB"` or `1000`) and fuel (`1_000_000` or `"unlimited"`). Environment overrides turn
/// `4` into an integer, so accepting both keeps the error about the unit, not the TOML type.
#[derive(Debug, Clone)]
pub(super) enum Scalar {
    Text(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer is too large"))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

pub(super) type Value<T> = Option<Spanned<T>>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub host: RawHost,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub queues: BTreeMap<Spanned<String>, RawQueue>,
    #[serde(default)]
    pub handlers: BTreeMap<Spanned<String>, RawHandler>,
    #[serde(default)]
    pub schedules: Vec<Spanned<RawSchedule>>,
}

/// One `[[schedules]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub name: Value<String>,
    pub handler: Value<String>,
    pub cron: Value<String>,
    pub timezone: Value<String>,
    pub payload: Value<toml::Value>,
    pub queue: Value<String>,
    pub misfire: Value<String>,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub handlers_dir: Value<String>,
    pub cache_dir: Value<String>,
    pub concurrency: Value<i64>,
    pub threads: Value<i64>,
    pub shutdown_grace: Value<Scalar>,
    pub lease: Value<Scalar>,
    pub unknown_handler_grace: Value<Scalar>,
    pub compile_timeout: Value<Scalar>,
    pub compile_memory: Value<Scalar>,
    pub max_handler_size: Value<Scalar>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub backend: Value<String>,
    pub path: Value<String>,
    pub durability: Value<String>,
    pub url: Value<String>,
    pub nodes: Value<Vec<Spanned<String>>>,
    pub ca_file: Value<String>,
}

/// `backoff = { initial, max, jitter }`, any subset.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackoff {
    pub initial: Value<Scalar>,
    pub max: Value<Scalar>,
    pub jitter: Value<f64>,
}

/// `retention = { succeeded = {..}, failed = {..}, cancelled = {..} }`, any subset.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub succeeded: Option<RawKeep>,
    pub failed: Option<RawKeep>,
    pub cancelled: Option<RawKeep>,
}

/// One side of a retention policy: `{ count, age }`, either or both.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeep {
    pub count: Value<i64>,
    pub age: Value<Scalar>,
}

/// `grants = { env = {..}, dir = "..", http = [..], http_ca_file = "..", tcp = [..] }` on a
/// queue or a handler.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrants {
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    pub dir: Value<String>,
    #[serde(default)]
    pub http: Vec<Spanned<String>>,
    pub http_ca_file: Value<String>,
    #[serde(default)]
    pub tcp: Vec<Spanned<String>>,
}

/// The per-job keys that `[defaults]`, `[queues.*]` and `[handlers.*]` share, borrowed from
/// whichever table declared them. serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, so each table repeats the fields and lends them out through this.
pub(super) struct JobKeys<'a> {
    pub max_attempts: &'a Value<i64>,
    pub timeout: &'a Value<Scalar>,
    pub memory: &'a Value<Scalar>,
    pub fuel: &'a Value<Scalar>,
    pub backoff: &'a Option<RawBackoff>,
    pub max_result: &'a Value<Scalar>,
    pub max_payload: &'a Value<Scalar>,
    pub max_log: &'a Value<Scalar>,
    pub http_max_in_flight: &'a Value<i64>,
    pub http_connect_timeout: &'a Value<Scalar>,
}

/// Declares a table that carries the shared per-job keys plus its own.
macro_rules! job_table {
    ($(#[$meta:meta])* $name:ident { $($field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $(pub $field: $ty,)*
            pub max_attempts: Value<i64>,
            pub timeout: Value<Scalar>,
            pub memory: Value<Scalar>,
            pub fuel: Value<Scalar>,
            pub backoff: Option<RawBackoff>,
            pub max_result: Value<Scalar>,
            pub max_payload: Value<Scalar>,
            pub max_log: Value<Scalar>,
            pub http_max_in_flight: Value<i64>,
            pub http_connect_timeout: Value<Scalar>,
        }

        impl $name {
            pub fn job_keys(&self) -> JobKeys<'_> {
                JobKeys {
                    max_attempts: &self.max_attempts,
                    timeout: &self.timeout,
                    memory: &self.memory,
                    fuel: &self.fuel,
                    backoff: &self.backoff,
                    max_result: &self.max_result,
                    max_payload: &self.max_payload,
                    max_log: &self.max_log,
                    http_max_in_flight: &self.http_max_in_flight,
                    http_connect_timeout: &self.http_connect_timeout,
                }
            }
        }
    };
}

job_table!(
    /// `[defaults]`.
    RawDefaults {
        retention: Option<RawRetention>,
    }
);

job_table!(
    /// `[queues.NAME]`.
    RawQueue {
        concurrency: Value<i64>,
        priority: Value<i64>,
        paused: Value<bool>,
        retention: Option<RawRetention>,
        grants: Option<RawGrants>,
    }
);

job_table!(
    /// `[handlers.NAME]`. No `retention`: finished jobs are kept per queue.
    RawHandler {
        queue: Value<String>,
        grants: Option<RawGrants>,
    }
);
