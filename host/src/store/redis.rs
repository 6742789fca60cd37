//! The Redis job store: many hosts on many machines share queues kept in one Redis server or
//! Redis Cluster.
//!
//! Rules this module keeps:
//! - Every change to jobs is one Lua script (`redis/*.lua`, run with EVALSHA), so it is atomic
//!   and a crashed host never leaves a job half-moved. `lib.lua` holds the helpers and is
//!   prepended to every script except `enqueue.lua`, the standalone producers' contract.
//! - All keys of a queue share one hash tag (`kiln:{q:NAME}:...`), so every script touches a
//!   single cluster slot and runs unchanged on Redis Cluster. The price: a batch (`enqueue`,
//!   `settle`, `renew`) is atomic per queue, not across queues, and unique keys are unique
//!   within their queue.
//! - Job ids are `QUEUE/UUIDv7` so `get(id)` knows the queue's keys without a lookup; the
//!   queue is everything before the last `/`.
//! - Idle hosts do not poll: scripts that add or requeue a job publish the queue's name on
//!   `kiln:wake`, and `wait` blocks on that subscription (a dedicated RESP3 connection opened
//!   with the store; on a cluster, to the first node that answers, since classic pub/sub
//!   messages reach every node).
//! - Redis going away is an error (`StoreError::Backend`), never a panic; both connection
//!   kinds reconnect with backoff on the next call, and scripts are reloaded when a restarted
//!   server has forgotten them.
//!
//! - A job is one string key holding its record, a MessagePack map. A claim does not rewrite
//!   it: a claimed job is active through its queue's `leases` hash and `active` set, and
//!   readers lay the lease over the record (`Claim`).
//!
//! The key layout and the job record format are documented for producers in the README
//! section "The Redis job format".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, PushInfo, PushKind, RedisFuture, Script, ScriptInvocation,
    TlsCertificates, Value,
};
use rmpv::ValueRef;
use tokio::sync::Notify;

use super::{
    AttemptRecord, CancelOutcome, Enqueued, Job, JobState, JobStore, Lease, ListFilter, NewJob,
    Page, Progress, QueueCounts, RenewReport, RetentionPolicy, RetryTarget, SettleAction,
    Settlement, StoreError, StoreResult, Timestamp,
};

/// Key prefix used when the configuration does not name one.
pub const DEFAULT_NAMESPACE: &str = "kiln";

/// Most jobs one `claim` call takes. Bounds how long one claim script holds Redis (scripts
/// block the server); a worker asking for more simply gets this many.
pub const MAX_CLAIM_BATCH: usize = 1_000;

/// Most due scheduled jobs, and most expired leases, one script call moves. Keeps a backlog
/// of thousands of delayed jobs from stalling the server in one script; the rest move on the
/// next call.
const MOVE_BATCH: usize = 1_000;

/// Largest claimed record a handle settles by sending the new record itself. The claimed
/// record goes back with it for the check, so a big payload would cross the network twice
/// more; bigger records are settled by the script.
const HOST_SETTLE_MAX_RECORD: usize = 64 * 1024;

/// How long connecting to a Redis node may take before the attempt fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one command may wait for its reply. Longer than any script should run; a dead
/// server is detected by this instead of hanging a worker.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconnect attempts (exponential backoff from `RECONNECT_MIN_DELAY` up to
/// `RECONNECT_MAX_DELAY`) before a call fails with `StoreError::Backend`. The next call
/// starts reconnecting again, so a host rides out a Redis restart of any length.
const RECONNECT_ATTEMPTS: usize = 6;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// The ten per-queue keys every script receives as KEYS[1..10], in this order.
const QUEUE_KEYS: [&str; 10] = [
    "waiting",
    "scheduled",
    "active",
    "succeeded",
    "failed",
    "cancelled",
    "all",
    "unique",
    "paused",
    "leases",
];

/// Where the Redis store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// One server or a cluster.
    pub endpoint: RedisEndpoint,
    /// Prefix of every key and of the wake channel, so several Kiln deployments (or test
    /// runs) can share one Redis without seeing each other's jobs.
    pub namespace: String,
    /// For `rediss://`: a PEM file of the certificate authority to trust instead of the
    /// system's roots (a private CA, a self-signed server).
    pub ca_file: Option<PathBuf>,
}

/// A Redis deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One server: `redis://[user:pass@]host:port[/db]`, or `rediss://` for TLS.
    Server(String),
    /// Redis Cluster: URLs of some of its nodes; the rest are discovered.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// One server at `url`, with the default namespace.
    pub fn server(url: impl Into<String>) -> Self {
        RedisTarget {
            endpoint: RedisEndpoint::Server(url.into()),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            ca_file: None,
        }
    }

    /// A cluster reached through `nodes`, with the default namespace.
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        RedisTarget {
            endpoint: RedisEndpoint::Cluster(nodes.into_iter().map(Into::into).collect()),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            ca_file: None,
        }
    }

    /// The same target with another key namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The same target trusting the certificate authority in the PEM file `path` for TLS.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The CA to trust for TLS, read from `ca_file`, if one is set.
    fn certificates(&self) -> Result<Option<TlsCertificates>, redis::RedisError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read the CA file",
                format!("`{}`: {e}", path.display()),
            ))
        })?;
        Ok(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// A client for one server URL, trusting `ca_file` when set.
    fn client(&self, url: impl IntoConnectionInfo) -> Result<redis::Client, redis::RedisError> {
        install_tls_provider();
        match self.certificates()? {
            Some(certificates) => redis::Client::build_with_tls(url, certificates),
            None => redis::Client::open(url),
        }
    }

    /// The node URLs, for error messages and the wake subscription.
    fn urls(&self) -> Vec<String> {
        match &self.endpoint {
            RedisEndpoint::Server(url) => vec![url.clone()],
            RedisEndpoint::Cluster(nodes) => nodes.clone(),
        }
    }
}

