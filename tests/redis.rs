//! The Redis job store against real `redis-server` processes: the whole conformance suite on
//! one server and on a three-master Redis Cluster, plus what only Redis has (many handles on
//! one server, surviving a server restart, garbage planted by a foreign producer).
//!
//! Each case gets its own key namespace, so cases share servers: the first case to need a
//! server starts it, and the last one to finish stops it (the `Arc` is the guard).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kiln::store::{
    AnyStore, JobState, JobStore, ListFilter, NewJob, Page, Progress, RedisStore, RedisTarget,
    SettleAction, StoreError,
};

use crate::redis_server::{RedisCluster, RedisServer};
use crate::store::{LEASE, T0, at, job, settlement};

/// A namespace no other case uses.
fn namespace() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("test{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Returns the running shared `T`, or starts one; it stops when the last case drops it.
fn shared<T>(slot: &Mutex<Weak<T>>, start: impl FnOnce() -> T) -> Arc<T> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(running) = slot.upgrade() {
        return running;
    }
    let started = Arc::new(start());
    *slot = Arc::downgrade(&started);
    started
}

fn server() -> Arc<RedisServer> {
    static SERVER: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
    shared(&SERVER, RedisServer::start)
}

fn cluster() -> Arc<RedisCluster> {
    static CLUSTER: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
    shared(&CLUSTER, RedisCluster::start)
}

async fn open(target: RedisTarget) -> RedisStore {
    RedisStore::open(target).await.expect("connect to redis")
}

/// A store on the shared single server, in a fresh namespace.
async fn on_server() -> (AnyStore, Arc<RedisServer>) {
    let server = server();
    let target = RedisTarget::server(server.url()).with_namespace(namespace());
    let store = AnyStore::open_redis(target)
        .await
        .expect("connect to redis");
    (store, server)
}

/// A store on the shared cluster, in a fresh namespace.
async fn on_cluster() -> (AnyStore, Arc<RedisCluster>) {
    let cluster = cluster();
    let target = RedisTarget::cluster(cluster.urls()).with_namespace(namespace());
    let store = AnyStore::open_redis(target)
        .await
        .expect("connect to the cluster");
    (store, cluster)
}

mod listing;
mod producer;
mod races;

mod single {
    crate::store::conformance!(async { super::on_server().await });
}

mod cluster {
    crate::store::conformance!(async { super::on_cluster().await });
}

/// Jobs of many queues land on every master: the hash tags spread queues over the slots,
/// and each queue's scripts still run (claim and settle on each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_spread_over_cluster_nodes() {
    let cluster = cluster();
    let target = RedisTarget::cluster(cluster.urls()).with_namespace(namespace());
    let store = open(target).await;
    let queues: Vec<String> = (0..24).map(|i| format!("queue-{i}")).collect();
    let batch = queues.iter().map(|queue| job(queue, queue)).collect();
    let enqueued = store.enqueue(batch, T0).await.unwrap();
    assert_eq!(enqueued.len(), queues.len());
    let mut settlements = Vec::new();
    for queue in &queues {
        let claimed = store.claim(queue, 10, "w", LEASE, T0).await.unwrap();
        assert_eq!(claimed.len(), 1, "queue {queue}");
        let done = SettleAction::Succeed {
            result: claimed[0].payload.clone(),
        };
        settlements.push(settlement(&claimed[0], "w", done, at(1)));
    }
    assert!(store.settle(settlements, at(1)).await.unwrap().is_empty());
    for (queue, enqueued) in queues.iter().zip(&enqueued) {
        let job = store.get(&enqueued.id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result.as_deref(), Some(queue.as_bytes()));
    }
    let holding = cluster.key_counts().iter().filter(|&&n| n > 0).count();
    assert_eq!(holding, 3, "every master holds some queue");
}

