//! The README's producer contract ("The Redis job format"), followed to the letter by a
//! producer that is not Kiln: raw `EVAL` of `enqueue.lua` with the documented KEYS and ARGV.
//! A batch is all or nothing, numbers out of the hosts' range and ids that are not lowercase
//! UUID v7s are refused naming the job and the field, and a job may leave its priority and
//! max_attempts to the config of the host that runs it.

use std::time::{Duration, Instant};

use kiln::store::{JobDefaults, JobState, JobStore, RedisStore, RedisTarget};

use super::{namespace, open};
use crate::cli::Project;
use crate::redis_server::RedisServer;
use crate::store::{LEASE, T0};

const SCRIPT: &str = include_str!("../../host/src/store/redis/enqueue.lua");

/// The ten queue keys, in the order the README lists them.
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

/// A producer in another language: it knows the namespace, the server and the README.
pub struct Producer {
    pub ns: String,
    pub url: String,
}

impl Producer {
    /// `EVAL enqueue.lua 10+k <queue keys> <job keys> <prefix> Q NOW NS:wake <8 per job>`
    /// for jobs of `queue`, each `[id, handler, payload, priority, run_at, max_attempts,
    /// has_unique, unique_key]`; the script's reply, or its error's text.
    pub async fn enqueue(&self, queue: &str, jobs: &[[&str; 8]]) -> Result<redis::Value, String> {
        let prefix = format!("{}:{{q:{queue}}}:", self.ns);
        let mut eval = redis::cmd("EVAL");
        eval.arg(SCRIPT).arg(10 + jobs.len());
        for name in QUEUE_KEYS {
            eval.arg(format!("{prefix}{name}"));
        }
        for job in jobs {
            eval.arg(format!("{prefix}job:{}", job[0]));
        }
        eval.arg(&prefix)
            .arg(queue)
            .arg(T0.0)
            .arg(format!("{}:wake", self.ns));
        for job in jobs {
            eval.arg(&job[..]);
        }
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let registered: redis::RedisResult<()> = redis::cmd("SADD")
            .arg(format!("{}:queues", self.ns))
            .arg(queue)
            .query_async(&mut conn)
            .await;
        registered.unwrap();
        eval.query_async(&mut conn).await.map_err(|e| e.to_string())
    }
}

const ID1: &str = "mail/0190d1a2-0000-7000-8000-000000000001";
const ID2: &str = "mail/0190d1a2-0000-7000-8000-000000000002";
const ID3: &str = "mail/0190d1a2-0000-7000-8000-000000000003";

fn mail(id: &'static str, priority: &'static str, max_attempts: &'static str) -> [&'static str; 8] {
    [id, "send-mail", "{}", priority, "", max_attempts, "0", ""]
}

/// How many times the server ran `command` (from `INFO commandstats`).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    let line = stats.lines().find(|l| l.starts_with(&prefix));
    line.and_then(|l| l[prefix.len()..].split(',').next()?.parse().ok())
        .unwrap_or(0)
}

async fn on(server: &RedisServer) -> (Producer, RedisStore) {
    let ns = namespace();
    let store = open(RedisTarget::server(server.url()).with_namespace(&ns)).await;
    let producer = Producer {
        ns,
        url: server.url(),
    };
    (producer, store)
}

/// Three jobs in one call take 13 keys (10 + 3), as the README's example says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_takes_ten_keys_plus_one_per_job() {
    let server = RedisServer::start();
    let (producer, store) = on(&server).await;
    let batch = [
        mail(ID1, "0", "3"),
        mail(ID2, "0", "3"),
        mail(ID3, "0", "3"),
    ];
    producer.enqueue("mail", &batch).await.unwrap();
    for id in [ID1, ID2, ID3] {
        assert!(store.get(id).await.unwrap().is_some(), "{id} stored");
    }
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[0].waiting, 3);
}

/// A batch whose second job is refused stores nothing and publishes no wake-up; the same
/// batch, corrected, is then accepted whole (no "already exists" for job 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_job_stores_nothing_of_its_batch() {
    let server = RedisServer::start();
    let (producer, store) = on(&server).await;
    let bad = [
        mail(ID1, "0", "3"),
        mail(ID2, "0", "0"),
        mail(ID3, "0", "3"),
    ];
    let error = producer.enqueue("mail", &bad).await.unwrap_err();
    assert!(
        error.contains(&format!("job `{ID2}` has max_attempts `0`")),
        "{error}"
    );
    assert_eq!(
        calls(&server, "publish"),
        0,
        "no wake-up for a refused batch"
    );
    assert!(
        store.get(ID1).await.unwrap().is_none(),
        "job 1 was not stored"
    );
    let keys = server.cli(&["KEYS", &format!("{}:{{q:mail}}:*", producer.ns)]);
    assert_eq!(keys.trim(), "", "no key of the queue was written");

    let good = [
        mail(ID1, "0", "3"),
        mail(ID2, "0", "3"),
        mail(ID3, "0", "3"),
    ];
    producer.enqueue("mail", &good).await.unwrap();
    assert_eq!(store.counts().await.unwrap()[0].waiting, 3);
    assert_eq!(calls(&server, "publish"), 1);
}