/// The compiled scripts, hashed once per process.
struct Scripts {
    enqueue: Script,
    claim: Script,
    renew: Script,
    settle: Script,
    progress: Script,
    recover: Script,
    cancel: Script,
    retry: Script,
    clear: Script,
    prune: Script,
    quarantine: Script,
}

const LIB: &str = include_str!("redis/lib.lua");

/// A script with `lib.lua` in front of it.
fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("redis/enqueue.lua")),
    claim: with_lib(include_str!("redis/claim.lua")),
    renew: with_lib(include_str!("redis/renew.lua")),
    settle: with_lib(include_str!("redis/settle.lua")),
    progress: with_lib(include_str!("redis/progress.lua")),
    recover: with_lib(include_str!("redis/recover.lua")),
    cancel: with_lib(include_str!("redis/cancel.lua")),
    retry: with_lib(include_str!("redis/retry.lua")),
    clear: with_lib(include_str!("redis/clear.lua")),
    prune: with_lib(include_str!("redis/prune.lua")),
    quarantine: with_lib(include_str!("redis/quarantine.lua")),
});

/// A multiplexed connection to a server or a cluster. Both kinds reconnect by themselves and
/// are cheap to clone; clones share the socket(s).
#[derive(Clone)]
enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Maps a Redis error to `StoreError::Backend`, building the context only on failure.
fn backend(context: impl Into<String>) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Backend {
        context: context.into(),
        source: Box::new(source),
    }
}

/// A reply that did not have the shape a script promises.
fn bad_reply(context: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Backend {
        context: context.to_owned(),
        source: detail.into().into(),
    }
}

/// The queue a Redis job id belongs to (everything before the last `/`).
pub fn queue_of(id: &str) -> Option<&str> {
    id.rsplit_once('/').map(|(queue, _)| queue)
}

/// The time-ordered part of an id (after the last `/`), used to sort across queues.
fn order_key(id: &str) -> &str {
    id.rsplit_once('/').map_or(id, |(_, uuid)| uuid)
}

/// The names of one queue's keys.
struct QueueKeys<'a> {
    /// `<namespace>:{q:<queue>}:`
    prefix: String,
    queue: &'a str,
}

impl<'a> QueueKeys<'a> {
    fn new(namespace: &str, queue: &'a str) -> Self {
        QueueKeys {
            prefix: format!("{namespace}:{{q:{queue}}}:"),
            queue,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }
}

/// Who is blocked in `wait`, per queue. Each waiter owns a `Notify`; a wake-up for a queue
/// calls `notify_one` on every waiter registered for it, which stores a permit if the waiter
/// has not started awaiting yet, so a wake-up between registering and awaiting is not lost.
#[derive(Default)]
struct Wakers {
    by_queue: Mutex<HashMap<String, Vec<Arc<Notify>>>>,
}

impl Wakers {
    fn register(&self, queues: &[String], waiter: &Arc<Notify>) {
        let mut map = lock(&self.by_queue);
        for queue in queues {
            map.entry(queue.clone())
                .or_default()
                .push(Arc::clone(waiter));
        }
    }

    fn unregister(&self, queues: &[String], waiter: &Arc<Notify>) {
        let mut map = lock(&self.by_queue);
        for queue in queues {
            if let Some(list) = map.get_mut(queue) {
                list.retain(|other| !Arc::ptr_eq(other, waiter));
                if list.is_empty() {
                    map.remove(queue);
                }
            }
        }
    }

    fn wake(&self, queue: &str) {
        let map = lock(&self.by_queue);
        for waiter in map.get(queue).into_iter().flatten() {
            waiter.notify_one();
        }
    }

    /// After the subscription dropped, wake everyone: messages may have been missed.
    fn wake_all(&self) {
        let map = lock(&self.by_queue);
        for waiter in map.values().flatten() {
            waiter.notify_one();
        }
    }

    /// Handles one message pushed on the wake subscription.
    fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message => {
                if let Some(Value::BulkString(queue)) = push.data.get(1) {
                    self.wake(&String::from_utf8_lossy(queue));
                }
            }
            PushKind::Disconnection | PushKind::Subscribe => self.wake_all(),
            _ => {}
        }
    }
}

/// A waiter registered for some queues; unregisters when `wait` returns or is dropped.
struct Registration<'a> {
    wakers: &'a Wakers,
    queues: &'a [String],
    waiter: Arc<Notify>,
}

impl<'a> Registration<'a> {
    fn new(wakers: &'a Wakers, queues: &'a [String]) -> Self {
        let waiter = Arc::new(Notify::new());
        wakers.register(queues, &waiter);
        Registration {
            wakers,
            queues,
            waiter,
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.wakers.unregister(self.queues, &self.waiter);
    }
}

/// The Redis job store. Cheap to clone; clones share connections. It is also the client
/// producers in Rust use: open it and call `enqueue` / `get`.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: RedisTarget,
    /// Commands and scripts.
    conn: Conn,
    /// The dedicated RESP3 connection subscribed to the wake channel. Opened with the store,
    /// so a `wait` that registers before its first await cannot miss a wake-up.
    subscriber: ConnectionManager,
    wakers: Arc<Wakers>,
    /// Queues this handle has already added to the `<namespace>:queues` registry, so enqueue
    /// pays for the `SADD` once per queue.
    registered: Mutex<HashSet<String>>,
    /// The jobs this handle claimed and has not settled, by id (see `Claimed`).
    claims: Mutex<HashMap<String, Claimed>>,
}