/// A host blocked in `wait` on one connection wakes when another process's handle enqueues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_wakes_on_another_handles_enqueue() {
    let server = server();
    let target = RedisTarget::server(server.url()).with_namespace(namespace());
    let host = open(target.clone()).await;
    let producer = open(target).await;
    let queues = ["emails".to_owned()];
    let waiting = tokio::spawn({
        let host = host.clone();
        async move { host.wait(&queues, T0, Duration::from_secs(3600)).await }
    });
    // Give the waiter a chance to block before the enqueue (not required for correctness:
    // a job already waiting also ends the wait).
    tokio::task::yield_now().await;
    producer
        .enqueue(vec![job("emails", "hello")], T0)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("wait wakes on another handle's enqueue")
        .unwrap()
        .unwrap();
    let claimed = host.claim("emails", 1, "w", LEASE, T0).await.unwrap();
    assert_eq!(claimed[0].payload, b"hello");
}

/// A claim reads each job's record and does not write it: the job is active through the
/// queue's `leases` hash and `active` set, which every handle reads alike. Another handle
/// sees the claimed job as active with its attempt counted, a stale owner changes nothing,
/// and settling writes the record once: the result stored, an earlier attempt's error
/// cleared, both attempts in the history, the unique key released. (A private server, so its
/// command counts are this case's alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_writes_no_job_record() {
    let server = RedisServer::start();
    let calls = |command: &str| -> u64 {
        let stats = server.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        let line = stats.lines().find(|l| l.starts_with(&prefix));
        line.and_then(|l| l[prefix.len()..].split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let target = RedisTarget::server(server.url()).with_namespace(namespace());
    let claimer = open(target.clone()).await;
    let other = open(target).await;
    let mut new = job("q", "x");
    new.unique_key = Some("key".to_owned());
    new.max_attempts = 2;
    let id = claimer.enqueue(vec![new.clone()], T0).await.unwrap()[0]
        .id
        .clone();
    let first = claimer.claim("q", 1, "w", LEASE, T0).await.unwrap();
    let retry = SettleAction::Retry {
        at: T0,
        error: "first attempt failed".to_owned(),
    };
    claimer
        .settle(vec![settlement(&first[0], "w", retry, T0)], T0)
        .await
        .unwrap();

    let writes = || calls("set") + calls("mset") + calls("hset");
    let before = writes();
    let second = claimer.claim("q", 1, "w", LEASE, at(1)).await.unwrap();
    assert_eq!(
        writes() - before,
        1,
        "one HSET of the leases hash, no record"
    );
    assert_eq!(second[0].error.as_deref(), Some("first attempt failed"));
    let seen = other.get(&id).await.unwrap().unwrap();
    assert_eq!((seen.state, seen.attempts), (JobState::Active, 2));
    assert_eq!(seen.lease.as_ref().map(|l| l.owner.as_str()), Some("w"));

    let succeed = SettleAction::Succeed {
        result: b"done".to_vec(),
    };
    let stale = settlement(&second[0], "someone else", succeed.clone(), at(2));
    assert_eq!(
        other.settle(vec![stale], at(2)).await.unwrap(),
        std::slice::from_ref(&id)
    );
    let settled = settlement(&second[0], "w", succeed, at(2));
    assert!(other.settle(vec![settled], at(2)).await.unwrap().is_empty());

    let done = claimer.get(&id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.result.as_deref(), Some(&b"done"[..]));
    assert_eq!(done.error, None, "the old error is cleared");
    assert_eq!(done.lease, None);
    assert_eq!(done.history.len(), 2, "both attempts recorded");
    assert_eq!(done.finished_at, Some(at(2)));
    let again = claimer.enqueue(vec![new], at(3)).await.unwrap();
    assert!(!again[0].existing, "the unique key was released");
    let counts = &other.counts().await.unwrap()[0];
    assert_eq!((counts.active, counts.succeeded), (0, 1));
}

/// The handle that claimed a job settles it with the record it claimed, without reading it
/// again (the script only checks the stored record is unchanged); any other handle reads the
/// record first, and a record changed since the claim (progress) is read and decided again.
/// Every way, and for a big record too, ends in the same job: result or error, attempts,
/// history, the unique key released, the progress kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settles_alike_by_either_handle() {
    let server = server();
    let target = RedisTarget::server(server.url()).with_namespace(namespace());
    let claimer = open(target.clone()).await;
    let other = open(target).await;
    let mut ends = Vec::new();
    for (case, settler, progress, succeed) in [
        ("claimer-ok", &claimer, false, true),
        ("other-ok", &other, false, true),
        ("progress-ok", &claimer, true, true),
        ("big-ok", &claimer, false, true),
        ("claimer-fail", &claimer, false, false),
        ("other-fail", &other, false, false),
    ] {
        let mut new = job(case, "x");
        new.unique_key = Some("key".to_owned());
        if case.starts_with("big") {
            new.payload = vec![7; 100 * 1024];
        }
        let id = claimer.enqueue(vec![new.clone()], T0).await.unwrap()[0]
            .id
            .clone();
        let claimed = claimer.claim(case, 1, "w", LEASE, T0).await.unwrap();
        if progress {
            let halfway = Progress {
                percent: 50,
                message: Some("half".to_owned()),
            };
            claimer.progress(&id, "w", halfway, at(1)).await.unwrap();
        }
        let action = if succeed {
            SettleAction::Succeed {
                result: vec![0xff, 0, b'r'],
            }
        } else {
            SettleAction::Fail {
                error: "broke".to_owned(),
            }
        };
        let done = settlement(&claimed[0], "w", action, at(2));
        assert!(settler.settle(vec![done], at(2)).await.unwrap().is_empty());
        let job = other.get(&id).await.unwrap().unwrap();
        let again = claimer.enqueue(vec![new], at(3)).await.unwrap();
        assert!(!again[0].existing, "{case}: the unique key was released");
        assert_eq!(job.progress.is_some(), progress, "{case}");
        ends.push((case, job));
    }
    for (case, job) in &ends {
        let (state, result, error) = if case.ends_with("ok") {
            (JobState::Succeeded, Some(vec![0xff, 0, b'r']), None)
        } else {
            (JobState::Failed, None, Some("broke".to_owned()))
        };
        assert_eq!(
            (job.state, &job.result, &job.error),
            (state, &result, &error),
            "{case}"
        );
        assert_eq!((job.attempts, job.lease.as_ref()), (1, None), "{case}");
        assert_eq!(job.history.len(), 1, "{case}");
        assert_eq!(job.history[0].attempt, 1, "{case}");
        assert_eq!(
            (job.updated_at, job.finished_at),
            (at(2), Some(at(2))),
            "{case}"
        );
        assert_eq!(job.handler, "echo", "{case}");
        let size = if case.starts_with("big") {
            100 * 1024
        } else {
            1
        };
        assert_eq!(job.payload.len(), size, "{case}");
    }
}

