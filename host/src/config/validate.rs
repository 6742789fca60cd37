//! The validated layer: turns the raw mirror of the file into a [`Config`], checking units,
//! ranges and references between tables, and filling every absent key with its default.
//! Each check names the dotted key and uses the value's span to point at its line.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use super::error::{ConfigError, Origins};
use super::raw::{
    JobKeys, RawBackoff, RawConfig, RawGrants, RawHandler, RawHost, RawKeep, RawQueue,
    RawRetention, RawStore, Scalar,
};
use super::{
    Backoff, Config, DEFAULT_QUEUE, Durability, Grants, HandlerConfig, HostConfig, JobLimits,
    JobSettings, Keep, Overrides, QueueConfig, RedisTarget, Retention, RetentionPolicy,
    StoreConfig, env, units,
};
use crate::capabilities;
use crate::registry::compiler;
use crate::store::DEFAULT_MAX_ATTEMPTS;

/// The smallest memory cap: one 64KiB wasm page. Below it no module can instantiate.
const MIN_MEMORY: u64 = 64 << 10;
/// The largest memory cap: all a 32-bit wasm memory can address.
const MAX_MEMORY: u64 = 4 << 30;
/// Below this a compile cannot even start its engine.
const MIN_COMPILE_MEMORY: u64 = 64 << 20;
/// The most outbound HTTP requests one attempt may be allowed in flight: each holds a
/// connection and its buffers on the host.
const MAX_IN_FLIGHT: i64 = 1024;

/// Parses `text`, applies the environment overrides `vars`, and validates the result.
pub(super) fn build(
    text: &str,
    origin: &Path,
    vars: Vec<(String, String)>,
) -> Result<Config, ConfigError> {
    let mut origins = Origins::new(origin, text);
    let mut root = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        at: origins.locate(&e.span().unwrap_or(0..0)),
        message: e.message().to_owned(),
    })?;
    env::apply(root.get_mut(), &vars, &mut origins)?;
    let tree = root.get_ref().clone();
    let raw = RawConfig::deserialize(toml::de::Deserializer::from(root))
        .map_err(|e| origins.deserialize_error(&tree, &e))?;
    let base = origin.parent().unwrap_or(Path::new("")).to_owned();
    Checker {
        origins: &origins,
        base,
    }
    .config(raw, origin)
}

/// Validation state: where values came from and what relative paths resolve against.
pub(super) struct Checker<'a> {
    pub(super) origins: &'a Origins<'a>,
    base: PathBuf,
}

