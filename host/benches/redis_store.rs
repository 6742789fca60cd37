//! The Redis store alone, without wasm: how fast it enqueues, claims and settles (keeping
//! the succeeded jobs, and deleting them as a queue that keeps none does), settles jobs whose
//! record changed since the claim (progress), takes back expired leases, and how soon an
//! idle `wait` wakes after an enqueue.
//!
//! Starts its own `redis-server` on a free loopback port (stopped by its pid at the end), or
//! uses the server at `BENCH_REDIS_URL`, in a namespace of its own. `BENCH_JOBS` jobs per
//! drain (default 100,000) and `BENCH_BATCH` per claim and settle (default 128, what a host
//! at concurrency 128 claims). Prints one JSON row of jobs per second, and writes it to
//! `BENCH_OUT` when set.
//!
//! Run: `cargo bench -p kiln --bench redis_store`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln::store::{
    AttemptRecord, JobStore, NewJob, OutcomeClass, Progress, RedisStore, RedisTarget, SettleAction,
    Settlement, Timestamp,
};

/// The clock the store sees: fixed, so no job falls due or expires during a phase.
const T0: Timestamp = Timestamp(1_700_000_000_000);

/// Leases the bench claims with.
const LEASE: Duration = Duration::from_secs(60);

/// Jobs of the phases that do one round trip per job (progress) or read every job (recover).
const SMALL_JOBS: usize = 10_000;

/// Wake-ups averaged for the latency.
const WAKE_ROUNDS: u32 = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A `redis-server` this bench started, without persistence; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settlement(job: &kiln::store::Job, action: SettleAction) -> Settlement {
    Settlement {
        id: job.id.clone(),
        owner: "bench".to_owned(),
        attempt: Some(AttemptRecord {
            attempt: job.attempts,
            digest: Some("sha256:bench".to_owned()),
            started_at: T0,
            ended_at: T0,
            outcome: OutcomeClass::Ok,
            message: None,
            wall_ms: 1,
            fuel: None,
            http: None,
            tcp: None,
            log: String::new(),
            log_truncated: false,
        }),
        action,
    }
}

/// Enqueues `count` jobs into `queue` in batches of 1,000; returns jobs per second.
async fn enqueue(store: &RedisStore, queue: &str, count: usize) -> f64 {
    let started = Instant::now();
    for first in (0..count).step_by(1_000) {
        let batch = (first..count.min(first + 1_000))
            .map(|n| NewJob::new("echo", queue, n.to_string().into_bytes()))
            .collect();
        store.enqueue(batch, T0).await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// Seconds spent claiming and settling.
#[derive(Default)]
struct Drained {
    jobs: usize,
    claim_s: f64,
    settle_s: f64,
}

impl Drained {
    fn rates(&self) -> serde_json::Value {
        let rate = |secs: f64| (self.jobs as f64 / secs).round();
        serde_json::json!({
            "claim": rate(self.claim_s),
            "settle": rate(self.settle_s),
            "claim_settle": rate(self.claim_s + self.settle_s),
        })
    }
}

/// Claims and settles every job of `queue`, `batch` at a time, with `action`; `progress`
/// first reports progress on each claimed job (outside the timings), so its record changed
/// before it is settled.
async fn drain(
    store: &RedisStore,
    queue: &str,
    batch: usize,
    action: &SettleAction,
    progress: bool,
) -> Drained {
    let mut drained = Drained::default();
    loop {
        let started = Instant::now();
        let claimed = store.claim(queue, batch, "bench", LEASE, T0).await.unwrap();
        drained.claim_s += started.elapsed().as_secs_f64();
        if claimed.is_empty() {
            return drained;
        }
        if progress {
            for job in &claimed {
                let halfway = Progress {
                    percent: 50,
                    message: None,
                };
                store.progress(&job.id, "bench", halfway, T0).await.unwrap();
            }
        }
        let settlements = claimed
            .iter()
            .map(|job| settlement(job, action.clone()))
            .collect();
        let started = Instant::now();
        let stale = store.settle(settlements, T0).await.unwrap();
        drained.settle_s += started.elapsed().as_secs_f64();
        assert!(stale.is_empty(), "{} stale settlements", stale.len());
        drained.jobs += claimed.len();
    }
}

/// Claims every job of `queue` and lets the leases expire; returns expired leases the
/// reaper takes back per second.
async fn recover(store: &RedisStore, queue: &str) -> f64 {
    while !store
        .claim(queue, 1_000, "bench", LEASE, T0)
        .await
        .unwrap()
        .is_empty()
    {}
    let after = T0 + LEASE + Duration::from_secs(1);
    let started = Instant::now();
    let recovered = store.recover(after).await.unwrap();
    assert_eq!(recovered, SMALL_JOBS);
    recovered as f64 / started.elapsed().as_secs_f64()
}

/// How long a `wait` takes to return after another handle enqueues, averaged.
async fn wake_latency(store: &RedisStore) -> Duration {
    let producer = RedisStore::open(store.target().clone()).await.unwrap();
    let queues = ["latency".to_owned()];
    let mut total = Duration::ZERO;
    for round in 0..WAKE_ROUNDS {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let waiter = {
            let (store, queues) = (store.clone(), queues.clone());
            tokio::spawn(async move {
                let wait = store.wait(&queues, T0, Duration::from_secs(60));
                let _ = ready_tx.send(());
                wait.await.unwrap();
                Instant::now()
            })
        };
        ready_rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent = Instant::now();
        let job = NewJob::new("echo", "latency", round.to_string().into_bytes());
        producer.enqueue(vec![job], T0).await.unwrap();
        total += waiter.await.unwrap() - sent;
        store.claim("latency", 1, "bench", LEASE, T0).await.unwrap();
    }
    total / WAKE_ROUNDS
}

async fn run(url: String) -> serde_json::Value {
    let jobs: usize = env_or("BENCH_JOBS", 100_000);
    let batch: usize = env_or("BENCH_BATCH", 128);
    let namespace = format!("bench-{}", std::process::id());
    let target = RedisTarget::server(url).with_namespace(namespace);
    let store = RedisStore::open(target).await.unwrap();
    let succeed = SettleAction::Succeed { result: Vec::new() };
    let enqueue_rate = enqueue(&store, "kept", jobs).await;
    let kept = drain(&store, "kept", batch, &succeed, false).await;
    enqueue(&store, "deleted", jobs).await;
    let delete = SettleAction::SucceedAndDelete;
    let deleted = drain(&store, "deleted", batch, &delete, false).await;
    enqueue(&store, "progress", SMALL_JOBS).await;
    let progressed = drain(&store, "progress", batch, &succeed, true).await;
    enqueue(&store, "expired", SMALL_JOBS).await;
    let recover_rate = recover(&store, "expired").await;
    let latency = wake_latency(&store).await;
    serde_json::json!({
        "jobs": jobs,
        "batch": batch,
        "enqueue": enqueue_rate.round(),
        "succeed_keep": kept.rates(),
        "succeed_delete": deleted.rates(),
        "succeed_after_progress": progressed.rates(),
        "recover": recover_rate.round(),
        "wake_latency_ms": latency.as_secs_f64() * 1000.0,
    })
}

fn main() {
    let (server, url) = match std::env::var("BENCH_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = Server::start();
            let url = format!("redis://127.0.0.1:{}", server.port);
            (Some(server), url)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let row = runtime.block_on(run(url));
    drop(server);
    println!("{row}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, row.to_string()).unwrap();
    }
}