/// Reconnect and timeout settings shared by the command and subscriber connections.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(RECONNECT_ATTEMPTS)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
}

/// Makes ring the TLS provider of the process (for `rediss://`), once; a provider installed
/// before (by an embedding program) is kept.
fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

async fn connect(target: &RedisTarget) -> StoreResult<Conn> {
    let context = || format!("connect to redis at {}", target.urls().join(", "));
    match &target.endpoint {
        RedisEndpoint::Server(url) => {
            let client = target.client(url.as_str()).map_err(backend(context()))?;
            let manager = ConnectionManager::new_with_config(client, manager_config())
                .await
                .map_err(backend(context()))?;
            Ok(Conn::Server(manager))
        }
        RedisEndpoint::Cluster(nodes) => {
            install_tls_provider();
            let mut builder =
                redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str));
            if let Some(certificates) = target.certificates().map_err(backend(context()))? {
                builder = builder.certs(certificates);
            }
            let client = builder
                .retries(u32::try_from(RECONNECT_ATTEMPTS).unwrap_or(u32::MAX))
                .min_retry_wait(u64::try_from(RECONNECT_MIN_DELAY.as_millis()).unwrap_or(50))
                .max_retry_wait(u64::try_from(RECONNECT_MAX_DELAY.as_millis()).unwrap_or(2_000))
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()
                .map_err(backend(context()))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(backend(context()))?;
            Ok(Conn::Cluster(conn))
        }
    }
}

/// Opens the wake subscription on the first node that answers. Classic pub/sub messages
/// reach every node of a cluster, so any node will do.
async fn subscribe(target: &RedisTarget, wakers: &Arc<Wakers>) -> StoreResult<ConnectionManager> {
    let channel = format!("{}:wake", target.namespace);
    let mut last_error = None;
    for url in target.urls() {
        let wakers = Arc::clone(wakers);
        let sender = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
            wakers.on_push(push);
            Ok(())
        };
        let attempt = async {
            let info = url.as_str().into_connection_info()?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let client = target.client(info.set_redis_settings(settings))?;
            let config = manager_config()
                .set_push_sender(sender)
                .set_automatic_resubscription();
            let mut manager = ConnectionManager::new_with_config(client, config).await?;
            manager.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(manager)
        };
        match attempt.await {
            Ok(manager) => return Ok(manager),
            Err(e) => last_error = Some(e),
        }
    }
    let context = format!("subscribe to `{channel}`");
    Err(match last_error {
        Some(e) => backend(context)(e),
        None => bad_reply(&context, "no redis node urls configured"),
    })
}

impl RedisStore {
    /// Connects to `target`. Fails with `StoreError::Backend` if no node answers; after that,
    /// lost connections are re-established by later calls.
    pub async fn open(target: RedisTarget) -> StoreResult<Self> {
        let conn = connect(&target).await?;
        let wakers = Arc::new(Wakers::default());
        let subscriber = subscribe(&target, &wakers).await?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                target,
                conn,
                subscriber,
                wakers,
                registered: Mutex::new(HashSet::new()),
                claims: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Where this store lives.
    pub fn target(&self) -> &RedisTarget {
        &self.inner.target
    }

    /// The Redis key of job `id`'s record (see the README's Redis job format), or `None` if
    /// `id` names no queue.
    pub fn job_key(&self, id: &str) -> Option<String> {
        queue_of(id).map(|queue| self.keys(queue).job(id))
    }

    /// The Redis key `name` (`waiting`, `scheduled`, ...) of `queue`.
    pub fn queue_key(&self, queue: &str, name: &str) -> String {
        self.keys(queue).key(name)
    }

    fn keys<'a>(&self, queue: &'a str) -> QueueKeys<'a> {
        QueueKeys::new(&self.inner.target.namespace, queue)
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    fn registry_key(&self) -> String {
        format!("{}:queues", self.inner.target.namespace)
    }

    fn wake_channel(&self) -> String {
        format!("{}:wake", self.inner.target.namespace)
    }

    /// Starts an invocation of `script` on `queue` with the common KEYS and ARGV.
    fn invocation<'s>(
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

    /// Adds `queue` to the registry that `counts`, `list` and `recover` walk.
    async fn register_queue(&self, queue: &str) -> StoreResult<()> {
        let known = lock(&self.inner.registered).contains(queue);
        if known {
            return Ok(());
        }
        redis::cmd("SADD")
            .arg(self.registry_key())
            .arg(queue)
            .exec_async(&mut self.conn())
            .await
            .map_err(backend(format!("register queue `{queue}`")))?;
        lock(&self.inner.registered).insert(queue.to_owned());
        Ok(())
    }

    /// Every queue that ever had a job or was paused, sorted.
    async fn queues(&self) -> StoreResult<Vec<String>> {
        let mut queues: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.registry_key())
            .query_async(&mut self.conn())
            .await
            .map_err(backend("list queues"))?;
        queues.sort();
        Ok(queues)
    }
}

/// The claim a `leases` entry and the `active` set describe, laid over a job's record.
struct Claim {
    owner: String,
    claimed_at: Timestamp,
    expires_at: Timestamp,
}

impl Claim {
    /// Makes the record's `job` the active job it is under this claim: a claim does not
    /// rewrite the record, so the attempt it runs is one more than the record says.
    fn lay_over(self, job: &mut Job) {
        job.state = JobState::Active;
        job.attempts = job.attempts.saturating_add(1);
        job.updated_at = job.updated_at.max(self.claimed_at);
        job.lease = Some(Lease {
            owner: self.owner,
            expires_at: self.expires_at,
        });
    }