/// A success that keeps nothing deletes the job key and every entry of the job, and releases
/// its unique key, whether the handle that claimed the job settles it or another one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_alike_by_either_handle() {
    let server = RedisServer::start();
    let target = RedisTarget::server(server.url()).with_namespace(namespace());
    let claimer = open(target.clone()).await;
    let other = open(target).await;
    for (queue, settler) in [("by-claimer", &claimer), ("by-other", &other)] {
        let mut new = job(queue, "x");
        new.unique_key = Some("key".to_owned());
        let id = claimer.enqueue(vec![new.clone()], T0).await.unwrap()[0]
            .id
            .clone();
        let claimed = claimer.claim(queue, 1, "w", LEASE, T0).await.unwrap();
        let done = settlement(&claimed[0], "w", SettleAction::SucceedAndDelete, at(1));
        assert!(settler.settle(vec![done], at(1)).await.unwrap().is_empty());
        assert!(other.get(&id).await.unwrap().is_none(), "{queue}");
        let key_tag = format!("{{q:{queue}}}");
        let left = server.cli(&["KEYS", &format!("*{key_tag}*")]);
        assert_eq!(left.trim(), "", "{queue}: no key of the queue is left");
        let again = claimer.enqueue(vec![new], at(2)).await.unwrap();
        assert!(!again[0].existing, "{queue}: the unique key was released");
    }
}

