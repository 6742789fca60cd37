//! Kiln's side of the side-by-side Redis benchmark (`bench/peers.sh`): enqueue no-op `echo`
//! jobs in batches, drain them with one in-process host, then measure enqueue -> start latency
//! on the idle host with jobs sent one at a time. Follows the whole-run protocol of
//! `bench/run.py` (`KILN_BENCH_CMD`): reads `BENCH_REDIS_URL`, `BENCH_JOBS`, `BENCH_LAT_JOBS`,
//! `BENCH_GAP_MS`, `BENCH_TIMEOUT_S`, writes a JSON row to `BENCH_OUT`.
//! `KILN_BENCH_KEEP` is how many succeeded jobs the host keeps (default 0, so each job is
//! deleted as it succeeds, as BullMQ's workers do with `removeOnComplete: true`);
//! `KILN_BENCH_CONCURRENCY` its concurrency (default 64) and `KILN_BENCH_THREADS` its
//! `host.threads` (default: one per CPU, as `kiln run`).
//!
//! Run alone: `BENCH_REDIS_URL=redis://127.0.0.1:6379 BENCH_OUT=/tmp/kiln.json cargo bench -p kiln --bench redis`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln::events::{Event, Events, Observer};
use kiln::store::{AnyStore, Job, JobStore, NewJob, RedisTarget, Timestamp};
use kiln::worker::{SystemClock, Worker};

const BATCH: usize = 1_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

mod common;

/// What the start observer records: throughput jobs by count and first/last start, latency jobs
/// (payload `{"n": k}`) by their start time.
#[derive(Default)]
struct Starts {
    count: AtomicU64,
    first_last: Mutex<Option<(Instant, Instant)>>,
    latency: Mutex<HashMap<u64, Instant>>,
}

impl Observer for Starts {
    fn observe(&self, event: &Event<'_>) {
        if let Event::AttemptStarted { job, .. } = event {
            self.record(job);
        }
    }
}

impl Starts {
    fn record(&self, job: &Job) {
        let now = Instant::now();
        if job.payload.starts_with(b"{\"n\":") {
            let text = String::from_utf8_lossy(&job.payload[5..job.payload.len() - 1]).into_owned();
            if let Ok(n) = text.parse() {
                self.latency.lock().unwrap().insert(n, now);
            }
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut slot = self.first_last.lock().unwrap();
        let (first, _) = slot.unwrap_or((now, now));
        *slot = Some((first, now));
    }
}

async fn run() -> serde_json::Value {
    let url = std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let jobs: usize = env_or("BENCH_JOBS", 100_000);
    let lat_jobs: u64 = env_or("BENCH_LAT_JOBS", 1_000);
    let gap = Duration::from_millis(env_or("BENCH_GAP_MS", 5));
    let timeout = Duration::from_secs(env_or("BENCH_TIMEOUT_S", 600));
    let concurrency: usize = env_or("KILN_BENCH_CONCURRENCY", 64);
    let keep: u64 = env_or("KILN_BENCH_KEEP", 0);
    let threads = threads().map_or("one per CPU".to_owned(), |n| n.to_string());
    let store = Arc::new(
        AnyStore::open_redis(RedisTarget::server(url.clone()))
            .await
            .unwrap(),
    );

    let started = Instant::now();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(BATCH) {
        let batch = chunk
            .iter()
            .map(|_| NewJob::new("echo", "default", b"{}".to_vec()))
            .collect();
        store.enqueue(batch, Timestamp::now()).await.unwrap();
    }
    let enqueue_s = started.elapsed().as_secs_f64();

    let boot = Instant::now();
    let store_toml = format!("url = \"{url}\"");
    let common::EchoHost {
        dir: _dir,
        config,
        registry,
    } = common::echo_host(concurrency, &store_toml, keep).await;
    let starts = Arc::new(Starts::default());
    let events = Events::logging().with(starts.clone());
    let worker =
        Worker::new(store.clone(), registry, config, Arc::new(SystemClock)).with_events(events);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let host = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let startup_s = boot.elapsed().as_secs_f64();

    let deadline = Instant::now() + timeout;
    while starts.count.load(Ordering::Relaxed) < jobs as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_count = starts.count.load(Ordering::Relaxed);
    let (first, last) = starts.first_last.lock().unwrap().unwrap();
    let drain_s = last.duration_since(first).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut sent = HashMap::new();
    for n in 0..lat_jobs {
        let job = NewJob::new("echo", "default", format!("{{\"n\":{n}}}").into_bytes());
        sent.insert(n, Instant::now());
        store.enqueue(vec![job], Timestamp::now()).await.unwrap();
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = starts.latency.lock().unwrap().clone();
    let mut latencies: Vec<f64> = seen
        .iter()
        .map(|(n, at)| at.duration_since(sent[n]).as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let left: u64 = store
        .counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.waiting + c.scheduled + c.active)
        .sum();
    let _ = stop.send(());
    host.await.unwrap().unwrap();
    serde_json::json!({
        "enqueued": jobs,
        "enqueue_s": enqueue_s,
        "startup_s": startup_s,
        "drain_count": drain_count,
        "drain_s": drain_s,
        "processed": drain_count,
        "left": left,
        "lat_p50_ms": at(0.5),
        "lat_p99_ms": at(0.99),
        "lat_processed": latencies.len(),
        "config": format!(
            "1 host process, threads {threads}, concurrency {concurrency}, keeps {keep} succeeded jobs"
        ),
    })
}

/// The host's `threads`: `KILN_BENCH_THREADS`, or none set (one per CPU).
fn threads() -> Option<usize> {
    std::env::var("KILN_BENCH_THREADS").ok()?.parse().ok()
}

fn main() {
    let runtime = kiln::cli::async_runtime(threads()).unwrap();
    let row = runtime.block_on(run());
    println!("{row}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, row.to_string()).unwrap();
    }
}