/// Numbers the hosts could not decode are refused at enqueue, naming the job and the field,
/// instead of being stored and failing later as `corrupt job:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_are_refused_at_enqueue() {
    let server = RedisServer::start();
    let (producer, store) = on(&server).await;
    for (job, field) in [
        (mail(ID1, "3000000000", "3"), "priority `3000000000`"),
        (mail(ID1, "-2147483649", "3"), "priority `-2147483649`"),
        (mail(ID1, "1.5", "3"), "priority `1.5`"),
        (mail(ID1, "0", "5000000000"), "max_attempts `5000000000`"),
        (mail(ID1, "0", "-1"), "max_attempts `-1`"),
    ] {
        let error = producer.enqueue("mail", &[job]).await.unwrap_err();
        assert!(
            error.contains(&format!("job `{ID1}` has {field}")),
            "{error}"
        );
    }
    let mut late = mail(ID1, "0", "3");
    late[4] = "1e20";
    let error = producer.enqueue("mail", &[late]).await.unwrap_err();
    assert!(error.contains("has run_at `1e20`"), "{error}");
    assert!(store.get(ID1).await.unwrap().is_none());

    producer
        .enqueue("mail", &[mail(ID1, "2147483647", "4294967295")])
        .await
        .unwrap();
    let job = store.get(ID1).await.unwrap().unwrap();
    assert_eq!((job.priority, job.max_attempts), (i32::MAX, u32::MAX));
}

/// The part after `Q/` must be a lowercase UUID v7, which is what keeps ids time-ordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_must_hold_a_lowercase_uuid_v7() {
    let server = RedisServer::start();
    let (producer, _store) = on(&server).await;
    for id in [
        "mail/not-a-uuid",
        "mail/0190D1A2-0000-7000-8000-000000000001",
        "mail/0190d1a2-0000-4000-8000-000000000001",
        "mail/0190d1a20000700080000000000000001",
        "other/0190d1a2-0000-7000-8000-000000000001",
    ] {
        let error = producer
            .enqueue("mail", &[mail(id, "0", "3")])
            .await
            .unwrap_err();
        assert!(
            error.contains(&format!(
                "job `{id}` needs the id `mail/<uuid v7, lowercase>`"
            )),
            "{error}"
        );
    }
}

/// A producer may leave priority and max_attempts empty: the job is scheduled without them
/// and a claim gives it the config's values (the queue's priority, the handler's attempts)
/// before ranking it, so it runs before a job of lower explicit priority; readers with the
/// config show the same values meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_fields_take_the_configs_values_at_claim() {
    let server = RedisServer::start();
    let ns = namespace();
    let mut defaults = JobDefaults::default();
    defaults.queue_priority.insert("mail".to_owned(), 7);
    defaults
        .handler_max_attempts
        .insert("send-mail".to_owned(), 1);
    let target = RedisTarget::server(server.url()).with_namespace(&ns);
    let store = RedisStore::open_with_defaults(target, defaults)
        .await
        .unwrap();
    let producer = Producer {
        ns,
        url: server.url(),
    };
    let batch = [mail(ID1, "5", "3"), mail(ID2, "", "")];
    producer.enqueue("mail", &batch).await.unwrap();
    let before = store.get(ID2).await.unwrap().unwrap();
    assert_eq!(before.state, JobState::Scheduled);
    assert_eq!((before.priority, before.max_attempts), (7, 1));

    let claimed = store.claim("mail", 1, "w", LEASE, T0).await.unwrap();
    assert_eq!(
        claimed[0].id, ID2,
        "priority 7 from the config runs before 5"
    );
    assert_eq!((claimed[0].priority, claimed[0].max_attempts), (7, 1));
    let plain = open(RedisTarget::server(server.url()).with_namespace(&producer.ns)).await;
    let written = plain.get(ID2).await.unwrap().unwrap();
    assert_eq!(
        (written.priority, written.max_attempts),
        (7, 1),
        "the record now holds the config's values"
    );
}

/// End to end: a record written the way the README tells an outside producer to, with
/// priority and max_attempts empty, run by `kiln run` with the config's values: the
/// `panic` handler's `max_attempts = 1` (one attempt, not the default three) and the
/// queue's `priority = 7`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_runs_an_outside_job_with_the_configs_values() {
    let server = RedisServer::start();
    let store_keys = format!(
        "[store]\nurl = \"{}\"\n[queues.default]\npriority = 7\n",
        server.url()
    );
    let project = Project::with_store(&["panic"], "", &store_keys);
    let producer = Producer {
        ns: "kiln".to_owned(),
        url: server.url(),
    };
    let id = "default/0190d1a2-0000-7000-8000-0000000000aa";
    let job = [id, "panic", r#"{"message":"no"}"#, "", "", "", "0", ""];
    producer.enqueue("default", &[job]).await.unwrap();
    let host = project.host();
    let reader = open(RedisTarget::server(server.url())).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let job = reader.get(id).await.unwrap().unwrap();
        if job.state == JobState::Failed {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not fail: {job:?}\n{}",
            project.host_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((failed.priority, failed.max_attempts), (7, 1));
    assert_eq!(
        failed.history.len(),
        1,
        "one attempt, as the config says: {failed:?}\n{}",
        project.host_logs()
    );
    assert!(host.terminate().success());
}