    /// From a `leases` value (`<claimed_at>:<owner>`) and the `active` score.
    fn parse(value: &[u8], expires_at: f64) -> Option<Self> {
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
struct Record<'a> {
    fields: Vec<(&'a str, ValueRef<'a>)>,
}

impl<'a> Record<'a> {
    /// Reads the map; a value that is not a map of text keys is an error.
    fn parse(mut bytes: &'a [u8]) -> Result<Self, String> {
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

    fn take(&mut self, field: &str) -> Option<ValueRef<'a>> {
        let at = self.fields.iter().position(|(name, _)| *name == field)?;
        match self.fields.swap_remove(at).1 {
            ValueRef::Nil => None,
            value => Some(value),
        }
    }

    fn bytes_opt(&mut self, field: &str) -> Result<Option<Vec<u8>>, String> {
        match self.take(field) {
            None => Ok(None),
            Some(ValueRef::String(text)) => Ok(Some(text.as_bytes().to_vec())),
            Some(ValueRef::Binary(bytes)) => Ok(Some(bytes.to_vec())),
            Some(_) => Err(format!("field `{field}` is not a string")),
        }
    }

    fn bytes(&mut self, field: &str) -> Result<Vec<u8>, String> {
        self.bytes_opt(field)?
            .ok_or_else(|| format!("field `{field}` is missing"))
    }