impl Checker<'_> {
    fn config(&self, raw: RawConfig, origin: &Path) -> Result<Config, ConfigError> {
        let host = self.host(&raw.host)?;
        let store = self.store(&raw.store)?;
        let mut defaults = builtin_defaults();
        self.overrides("defaults", raw.defaults.job_keys())?
            .apply_to(&mut defaults);
        let default_retention =
            self.retention("defaults", &raw.defaults.retention, builtin_retention())?;

        let mut retention = RetentionPolicy::uniform(default_retention);
        let mut queues = BTreeMap::new();
        for (name, q) in &raw.queues {
            let prefix = format!("queues.{}", name.get_ref());
            let kept = self.retention(&prefix, &q.retention, default_retention)?;
            retention.queues.insert(name.get_ref().clone(), kept);
            let queue = self.queue(&prefix, q, host.concurrency)?;
            queues.insert(name.get_ref().clone(), queue);
        }
        queues
            .entry(DEFAULT_QUEUE.to_owned())
            .or_insert_with(|| QueueConfig {
                concurrency: host.concurrency,
                priority: 0,
                paused: false,
                grants: Grants::default(),
                overrides: Overrides::default(),
            });
        let mut handlers = BTreeMap::new();
        for (name, h) in &raw.handlers {
            let handler = self.handler(name.get_ref(), h, &queues)?;
            handlers.insert(name.get_ref().clone(), handler);
        }
        let schedules = self.schedules(&raw.schedules, &host, &queues, &handlers)?;

        Ok(Config {
            source: origin.to_owned(),
            host,
            store,
            defaults,
            retention,
            queues,
            handlers,
            schedules,
        })
    }

    /// `[queues.NAME]` (`prefix` is `queues.NAME`); an absent concurrency is the host's.
    fn queue(
        &self,
        prefix: &str,
        q: &RawQueue,
        host_concurrency: usize,
    ) -> Result<QueueConfig, ConfigError> {
        Ok(QueueConfig {
            concurrency: match &q.concurrency {
                Some(v) => self.concurrency(&format!("{prefix}.concurrency"), v)?,
                None => host_concurrency,
            },
            priority: match &q.priority {
                Some(v) => self.priority(&format!("{prefix}.priority"), v)?,
                None => 0,
            },
            paused: q.paused.as_ref().is_some_and(|p| *p.get_ref()),
            grants: self.grants(prefix, q.grants.as_ref())?,
            overrides: self.overrides(prefix, q.job_keys())?,
        })
    }

    /// The error for `key` naming `queue`, which is not one of `queues`.
    pub(super) fn undefined_queue(
        &self,
        key: String,
        queue: &Spanned<String>,
        queues: &BTreeMap<String, QueueConfig>,
    ) -> ConfigError {
        let defined: Vec<_> = queues.keys().map(|k| format!("`{k}`")).collect();
        self.origins.invalid(
            key,
            &queue.span(),
            format!(
                "queue `{}` is not defined; defined queues: {}",
                queue.get_ref(),
                defined.join(", ")
            ),
        )
    }

    /// `[handlers.NAME]`; its `queue` must be one of `queues`.
    fn handler(
        &self,
        name: &str,
        h: &RawHandler,
        queues: &BTreeMap<String, QueueConfig>,
    ) -> Result<HandlerConfig, ConfigError> {
        let prefix = format!("handlers.{name}");
        let queue = match &h.queue {
            Some(q) if !queues.contains_key(q.get_ref()) => {
                return Err(self.undefined_queue(format!("{prefix}.queue"), q, queues));
            }
            Some(q) => q.get_ref().clone(),
            None => DEFAULT_QUEUE.to_owned(),
        };
        Ok(HandlerConfig {
            queue,
            grants: self.grants(&prefix, h.grants.as_ref())?,
            overrides: self.overrides(&prefix, h.job_keys())?,
        })
    }

    fn host(&self, raw: &RawHost) -> Result<HostConfig, ConfigError> {
        let dir = |v: &Option<Spanned<String>>, default: &str| {
            self.path(v.as_ref().map_or(default, |s| s.get_ref()))
        };
        Ok(HostConfig {
            handlers_dir: dir(&raw.handlers_dir, "handlers"),
            cache_dir: dir(&raw.cache_dir, "kiln-cache"),
            concurrency: match &raw.concurrency {
                Some(v) => self.concurrency("host.concurrency", v)?,
                None => 16,
            },
            threads: raw
                .threads
                .as_ref()
                .map(|v| self.int("host.threads", v, 1, 1024).map(|n| n as usize))
                .transpose()?,
            shutdown_grace: self.duration_or("host.shutdown_grace", &raw.shutdown_grace, 10)?,
            lease: self
                .positive_duration("host.lease", &raw.lease)?
                .unwrap_or(secs(30)),
            unknown_handler_grace: self.duration_or(
                "host.unknown_handler_grace",
                &raw.unknown_handler_grace,
                300,
            )?,
            compile_timeout: self
                .positive_duration("host.compile_timeout", &raw.compile_timeout)?
                .unwrap_or(compiler::DEFAULT_TIME),
            compile_memory: self
                .at_least(
                    "host.compile_memory",
                    &raw.compile_memory,
                    MIN_COMPILE_MEMORY,
                )?
                .unwrap_or(compiler::DEFAULT_MEMORY),
            max_handler_size: self
                .at_least("host.max_handler_size", &raw.max_handler_size, 1)?
                .unwrap_or(compiler::DEFAULT_MAX_SIZE),
        })
    }

    fn store(&self, raw: &RawStore) -> Result<StoreConfig, ConfigError> {
        let durability = match &raw.durability {
            None => Durability::Normal,
            Some(d) => match d.get_ref().as_str() {
                "normal" => Durability::Normal,
                "full" => Durability::Full,
                other => {
                    return Err(self.origins.invalid(
                        "store.durability",
                        &d.span(),
                        format!("`{other}` is not a durability; use \"normal\" or \"full\""),
                    ));
                }
            },
        };
        let redis = match &raw.backend {
            None => raw.url.is_some() || raw.nodes.is_some(),
            Some(b) if b.get_ref() == "redis" => true,
            Some(b) if b.get_ref() == "embedded" => false,
            Some(b) => {
                return Err(self.origins.invalid(
                    "store.backend",
                    &b.span(),
                    format!(
                        "`{}` is not a backend; use \"embedded\" or \"redis\"",
                        b.get_ref()
                    ),
                ));
            }
        };
        if redis {
            let mut target = self.redis(raw)?;
            target.ca_file = raw.ca_file.as_ref().map(|file| self.path(file.get_ref()));
            return Ok(StoreConfig::Redis(target));
        }
        let stray = [
            ("store.url", raw.url.as_ref().map(Spanned::span)),
            ("store.nodes", raw.nodes.as_ref().map(Spanned::span)),
            ("store.ca_file", raw.ca_file.as_ref().map(Spanned::span)),
        ];
        if let Some((key, Some(span))) = stray.into_iter().find(|(_, s)| s.is_some()) {
            return Err(self.origins.invalid(
                key,
                &span,
                "only the redis backend uses it, but `store.backend` is \"embedded\"",
            ));
        }
        let path = self.path(raw.path.as_ref().map_or("kiln.db", |p| p.get_ref()));
        Ok(StoreConfig::Embedded { path, durability })
    }

    fn redis(&self, raw: &RawStore) -> Result<RedisTarget, ConfigError> {
        match (&raw.url, &raw.nodes) {
            (Some(_), Some(nodes)) => Err(self.origins.invalid(
                "store.nodes",
                &nodes.span(),
                "`store.url` and `store.nodes` are mutually exclusive; set one",
            )),
            (Some(url), None) => {
                self.redis_url("store.url", url)?;
                Ok(RedisTarget::server(url.get_ref()))
            }
            (None, Some(nodes)) if nodes.get_ref().is_empty() => Err(self.origins.invalid(
                "store.nodes",
                &nodes.span(),
                "a cluster needs at least one node URL",
            )),
            (None, Some(nodes)) => {
                for node in nodes.get_ref() {
                    self.redis_url("store.nodes", node)?;
                }
                let urls = nodes.get_ref().iter().map(|n| n.get_ref().clone());
                Ok(RedisTarget::cluster(urls))
            }
            (None, None) => Err(self.origins.invalid(
                "store.backend",
                &raw.backend.as_ref().map_or(0..0, Spanned::span),
                "the redis backend needs `store.url` or `store.nodes`",
            )),
        }
    }

    fn redis_url(&self, key: &str, url: &Spanned<String>) -> Result<(), ConfigError> {
        let text = url.get_ref();
        let host = text
            .strip_prefix("redis://")
            .or_else(|| text.strip_prefix("rediss://"));
        match host {
            Some(rest) if !rest.is_empty() => Ok(()),
            _ => Err(self.origins.invalid(
                key,
                &url.span(),
                format!("`{text}` is not a Redis URL; it must start with redis:// or rediss:// and name a host"),
            )),
        }
    }

    /// The per-job keys of one table, each checked.
    fn overrides(&self, prefix: &str, keys: JobKeys<'_>) -> Result<Overrides, ConfigError> {
        let key = |name: &str| format!("{prefix}.{name}");
        let mut o = Overrides {
            max_attempts: match keys.max_attempts {
                Some(v) => Some(self.int(&key("max_attempts"), v, 1, u32::MAX.into())? as u32),
                None => None,
            },
            timeout: self.positive_duration(&key("timeout"), keys.timeout)?,
            memory: self.memory(&key("memory"), keys.memory)?,
            fuel: self.fuel(&key("fuel"), keys.fuel)?,
            max_result: self
                .size(&key("max_result"), keys.max_result)?
                .map(to_usize),
            max_payload: self
                .size(&key("max_payload"), keys.max_payload)?
                .map(to_usize),
            max_log: self.size(&key("max_log"), keys.max_log)?.map(to_usize),
            http_max_in_flight: keys
                .http_max_in_flight
                .as_ref()
                .map(|v| self.int(&key("http_max_in_flight"), v, 1, MAX_IN_FLIGHT))
                .transpose()?
                .map(|n| n as usize),
            http_connect_timeout: self
                .positive_duration(&key("http_connect_timeout"), keys.http_connect_timeout)?,
            ..Overrides::default()
        };
        if let Some(b) = keys.backoff {
            self.backoff(prefix, b, &mut o)?;
        }
        Ok(o)
    }

    /// A table's `backoff = {..}`: each key checked, `max` not below `initial` when the
    /// table sets both (across tables the delay is clamped to `max` instead).
    fn backoff(&self, prefix: &str, b: &RawBackoff, o: &mut Overrides) -> Result<(), ConfigError> {
        let key = |name: &str| format!("{prefix}.backoff.{name}");
        o.backoff_initial = self.positive_duration(&key("initial"), &b.initial)?;
        o.backoff_max = self.positive_duration(&key("max"), &b.max)?;
        if let (Some(i), Some(m), Some(max)) = (o.backoff_initial, o.backoff_max, &b.max)
            && m < i
        {
            return Err(self.origins.invalid(
                key("max"),
                &max.span(),
                "must not be less than `backoff.initial`",
            ));
        }
        if let Some(j) = &b.jitter
            && !(0.0..=1.0).contains(j.get_ref())
        {
            return Err(self.origins.invalid(
                key("jitter"),
                &j.span(),
                format!("{} is outside 0.0..=1.0", j.get_ref()),
            ));
        }
        o.backoff_jitter = b.jitter.as_ref().map(|j| *j.get_ref());
        Ok(())
    }

    fn retention(
        &self,
        prefix: &str,
        raw: &Option<RawRetention>,
        base: Retention,
    ) -> Result<Retention, ConfigError> {
        let Some(raw) = raw else { return Ok(base) };
        let keep = |side: &str, raw: &Option<RawKeep>, base: Keep| -> Result<Keep, ConfigError> {
            let Some(raw) = raw else { return Ok(base) };
            let key = |name: &str| format!("{prefix}.retention.{side}.{name}");
            Ok(Keep {
                count: match &raw.count {
                    Some(v) => self.int(&key("count"), v, 0, i64::MAX)?.unsigned_abs(),
                    None => base.count,
                },
                age: match &raw.age {
                    Some(v) => self.duration(&key("age"), v)?,
                    None => base.age,
                },
            })
        };
        Ok(Retention {
            succeeded: keep("succeeded", &raw.succeeded, base.succeeded)?,
            failed: keep("failed", &raw.failed, base.failed)?,
            cancelled: keep("cancelled", &raw.cancelled, base.cancelled)?,
        })
    }

    /// `grants` of a queue or handler (`prefix` is `queues.NAME` or `handlers.NAME`).
    fn grants(&self, prefix: &str, raw: Option<&RawGrants>) -> Result<Grants, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Grants::default());
        };
        let mut env = BTreeMap::new();
        for (name, value) in &raw.env {
            if let Err(reason) = capabilities::env::check(name.get_ref(), value.get_ref()) {
                return Err(self.origins.invalid(
                    format!("{prefix}.grants.env.{}", name.get_ref()),
                    &name.span(),
                    reason,
                ));
            }
            env.insert(name.get_ref().clone(), value.get_ref().clone());
        }
        let dir = raw.dir.as_ref().map(|d| self.path(d.get_ref()));
        let mut http = capabilities::http::HttpGrant {
            origins: self.entries(prefix, "http", &raw.http, capabilities::http::check)?,
            ca_files: Vec::new(),
        };
        if let Some(file) = &raw.http_ca_file {
            let path = self.path(file.get_ref());
            capabilities::http::check_ca_file(&path).map_err(|reason| {
                let key = format!("{prefix}.grants.http_ca_file");
                self.origins.invalid(key, &file.span(), reason)
            })?;
            http.ca_files.push(path);
        }
        let tcp = self.entries(prefix, "tcp", &raw.tcp, capabilities::tcp::check)?;
        Ok(Grants {
            env,
            dir,
            http,
            tcp,
        })
    }

    /// Each entry of the list `grants.NAME`, parsed by its capability's `check`; an error
    /// names the entry as `PREFIX.grants.NAME[i]`.
    fn entries<T>(
        &self,
        prefix: &str,
        name: &str,
        raw: &[Spanned<String>],
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        raw.iter()
            .enumerate()
            .map(|(i, entry)| {
                check(entry.get_ref()).map_err(|reason| {
                    let key = format!("{prefix}.grants.{name}[{i}]");
                    self.origins.invalid(key, &entry.span(), reason)
                })
            })
            .collect()
    }

    fn concurrency(&self, key: &str, v: &Spanned<i64>) -> Result<usize, ConfigError> {
        let n = self.int(key, v, 1, i64::from(u32::MAX))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn priority(&self, key: &str, v: &Spanned<i64>) -> Result<i32, ConfigError> {
        Ok(self.int(key, v, i32::MIN.into(), i32::MAX.into())? as i32)
    }

    fn int(&self, key: &str, v: &Spanned<i64>, min: i64, max: i64) -> Result<i64, ConfigError> {
        let n = *v.get_ref();
        if n < min {
            Err(self
                .origins
                .invalid(key, &v.span(), format!("{n} is less than {min}")))
        } else if n > max {
            Err(self
                .origins
                .invalid(key, &v.span(), format!("{n} is more than {max}")))
        } else {
            Ok(n)
        }
    }

    fn duration(&self, key: &str, v: &Spanned<Scalar>) -> Result<Duration, ConfigError> {
        units::duration(v.get_ref()).map_err(|reason| self.origins.invalid(key, &v.span(), reason))
    }

    fn duration_or(
        &self,
        key: &str,
        v: &Option<Spanned<Scalar>>,
        default_secs: u64,
    ) -> Result<Duration, ConfigError> {
        v.as_ref()
            .map_or(Ok(secs(default_secs)), |v| self.duration(key, v))
    }

    fn positive_duration(
        &self,
        key: &str,
        v: &Option<Spanned<Scalar>>,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        match self.duration(key, v)? {
            Duration::ZERO => Err(self
                .origins
                .invalid(key, &v.span(), "must be longer than zero")),
            d => Ok(Some(d)),
        }
    }

    /// A size of at least `min` bytes.
    fn at_least(
        &self,
        key: &str,
        v: &Option<Spanned<Scalar>>,
        min: u64,
    ) -> Result<Option<u64>, ConfigError> {
        let size = self.size(key, v)?;
        if let (Some(bytes), Some(v)) = (size, v)
            && bytes < min
        {
            return Err(self.origins.invalid(
                key,
                &v.span(),
                format!("{bytes} bytes is less than {min}"),
            ));
        }
        Ok(size)
    }

    fn size(&self, key: &str, v: &Option<Spanned<Scalar>>) -> Result<Option<u64>, ConfigError> {
        v.as_ref()
            .map(|v| {
                units::size(v.get_ref())
                    .map_err(|reason| self.origins.invalid(key, &v.span(), reason))
            })
            .transpose()
    }

    fn memory(&self, key: &str, v: &Option<Spanned<Scalar>>) -> Result<Option<u64>, ConfigError> {
        let Some(bytes) = self.size(key, v)? else {
            return Ok(None);
        };
        let span = v.as_ref().map_or(0..0, Spanned::span);
        self.within(key, &span, bytes, MIN_MEMORY..=MAX_MEMORY)
            .map(Some)
    }

    fn within(
        &self,
        key: &str,
        span: &Range<usize>,
        bytes: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        if range.contains(&bytes) {
            return Ok(bytes);
        }
        Err(self.origins.invalid(
            key,
            span,
            format!(
                "{bytes} bytes is outside {}KiB..={}GiB (one wasm page up to all a 32-bit memory addresses)",
                range.start() >> 10,
                range.end() >> 30
            ),
        ))
    }

    /// `fuel`: a positive integer budget, or `"unlimited"`.
    fn fuel(
        &self,
        key: &str,
        v: &Option<Spanned<Scalar>>,
    ) -> Result<Option<Option<u64>>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        match v.get_ref() {
            Scalar::Int(n) if *n > 0 => Ok(Some(Some(n.unsigned_abs()))),
            Scalar::Text(t) if t == "unlimited" => Ok(Some(None)),
            Scalar::Int(n) => Err(self.origins.invalid(
                key,
                &v.span(),
                format!("{n} is not a positive fuel budget"),
            )),
            Scalar::Text(t) => Err(self.origins.invalid(
                key,
                &v.span(),
                format!("`{t}` is not a fuel budget; use a positive integer or \"unlimited\""),
            )),
        }
    }

    /// `path` resolved against the config file's directory unless absolute.
    fn path(&self, path: &str) -> PathBuf {
        self.base.join(path)
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

fn builtin_defaults() -> JobSettings {
    JobSettings {
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        backoff: Backoff {
            initial: secs(1),
            max: secs(300),
            jitter: 0.2,
        },
        limits: JobLimits::default(),
        grants: Grants::default(),
    }
}

/// Succeeded jobs are kept a day, failed and cancelled ones a week, each up to a count per
/// queue.
fn builtin_retention() -> Retention {
    let week = Keep {
        count: 10_000,
        age: secs(7 * 86_400),
    };
    Retention {
        succeeded: Keep {
            count: 1000,
            age: secs(86_400),
        },
        failed: week,
        cancelled: week,
    }
}