/// The `leases` hash holds the claim time and the lease owner; colons in the queue (`a:b`)
/// or the owner (`host:7:slot`) neither hide a job from `list` nor confuse the reaper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_with_colons_list_and_expire() {
    let server = server();
    let store = open(RedisTarget::server(server.url()).with_namespace(namespace())).await;
    let id = store.enqueue(vec![job("a:b", "x")], T0).await.unwrap()[0]
        .id
        .clone();
    let claimed = store
        .claim("a:b", 1, "host:7:slot", LEASE, T0)
        .await
        .unwrap();
    assert_eq!(claimed[0].id, id);
    let active = ListFilter {
        queue: Some("a:b".to_owned()),
        state: Some(JobState::Active),
    };
    let listed = store.list(active, Page::default()).await.unwrap();
    assert_eq!(listed.iter().map(|j| &j.id).collect::<Vec<_>>(), [&id]);
    assert_eq!(listed[0].lease.as_ref().unwrap().owner, "host:7:slot");

    let after_lease = T0 + LEASE + Duration::from_secs(1);
    assert_eq!(store.recover(after_lease).await.unwrap(), 1);
    let back = store.get(&id).await.unwrap().unwrap();
    assert_eq!((back.state, back.lease), (JobState::Waiting, None));
    assert!(back.error.unwrap().contains("`host:7:slot`"));
}

/// Redis restarts mid-use (AOF with `appendfsync always`): while it is down operations fail
/// with a backend error instead of panicking, and afterwards the same store handle
/// reconnects and every acknowledged job is still there and claimable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acknowledged_jobs() {
    let mut server = RedisServer::persistent();
    let store = open(RedisTarget::server(server.url())).await;
    let batch: Vec<NewJob> = (0..200).map(|i| job("q", &i.to_string())).collect();
    let enqueued = store.enqueue(batch, T0).await.unwrap();
    let first = store.claim("q", 10, "w", LEASE, T0).await.unwrap();
    assert_eq!(first.len(), 10);

    server.kill();
    let down = store.counts().await;
    assert!(
        matches!(down, Err(StoreError::Backend { .. })),
        "a dead server is a backend error, got {down:?}"
    );
    server.restart();

    let counts = reconnected(|| store.counts()).await;
    assert_eq!((counts[0].waiting, counts[0].active), (190, 10));
    let rest = store.claim("q", 1000, "w", LEASE, at(1)).await.unwrap();
    let mut ids: Vec<String> = first.iter().chain(&rest).map(|j| j.id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = enqueued.into_iter().map(|e| e.id).collect();
    expected.sort();
    assert_eq!(ids, expected, "every acknowledged job survived the restart");
}