    fn text_opt(&mut self, field: &str) -> Result<Option<String>, String> {
        self.bytes_opt(field)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| format!("field `{field}` is not utf-8"))
            })
            .transpose()
    }

    fn text(&mut self, field: &str) -> Result<String, String> {
        self.text_opt(field)?
            .ok_or_else(|| format!("field `{field}` is missing"))
    }

    fn number_opt<T: TryFrom<i64>>(&mut self, field: &str) -> Result<Option<T>, String> {
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

    fn number<T: TryFrom<i64>>(&mut self, field: &str) -> Result<T, String> {
        self.number_opt(field)?
            .ok_or_else(|| format!("field `{field}` is missing"))
    }

    fn time_opt(&mut self, field: &str) -> Result<Option<Timestamp>, String> {
        Ok(self.number_opt(field)?.map(Timestamp))
    }

    fn time(&mut self, field: &str) -> Result<Timestamp, String> {
        self.number(field).map(Timestamp)
    }

    /// The job this record describes, active under `claim` when it is claimed, or why the
    /// record does not describe a job.
    fn job(mut self, claim: Option<Claim>) -> Result<Job, String> {
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
fn claimed_job(id: &str, queue: &str, bytes: &[u8], claim: Claim) -> Result<Job, String> {
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
struct Claimed {
    owner: String,
    claimed_at: Timestamp,
    /// The record as the claim read it.
    record: Vec<u8>,
    /// The job's unique key, which a settlement that deletes the job releases.
    unique_key: Option<String>,
}

/// `history` (a JSON array) with one JSON attempt record appended, as `appended` in lib.lua
/// does it, or `None` for a history that does not look like an array.
fn appended(history: &str, record: &str) -> Option<String> {
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
fn settled_record(
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
fn decode(id: &str, bytes: &[u8], claim: Option<Claim>) -> StoreResult<Job> {
    Record::parse(bytes)
        .and_then(|record| record.job(claim))
        .map_err(|reason| StoreError::Corrupt {
            id: id.to_owned(),
            reason,
        })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Logs the `id, reason` pairs a script reported for broken entries it moved aside.
fn log_report(queue: &str, report: &[String]) {
    for pair in report.chunks(2) {
        if let [id, reason] = pair {
            tracing::error!(queue, job = %id, "broken job entry in redis: {reason}");
        }
    }
}

/// Settlement arguments for `settle.lua`: action, at, text, attempt JSON.
fn settle_args(settlement: &Settlement) -> StoreResult<(&'static str, String, Vec<u8>, String)> {
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

/// Groups items by the queue their id names, keeping input order within each group. Items
/// whose id names no queue are returned separately.
fn group_by_queue<T>(
    items: impl IntoIterator<Item = T>,
    id: impl Fn(&T) -> &str,
) -> (BTreeMap<String, Vec<T>>, Vec<T>) {
    let mut groups: BTreeMap<String, Vec<T>> = BTreeMap::new();
    let mut orphans = Vec::new();
    for item in items {
        match queue_of(id(&item)) {
            Some(queue) => groups.entry(queue.to_owned()).or_default().push(item),
            None => orphans.push(item),
        }
    }
    (groups, orphans)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl RedisStore {
    /// Enqueues jobs that all belong to `queue` in one script call.
    async fn enqueue_queue(
        &self,
        queue: &str,
        jobs: &[NewJob],
        now: Timestamp,
    ) -> StoreResult<Vec<Enqueued>> {
        self.register_queue(queue).await?;
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.enqueue, &keys, now);
        for job in jobs {
            let id = format!("{queue}/{}", uuid::Uuid::now_v7());
            invocation
                .key(keys.job(&id))
                .arg(&id)
                .arg(&job.handler)
                .arg(job.payload.as_slice())
                .arg(job.priority)
                .arg(job.run_at.map(|at| at.0.to_string()).unwrap_or_default())
                .arg(job.max_attempts)
                .arg(if job.unique_key.is_some() { "1" } else { "0" })
                .arg(job.unique_key.as_deref().unwrap_or(""));
        }
        let context = format!("enqueue jobs in queue `{queue}`");
        let reply: Vec<Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(context.clone()))?;
        let mut results = Vec::with_capacity(jobs.len());
        for pair in reply.chunks(2) {
            match pair {
                [Value::BulkString(id), Value::Int(existing)] => results.push(Enqueued {
                    id: String::from_utf8_lossy(id).into_owned(),
                    existing: *existing == 1,
                }),
                _ => return Err(bad_reply(&context, format!("unexpected reply {pair:?}"))),
            }
        }
        Ok(results)
    }

    /// Moves a claimed job the host cannot decode aside as failed, so it cannot block its
    /// queue, and logs why.
    async fn quarantine(&self, queue: &str, id: &str, reason: &str, now: Timestamp) {
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.quarantine, &keys, now);
        invocation.key(keys.job(id)).arg(id).arg(reason);
        let moved: Result<String, _> = invocation.invoke_async(&mut self.conn()).await;
        match moved {
            Ok(reason) => {
                tracing::error!(queue, job = %id, "moved a corrupt job aside as failed: {reason}")
            }
            Err(e) => {
                tracing::error!(queue, job = %id, "failed to move a corrupt job aside ({reason}): {e}")
            }
        }
    }

    /// Renews `owner`'s leases on jobs of one queue; adds to `report`.
    async fn renew_queue(
        &self,
        queue: &str,
        ids: &[&String],
        owner: &str,
        (now, expires_at): (Timestamp, Timestamp),
        report: &mut RenewReport,
    ) -> StoreResult<()> {
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.renew, &keys, now);
        invocation.arg(owner).arg(expires_at.0);
        for id in ids {
            invocation.key(keys.job(id)).arg(id.as_str());
        }
        let codes: Vec<i64> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(format!("renew leases in queue `{queue}`")))?;
        for (id, code) in ids.iter().zip(codes) {
            match code {
                0 => {
                    self.forget_claims([(id.as_str(), owner)]);
                    report.lost.push((*id).clone());
                }
                2 => report.cancel_requested.push((*id).clone()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Settles jobs of one queue in one script call; returns the stale ids.
    async fn settle_queue(
        &self,
        queue: &str,
        batch: &[Settlement],
        now: Timestamp,
    ) -> StoreResult<Vec<String>> {
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.settle, &keys, now);
        let mut unique_keys = self.unique_keys_to_release(queue, batch).await?;
        {
            let claims = lock(&self.inner.claims);
            for settlement in batch {
                let (action, at, text, record) = settle_args(settlement)?;
                let outcome = match &settlement.action {
                    SettleAction::Succeed { .. } => Some(Ok(&text[..])),
                    SettleAction::Fail { .. } => Some(Err(&text[..])),
                    _ => None,
                };
                let held = claims
                    .get(&settlement.id)
                    .filter(|claimed| claimed.owner == settlement.owner);
                let claimed = held.filter(|claimed| claimed.record.len() <= HOST_SETTLE_MAX_RECORD);
                let settled = claimed.zip(outcome).and_then(|(claimed, outcome)| {
                    let new = settled_record(claimed, outcome, &record, now)?;
                    Some((&claimed.record[..], new, claimed.unique_key.clone()))
                });
                let (claimed, new, mut unique_key) = settled.unwrap_or_default();
                if settlement.action == SettleAction::SucceedAndDelete {
                    unique_key = match held {
                        Some(claimed) => claimed.unique_key.clone(),
                        None => unique_keys.remove(&settlement.id),
                    };
                }
                invocation
                    .key(keys.job(&settlement.id))
                    .arg(&settlement.id)
                    .arg(&settlement.owner)
                    .arg(action)
                    .arg(at)
                    .arg(text)
                    .arg(record)
                    .arg(claimed)
                    .arg(new)
                    .arg(unique_key.unwrap_or_default());
            }
        }
        let stale = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(format!("settle jobs in queue `{queue}`")))?;
        self.forget_claims(batch.iter().map(|s| (s.id.as_str(), s.owner.as_str())));
        Ok(stale)
    }

    /// The unique keys of the jobs `batch` deletes that this handle did not claim (it knows
    /// the others'), read from Redis; a settlement that deletes a job releases its key. A
    /// record that is missing or unreadable has none.
    async fn unique_keys_to_release(
        &self,
        queue: &str,
        batch: &[Settlement],
    ) -> StoreResult<HashMap<String, String>> {
        let unknown: Vec<&str> = {
            let claims = lock(&self.inner.claims);
            batch
                .iter()
                .filter(|s| s.action == SettleAction::SucceedAndDelete)
                .filter(|s| claims.get(&s.id).is_none_or(|c| c.owner != s.owner))
                .map(|s| s.id.as_str())
                .collect()
        };
        if unknown.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = self.keys(queue);
        let records: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(unknown.iter().map(|id| keys.job(id)).collect::<Vec<_>>())
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("read jobs of queue `{queue}`")))?;
        let unique_key = |bytes: &[u8]| Record::parse(bytes).ok()?.text_opt("unique_key").ok()?;
        Ok(unknown
            .into_iter()
            .zip(records)
            .filter_map(|(id, record)| Some((id.to_owned(), unique_key(&record?)?)))
            .collect())
    }

    /// Drops what this handle kept of jobs that `owner` no longer holds, given as
    /// `(id, owner)`; a later claim of the same job under another owner stays.
    fn forget_claims<'a>(&self, held: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut claims = lock(&self.inner.claims);
        for (id, owner) in held {
            if claims.get(id).is_some_and(|claimed| claimed.owner == owner) {
                claims.remove(id);
            }
        }
    }

    /// Runs the reaper on one queue until it has nothing more to move.
    async fn recover_queue(&self, queue: &str, now: Timestamp) -> StoreResult<usize> {
        let keys = self.keys(queue);
        let mut total = 0;
        loop {
            let mut invocation = self.invocation(&SCRIPTS.recover, &keys, now);
            invocation.arg(MOVE_BATCH).arg(MOVE_BATCH);
            let (recovered, report): (usize, Vec<String>) = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend(format!(
                    "recover expired leases in queue `{queue}`"
                )))?;
            log_report(queue, &report);
            total += recovered;
            if recovered < MOVE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Reads jobs of one queue: their records, leases and lease expiries in one pipeline.
    /// Missing ones are skipped.
    async fn read_jobs(&self, queue: &str, ids: &[String]) -> StoreResult<Vec<Job>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        type Read = (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>, Vec<Option<f64>>);
        let (records, leases, expiries): Read = redis::pipe()
            .cmd("MGET")
            .arg(ids.iter().map(|id| keys.job(id)).collect::<Vec<_>>())
            .cmd("HMGET")
            .arg(keys.key("leases"))
            .arg(ids)
            .cmd("ZMSCORE")
            .arg(keys.key("active"))
            .arg(ids)
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("read jobs of queue `{queue}`")))?;
        let mut jobs = Vec::with_capacity(ids.len());
        for (((id, record), lease), expires_at) in ids.iter().zip(records).zip(leases).zip(expiries)
        {
            let Some(record) = record else { continue };
            let claim = lease
                .zip(expires_at)
                .and_then(|(lease, at)| Claim::parse(&lease, at));
            jobs.push(decode(id, &record, claim)?);
        }
        Ok(jobs)
    }

    /// The newest `count` ids of one queue (in `state` if given), newest first.
    async fn newest_ids(
        &self,
        queue: &str,
        state: Option<JobState>,
        count: usize,
    ) -> StoreResult<Vec<String>> {
        let keys = self.keys(queue);
        let context = format!("list jobs of queue `{queue}`");
        let stop = i64::try_from(count).unwrap_or(i64::MAX) - 1;
        let Some(state) = state else {
            return redis::cmd("ZREVRANGE")
                .arg(keys.key("all"))
                .arg(0)
                .arg(stop)
                .query_async(&mut self.conn())
                .await
                .map_err(backend(context));
        };
        // State sets are ordered for the lifecycle, not by age: sort their ids (time-ordered
        // UUIDs) here. Costs one read of the whole set, which listing is rare enough for.
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.key(state.as_str()))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(backend(context))?;
        let mut ids: Vec<String> = members
            .into_iter()
            .map(|member| match state {
                JobState::Waiting => member.get(16..).unwrap_or_default().to_owned(),
                _ => member,
            })
            .collect();
        ids.sort_by(|a, b| order_key(b).cmp(order_key(a)));
        ids.truncate(count);
        Ok(ids)
    }

    /// Whether any of `queues` is unpaused and has a waiting job.
    async fn any_ready(&self, queues: &[String]) -> StoreResult<bool> {
        for queue in queues {
            let keys = self.keys(queue);
            let (waiting, paused): (u64, bool) = redis::pipe()
                .cmd("ZCARD")
                .arg(keys.key("waiting"))
                .cmd("EXISTS")
                .arg(keys.key("paused"))
                .query_async(&mut self.conn())
                .await
                .map_err(backend("check for waiting jobs"))?;
            if waiting > 0 && !paused {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The finish time below which `queue`'s jobs in `state` exceed the newest `count`, or
    /// `None` if there are no more than `count`. Pruning below a time (rather than "all but
    /// N") never removes a job that finished after this was computed.
    async fn count_cutoff(&self, queue: &str, state: &str, count: u64) -> StoreResult<Option<i64>> {
        let key = self.keys(queue).key(state);
        let total: u64 = redis::cmd("ZCARD")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("count finished jobs of queue `{queue}`")))?;
        let excess = total.saturating_sub(count);
        if excess == 0 {
            return Ok(None);
        }
        let stop = i64::try_from(excess).unwrap_or(i64::MAX) - 1;
        let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(stop)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(backend(format!("find finished jobs of queue `{queue}`")))?;
        // The set is ordered by finish time: the last of the oldest `excess` is the cutoff.
        Ok(entries.last().map(|(_, at)| *at as i64 + 1))
    }
}

