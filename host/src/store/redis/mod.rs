//! The Redis job store: many hosts on many machines share queues kept in one Redis server or
//! Redis Cluster.
//!
//! Rules this module keeps:
//! - What happens to a job is decided once, in Rust, by the rules of `store::lifecycle`, as
//!   for the embedded store. Lua scripts (`redis/*.lua`, run with EVALSHA) only check and
//!   write, each in one atomic step, so a crashed host never leaves a job half-moved: a
//!   settlement or the reaper's decision is written only while the job's lease and record are
//!   still the ones it was decided on (`settle.rs`, `reaper.rs`). `lib.lua` holds the helpers
//!   and is prepended to every script except `enqueue.lua`, the standalone producers'
//!   contract.
//! - All keys of a queue share one hash tag (`kiln:{q:NAME}:...`), so every script touches a
//!   single cluster slot and runs unchanged on Redis Cluster.
//! - Job ids are `QUEUE/UUIDv7` so `get(id)` knows the queue's keys without a lookup; the
//!   queue is everything before the last `/`.
//! - Idle hosts do not poll: scripts that add or requeue a job publish the queue's name on
//!   `kiln:wake`, and `wait` blocks on that subscription (`wake.rs`).
//! - Redis going away is an error (`StoreError::Backend`), never a panic; both connection
//!   kinds reconnect with backoff on the next call, and scripts are reloaded when a restarted
//!   server has forgotten them.
//! - A job is one string key holding its record, a MessagePack map. A claim does not rewrite
//!   it: a claimed job is active through its queue's `leases` hash and `active` set, and
//!   readers lay the lease over the record (`Claim`).
//!
//! What holds here and not as in the embedded store, the price of one slot per queue:
//! - A batch (`enqueue`, `claim`, `settle`, `renew`) is atomic per queue, not across queues.
//!   A settlement whose job's record changed since it was read (progress, a cancel request)
//!   is decided again and written in a later script call of the same `settle`.
//! - Unique keys are unique within their queue; the embedded store checks them across
//!   queues.
//! - Ids are `QUEUE/UUIDv7`, and an id that names no queue is no job.
//!
//! Layout:
//! - `mod.rs`: the `RedisStore` type, opening it, the queue registry.
//! - `conn.rs`: where the store lives (`RedisTarget`), connections, TLS, reconnects.
//! - `wake.rs`: the wake-up subscription and the waiters.
//! - `keys.rs`: key names, what ids say, waiting-set members.
//! - `record.rs`: the record codec: decoding, patching.
//! - `scripts.rs`: the script set and the decoding of every script reply.
//! - `schedules.rs`: schedule ticks (`tick.lua`) and schedule records.
//! - `store.rs`: the `JobStore` impl and the worker's path (enqueue, claim, renew, progress,
//!   wait).
//! - `settle.rs`: settling: decisions as writes, and the compare-and-set that applies them.
//! - `reaper.rs`: taking back expired leases, promoting due jobs.
//! - `admin.rs`: reads, listing, counts and the admin operations.
//!
//! The key layout and the job record format are documented for producers in the README
//! section "The Redis job format".

mod admin;
mod conn;
mod keys;
mod reaper;
mod record;
mod schedules;
mod scripts;
mod settle;
mod store;
mod wake;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;

pub use conn::{Patience, RedisEndpoint, RedisTarget};
pub use keys::queue_of;

use conn::{Conn, connect};
use keys::QueueKeys;
use settle::Holding;
use wake::{Wakers, subscribe};

use super::{JobDefaults, StoreError, StoreResult};

/// Key prefix used when the configuration does not name one.
pub const DEFAULT_NAMESPACE: &str = "kiln";

/// Most jobs one `claim` call takes. Bounds how long one claim script holds Redis (scripts
/// block the server); a worker asking for more simply gets this many.
pub const MAX_CLAIM_BATCH: usize = 1_000;

/// Most due scheduled jobs, and most expired leases, one script call moves. Keeps a backlog
/// of thousands of delayed jobs from stalling the server in one script; the rest move on the
/// next call.
const MOVE_BATCH: usize = 1_000;

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
    /// The jobs this handle claimed and has not settled, by id (see `Holding`): settling them reads nothing first.
    claims: Mutex<HashMap<String, Arc<Holding>>>,
    /// What a record an outside producer left without priority or max_attempts takes: the
    /// config's values (the host's and the CLI's store), else `JobDefaults::default()`.
    defaults: JobDefaults,
}

impl RedisStore {
    /// Connects to `target`. Fails with `StoreError::Backend` if no node answers; after that,
    /// lost connections are re-established by later calls.
    pub async fn open(target: RedisTarget) -> StoreResult<Self> {
        Self::open_with_defaults(target, JobDefaults::default()).await
    }

    /// Connects to `target`, resolving jobs that lack a priority or max_attempts from
    /// `defaults` (built from the config) when they first become ready and when read.
    pub async fn open_with_defaults(
        target: RedisTarget,
        defaults: JobDefaults,
    ) -> StoreResult<Self> {
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
                defaults,
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