/// Calls `op` until the store has reconnected (the first calls after a restart may still
/// fail while the connection is re-established), failing the test after a bound.
async fn reconnected<T, F, Fut>(op: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut last = None;
    for _ in 0..100 {
        match op().await {
            Ok(value) => return value,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the store did not reconnect: {last:?}");
}

/// Garbage planted in a queue by a foreign producer: an id in the waiting set without a
/// record, a record missing fields, a record with a bad number, a string that is not a
/// record, a hash where a record belongs, a record whose history holds no attempt records,
/// and two succeeded records listed as waiting, one of them with a payload holding the bytes
/// of `state: 'waiting'` (the claim script does not decode records; the host does, and
/// catches the broken ones it claimed). Claims skip past all of them, each broken job
/// becomes a failed job saying why (values that are not records, and records the host
/// could not decode, are kept under `garbage:` keys), a sound succeeded record only leaves
/// the waiting set, and the queue keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_queue_is_moved_aside() {
    let server = server();
    let store = open(RedisTarget::server(server.url()).with_namespace(namespace())).await;
    let good = store.enqueue(vec![job("q", "good")], T0).await.unwrap()[0]
        .id
        .clone();
    let waiting = store.queue_key("q", "waiting");
    let plant = |id: &str| {
        server.cli(&[
            "ZADD",
            &waiting,
            "-100",
            &format!("{:016}{id}", T0.0 + 10i64.pow(15)),
        ]);
        store.job_key(id).unwrap()
    };
    // Stores a record given as JSON, MessagePack-encoded by Redis itself.
    let plant_record = |id: &str, json: &str| {
        let key = plant(id);
        let script = "redis.call('SET', KEYS[1], cmsgpack.pack(cjson.decode(ARGV[1])))";
        server.cli(&["EVAL", script, "1", &key, json]);
    };
    // A complete waiting record for `id`, except that `field` holds `value` (JSON).
    let plant_bad = |id: &str, field: &str, value: &str| {
        let mut record = serde_json::json!({
            "id": id, "queue": "q", "handler": "echo", "payload": "", "priority": 0,
            "state": "waiting", "attempts": 0, "max_attempts": 3, "run_at": 0,
            "cancel_requested": false, "created_at": 0, "updated_at": 0, "history": "[]",
        });
        record[field] = serde_json::from_str(value).unwrap();
        plant_record(id, &record.to_string());
    };
    plant("q/no-record");
    plant_record(
        "q/missing-fields",
        r#"{"handler":"echo","state":"waiting"}"#,
    );
    plant_bad("q/bad-number", "priority", r#""high""#);
    let string = plant("q/a-string");
    server.cli(&["SET", &string, "not a job"]);
    let hash = plant("q/a-hash");
    server.cli(&["HSET", &hash, "handler", "echo", "state", "waiting"]);
    plant_bad("q/bad-history", "history", r#""[{\"x\":1}]""#);
    let done = |id: &str, payload: &str| {
        let record = serde_json::json!({
            "id": id, "queue": "q", "handler": "echo", "payload": "", "priority": 0,
            "state": "succeeded", "attempts": 1, "max_attempts": 3, "run_at": 0,
            "cancel_requested": false, "created_at": 0, "updated_at": 0, "history": "[]",
        });
        let key = plant(id);
        let script = "local r = cjson.decode(ARGV[1]); r.payload = ARGV[2]; \
                      if ARGV[2] == 'marker' then r.payload = '\\165state\\167waiting' end; \
                      redis.call('SET', KEYS[1], cmsgpack.pack(r))";
        server.cli(&["EVAL", script, "1", &key, &record.to_string(), payload]);
    };
    done("q/succeeded", "plain");
    done("q/succeeded-marker", "marker");

    let claimed = store.claim("q", 10, "w", LEASE, T0).await.unwrap();
    let ids: Vec<_> = claimed.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [good.as_str()], "only the sound job is claimed");

    assert!(store.get("q/no-record").await.unwrap().is_none());
    for (id, says) in [
        ("q/missing-fields", "is missing"),
        (
            "q/succeeded-marker",
            "listed as waiting but its record says `succeeded`",
        ),
        ("q/bad-number", "field `priority` is not a valid integer"),
        ("q/a-string", "holds a string that is not a MessagePack map"),
        ("q/a-hash", "holds a hash, not a job record"),
        ("q/bad-history", "attempt history is not valid json"),
    ] {
        let job = store.get(id).await.unwrap().expect("kept as a failed job");
        assert_eq!(job.state, JobState::Failed, "{id}");
        let error = job.error.unwrap_or_default();
        assert!(error.starts_with("corrupt job: "), "{id}: {error}");
        assert!(error.contains(says), "{id}: {error}");
    }
    let aside = store.queue_key("q", "garbage:q/a-string");
    assert_eq!(server.cli(&["GET", &aside]).trim(), "not a job");
    let aside = store.queue_key("q", "garbage:q/a-hash");
    assert_eq!(server.cli(&["HGET", &aside, "handler"]).trim(), "echo");

    let sound = store.get("q/succeeded").await.unwrap().unwrap();
    assert_eq!(
        sound.state,
        JobState::Succeeded,
        "a sound record is only unlisted"
    );
    let aside = store.queue_key("q", "garbage:q/succeeded-marker");
    let state = "return cmsgpack.unpack(redis.call('GET', KEYS[1])).state";
    assert_eq!(
        server.cli(&["EVAL", state, "1", &aside]).trim(),
        "succeeded"
    );

    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts[0].failed, counts[0].active, counts[0].waiting),
        (6, 1, 0)
    );
    let kept = store.queue_key("q", "garbage:q/bad-history");
    let history = "return cmsgpack.unpack(redis.call('GET', KEYS[1])).history";
    assert_eq!(
        server.cli(&["EVAL", history, "1", &kept]).trim(),
        "[{\"x\":1}]"
    );
    let failed = ListFilter {
        queue: Some("q".to_owned()),
        state: Some(JobState::Failed),
    };
    assert_eq!(store.list(failed, Page::default()).await.unwrap().len(), 6);
    store.enqueue(vec![job("q", "after")], at(1)).await.unwrap();
    let next = store.claim("q", 10, "w", LEASE, at(1)).await.unwrap();
    assert_eq!(next[0].payload, b"after", "the queue keeps working");
}