impl JobStore for RedisStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> StoreResult<Vec<Enqueued>> {
        if let Some(bad) = jobs.iter().find(|job| job.max_attempts == 0) {
            return Err(StoreError::InvalidJob {
                handler: bad.handler.clone(),
                reason: "max_attempts must be at least 1".to_owned(),
            });
        }
        let mut by_queue: BTreeMap<String, (Vec<usize>, Vec<NewJob>)> = BTreeMap::new();
        for (index, job) in jobs.into_iter().enumerate() {
            let entry = by_queue.entry(job.queue.clone()).or_default();
            entry.0.push(index);
            entry.1.push(job);
        }
        let mut results: Vec<Option<Enqueued>> = Vec::new();
        for (queue, (indices, batch)) in by_queue {
            let enqueued = self.enqueue_queue(&queue, &batch, now).await?;
            for (index, result) in indices.into_iter().zip(enqueued) {
                if results.len() <= index {
                    results.resize(index + 1, None);
                }
                results[index] = Some(result);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<Vec<Job>> {
        let max = max.min(MAX_CLAIM_BATCH);
        if max == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.claim, &keys, now);
        invocation
            .arg(max)
            .arg(owner)
            .arg((now + lease).0)
            .arg(MOVE_BATCH);
        let (claimed, report): (Vec<(String, Vec<u8>)>, Vec<String>) = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(format!("claim jobs from queue `{queue}`")))?;
        log_report(queue, &report);
        let mut jobs = Vec::with_capacity(claimed.len());
        let mut kept = Vec::with_capacity(claimed.len());
        for (id, record) in claimed {
            let claim = Claim {
                owner: owner.to_owned(),
                claimed_at: now,
                expires_at: now + lease,
            };
            match claimed_job(&id, queue, &record, claim) {
                Ok(job) => {
                    let claimed = Claimed {
                        owner: owner.to_owned(),
                        claimed_at: now,
                        record,
                        unique_key: job.unique_key.clone(),
                    };
                    kept.push((id, claimed));
                    jobs.push(job);
                }
                Err(reason) => self.quarantine(queue, &id, &reason, now).await,
            }
        }
        lock(&self.inner.claims).extend(kept);
        Ok(jobs)
    }

    async fn renew(
        &self,
        ids: &[String],
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<RenewReport> {
        let (groups, orphans) = group_by_queue(ids, |id| id.as_str());
        let mut report = RenewReport {
            lost: orphans.into_iter().cloned().collect(),
            cancel_requested: Vec::new(),
        };
        for (queue, ids) in groups {
            self.renew_queue(&queue, &ids, owner, (now, now + lease), &mut report)
                .await?;
        }
        // Report in input order, whatever order the queues were visited in.
        let position: HashMap<&String, usize> =
            ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
        for list in [&mut report.lost, &mut report.cancel_requested] {
            list.sort_by_key(|id| position.get(id).copied());
        }
        Ok(report)
    }

    async fn settle(&self, batch: Vec<Settlement>, now: Timestamp) -> StoreResult<Vec<String>> {
        let order: Vec<String> = batch.iter().map(|s| s.id.clone()).collect();
        let (groups, orphans) = group_by_queue(batch, |s| s.id.as_str());
        let mut stale_ids: Vec<String> = orphans.into_iter().map(|s| s.id).collect();
        for (queue, batch) in groups {
            stale_ids.extend(self.settle_queue(&queue, &batch, now).await?);
        }
        // Reported in input order, once per stale settlement (a job settled twice in one
        // batch has one).
        let mut left: HashMap<String, usize> = HashMap::new();
        for id in stale_ids {
            *left.entry(id).or_default() += 1;
        }
        Ok(order
            .into_iter()
            .filter(|id| match left.get_mut(id) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            })
            .collect())
    }