/// Ids carry their queue, so `get` finds a job with no lookup, and a job enqueued by a
/// foreign producer through `enqueue.lua` alone (as the README's Redis job format describes) is claimable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_producer_enqueues_with_the_script() {
    let server = server();
    let ns = namespace();
    let store = open(RedisTarget::server(server.url()).with_namespace(&ns)).await;
    let script = include_str!("../host/src/store/redis/enqueue.lua");
    let prefix = format!("{ns}:{{q:mail}}:");
    let id = "mail/0190d1a2-0000-7000-8000-000000000001";
    let mut args: Vec<String> = vec!["EVAL".into(), script.into(), "11".into()];
    for name in [
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
    ] {
        args.push(format!("{prefix}{name}"));
    }
    args.push(format!("{prefix}job:{id}"));
    args.extend([
        prefix.clone(),
        "mail".into(),
        T0.0.to_string(),
        format!("{ns}:wake"),
    ]);
    args.extend([id, "send-mail", "{\"to\":\"a@b.c\"}", "3", "", "5", "0", ""].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reply = server.cli(&args);
    assert_eq!(reply.split_whitespace().collect::<Vec<_>>(), [id, "0"]);
    server.cli(&["SADD", &format!("{ns}:queues"), "mail"]);

    let job = store.get(id).await.unwrap().expect("stored by the script");
    assert_eq!(
        (job.handler.as_str(), job.priority, job.max_attempts),
        ("send-mail", 3, 5)
    );
    let claimed = store.claim("mail", 1, "w", LEASE, T0).await.unwrap();
    assert_eq!(claimed[0].payload, b"{\"to\":\"a@b.c\"}");
    assert_eq!(store.counts().await.unwrap()[0].active, 1);
}

/// `rediss://` to a server whose certificate a private CA signed: refused while the host
/// trusts only the system's roots, served once `ca_file` names that CA.
#[tokio::test]
async fn tls_with_a_private_certificate_authority() {
    let server = RedisServer::tls();
    let target = RedisTarget::server(server.tls_url()).with_namespace(namespace());
    let refused = tokio::time::timeout(Duration::from_secs(60), RedisStore::open(target.clone()))
        .await
        .expect("an untrusted certificate fails the connect rather than hanging");
    let error = refused
        .err()
        .expect("the system roots do not trust the test CA");
    assert!(
        error.to_string().contains("connect to redis at rediss://"),
        "{error}"
    );

    let missing = target
        .clone()
        .with_ca_file(server.ca_file().with_extension("nope"));
    let error = RedisStore::open(missing).await.err().expect("no CA file");
    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert!(
        source
            .as_deref()
            .unwrap_or("")
            .contains("cannot read the CA file"),
        "{error}: {source:?}"
    );

    let store = open(target.with_ca_file(server.ca_file())).await;
    let enqueued = store
        .enqueue(vec![job("mail", "over tls")], T0)
        .await
        .unwrap();
    let claimed = store.claim("mail", 1, "w", LEASE, T0).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].id.as_str(), claimed[0].payload.as_slice()),
        (enqueued[0].id.as_str(), &b"over tls"[..])
    );
}