    async fn progress(
        &self,
        id: &str,
        owner: &str,
        progress: Progress,
        now: Timestamp,
    ) -> StoreResult<()> {
        let not_held = || StoreError::LeaseNotHeld {
            id: id.to_owned(),
            owner: owner.to_owned(),
        };
        let queue = queue_of(id).ok_or_else(not_held)?;
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.progress, &keys, now);
        invocation
            .key(keys.job(id))
            .arg(owner)
            .arg(progress.percent.min(100))
            .arg(if progress.message.is_some() { "1" } else { "0" })
            .arg(progress.message.as_deref().unwrap_or(""))
            .arg(id);
        let recorded: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(format!("record progress of job `{id}`")))?;
        if recorded == 1 {
            Ok(())
        } else {
            Err(not_held())
        }
    }

    async fn recover(&self, now: Timestamp) -> StoreResult<usize> {
        let mut total = 0;
        for queue in self.queues().await? {
            total += self.recover_queue(&queue, now).await?;
        }
        Ok(total)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Job>> {
        let Some(queue) = queue_of(id) else {
            return Ok(None);
        };
        let mut jobs = self.read_jobs(queue, &[id.to_owned()]).await?;
        Ok(jobs.pop())
    }

    async fn list(&self, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
        let queues = match filter.queue {
            Some(queue) => vec![queue],
            None => self.queues().await?,
        };
        let wanted = page.offset.saturating_add(page.limit);
        let mut candidates: Vec<(String, usize)> = Vec::new();
        for (index, queue) in queues.iter().enumerate() {
            let ids = self.newest_ids(queue, filter.state, wanted).await?;
            candidates.extend(ids.into_iter().map(|id| (id, index)));
        }
        candidates.sort_by(|a, b| order_key(&b.0).cmp(order_key(&a.0)));
        let page_ids = candidates.into_iter().skip(page.offset).take(page.limit);
        let mut by_queue: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut order = Vec::new();
        for (id, index) in page_ids {
            order.push(id.clone());
            by_queue.entry(index).or_default().push(id);
        }
        let mut jobs: HashMap<String, Job> = HashMap::new();
        for (index, ids) in by_queue {
            for job in self.read_jobs(&queues[index], &ids).await? {
                jobs.insert(job.id.clone(), job);
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|id| jobs.remove(&id))
            .collect())
    }

    async fn counts(&self) -> StoreResult<Vec<QueueCounts>> {
        let mut all = Vec::new();
        for queue in self.queues().await? {
            let keys = self.keys(&queue);
            let mut pipe = redis::pipe();
            for state in JobState::ALL {
                pipe.cmd("ZCARD").arg(keys.key(state.as_str()));
            }
            pipe.cmd("EXISTS").arg(keys.key("paused"));
            let (scheduled, waiting, active, succeeded, failed, cancelled, paused) = pipe
                .query_async(&mut self.conn())
                .await
                .map_err(backend(format!("count jobs of queue `{queue}`")))?;
            let counts = QueueCounts {
                queue,
                scheduled,
                waiting,
                active,
                succeeded,
                failed,
                cancelled,
                paused,
            };
            let total = scheduled + waiting + active + succeeded + failed + cancelled;
            if total > 0 || paused {
                all.push(counts);
            }
        }
        Ok(all)
    }

    async fn retry_failed(&self, target: RetryTarget, now: Timestamp) -> StoreResult<usize> {
        let queues = match &target {
            RetryTarget::One(id) => {
                let queue = queue_of(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
                vec![queue.to_owned()]
            }
            RetryTarget::AllFailed { queue: Some(queue) } => vec![queue.clone()],
            RetryTarget::AllFailed { queue: None } => self.queues().await?,
        };
        let mut revived = 0;
        for queue in &queues {
            let keys = self.keys(queue);
            let mut invocation = self.invocation(&SCRIPTS.retry, &keys, now);
            match &target {
                RetryTarget::One(id) => invocation.key(keys.job(id)).arg("one").arg(id),
                RetryTarget::AllFailed { .. } => invocation.arg("all"),
            };
            let (count, state): (usize, String) =
                invocation
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(backend(format!("retry failed jobs of queue `{queue}`")))?;
            if let (RetryTarget::One(id), 0) = (&target, count) {
                return Err(match state.parse::<JobState>() {
                    Ok(state) => StoreError::InvalidState {
                        id: id.clone(),
                        state,
                        action: "retry",
                    },
                    Err(_) => StoreError::NotFound(id.clone()),
                });
            }
            revived += count;
        }
        Ok(revived)
    }

    async fn cancel(&self, id: &str, now: Timestamp) -> StoreResult<CancelOutcome> {
        let queue = queue_of(id).ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let keys = self.keys(queue);
        let mut invocation = self.invocation(&SCRIPTS.cancel, &keys, now);
        invocation.key(keys.job(id)).arg(id);
        let outcome: String = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(format!("cancel job `{id}`")))?;
        match outcome.as_str() {
            "cancelled now" => Ok(CancelOutcome::Cancelled),
            "requested" => Ok(CancelOutcome::Requested),
            "missing" => Err(StoreError::NotFound(id.to_owned())),
            state => state
                .parse()
                .map(CancelOutcome::AlreadyFinished)
                .map_err(|e| StoreError::Corrupt {
                    id: id.to_owned(),
                    reason: format!("{e}"),
                }),
        }
    }

    async fn pause(&self, queue: &str) -> StoreResult<()> {
        self.register_queue(queue).await?;
        redis::cmd("SET")
            .arg(self.keys(queue).key("paused"))
            .arg(1)
            .exec_async(&mut self.conn())
            .await
            .map_err(backend(format!("pause queue `{queue}`")))
    }

    async fn resume(&self, queue: &str) -> StoreResult<()> {
        let context = format!("resume queue `{queue}`");
        redis::cmd("DEL")
            .arg(self.keys(queue).key("paused"))
            .exec_async(&mut self.conn())
            .await
            .map_err(backend(context.clone()))?;
        redis::cmd("PUBLISH")
            .arg(self.wake_channel())
            .arg(queue)
            .exec_async(&mut self.conn())
            .await
            .map_err(backend(context))
    }

    async fn clear(&self, queue: &str) -> StoreResult<usize> {
        let keys = self.keys(queue);
        self.invocation(&SCRIPTS.clear, &keys, Timestamp(0))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend(format!("clear queue `{queue}`")))
    }

    async fn prune(&self, policy: &RetentionPolicy, now: Timestamp) -> StoreResult<usize> {
        let mut deleted = 0;
        for queue in &self.queues().await? {
            let keys = self.keys(queue);
            let mut invocation = self.invocation(&SCRIPTS.prune, &keys, now);
            for (state, keep) in policy.of(queue).rules() {
                let by_age = keep.max_age().map(|age| now.0.saturating_sub(millis(age)));
                let by_count = match keep.max_count() {
                    Some(count) => self.count_cutoff(queue, state.as_str(), count).await?,
                    None => None,
                };
                let cutoff = by_age.max(by_count);
                invocation.arg(cutoff.map(|at| at.to_string()).unwrap_or_default());
            }
            let pruned: usize = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend(format!("prune finished jobs of queue `{queue}`")))?;
            deleted += pruned;
        }
        Ok(deleted)
    }

    async fn wait(&self, queues: &[String], now: Timestamp, timeout: Duration) -> StoreResult<()> {
        let mut deadline = tokio::time::Instant::now() + timeout;
        // Registered before the first await: a wake-up from here on is kept as a permit.
        let registration = Registration::new(&self.inner.wakers, queues);
        // Reconnects (and resubscribes) the subscription if it dropped since the last wait.
        redis::cmd("PING")
            .exec_async(&mut self.inner.subscriber.clone())
            .await
            .map_err(backend("check the wake subscription"))?;
        if self.any_ready(queues).await? {
            return Ok(());
        }
        match self.next_run_at(queues).await? {
            Some(at) if at <= now => return Ok(()),
            Some(at) => deadline = deadline.min(tokio::time::Instant::now() + at.since(now)),
            None => {}
        }
        tokio::select! {
            () = registration.waiter.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        Ok(())
    }

    async fn next_run_at(&self, queues: &[String]) -> StoreResult<Option<Timestamp>> {
        let mut earliest: Option<i64> = None;
        for queue in queues {
            let keys = self.keys(queue);
            let (paused, first): (bool, Vec<(String, f64)>) = redis::pipe()
                .cmd("EXISTS")
                .arg(keys.key("paused"))
                .cmd("ZRANGE")
                .arg(keys.key("scheduled"))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query_async(&mut self.conn())
                .await
                .map_err(backend("find the next scheduled job"))?;
            let at = first.first().map(|(_, at)| *at as i64);
            if let (false, Some(at)) = (paused, at) {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(earliest.map(Timestamp))
    }
}
