//! End-to-end job benchmarks on the embedded store: no-op `echo` jobs enqueued in batches
//! then drained by a worker, and enqueue -> start latency with an idle host.
//! Run with `cargo bench -p kiln --bench jobs`; figures go to BENCHMARKS.md.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln::config::Config;
use kiln::registry::Registry;
use kiln::store::{AnyStore, Durability, EmbeddedStore, JobStore, NewJob, Timestamp};
use kiln::worker::{SystemClock, Worker};

const JOBS: usize = 100_000;
const ENQUEUE_BATCH: usize = 1_000;
const LATENCY_SAMPLES: usize = 200;

mod common;
use common::root;

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<AnyStore>,
    config: Arc<Config>,
    registry: Arc<Registry>,
}

async fn setup(durability: Durability, concurrency: usize) -> Setup {
    let host = common::echo_host(concurrency, "path = \"kiln.db\"", 1_000_000).await;
    let store = EmbeddedStore::open(host.dir.path().join("kiln.db"), durability).unwrap();
    Setup {
        store: Arc::new(AnyStore::Embedded(store)),
        config: host.config,
        registry: host.registry,
        _dir: host.dir,
    }
}

fn start_worker(
    setup: &Setup,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let worker = Worker::new(
        setup.store.clone(),
        setup.registry.clone(),
        setup.config.clone(),
        Arc::new(SystemClock),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (tx, task)
}

async fn succeeded(store: &AnyStore) -> u64 {
    store
        .counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.succeeded)
        .sum()
}

async fn throughput(durability: Durability) {
    let setup = setup(durability, 64).await;
    let started = Instant::now();
    for _ in 0..JOBS / ENQUEUE_BATCH {
        let batch = (0..ENQUEUE_BATCH)
            .map(|_| NewJob::new("echo", "default", b"{}".to_vec()))
            .collect();
        setup.store.enqueue(batch, Timestamp::now()).await.unwrap();
    }
    let enqueue = started.elapsed();
    let started = Instant::now();
    let (stop, task) = start_worker(&setup);
    while succeeded(&setup.store).await < JOBS as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain = started.elapsed();
    let _ = stop.send(());
    task.await.unwrap();
    println!(
        "embedded ({durability:?}): enqueued {JOBS} in {enqueue:.2?} ({:.0} jobs/s); \
         drained in {drain:.2?} ({:.0} jobs/s)",
        JOBS as f64 / enqueue.as_secs_f64(),
        JOBS as f64 / drain.as_secs_f64()
    );
}

async fn latency() {
    let setup = setup(Durability::Normal, 8).await;
    let (stop, task) = start_worker(&setup);
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let enqueued_at = Timestamp::now();
        let job = NewJob::new("echo", "default", b"{}".to_vec());
        let id = setup.store.enqueue(vec![job], enqueued_at).await.unwrap()[0]
            .id
            .clone();
        let started_at = loop {
            let job = setup.store.get(&id).await.unwrap().unwrap();
            if let Some(attempt) = job.history.first() {
                break attempt.started_at;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        samples.push(started_at.since(enqueued_at));
        // Let the host go idle again before the next sample.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "embedded enqueue -> start, idle host, {LATENCY_SAMPLES} jobs: p50 {:?}, p99 {:?} \
         (millisecond timestamps)",
        at(0.5),
        at(0.99)
    );
    let _ = stop.send(());
    task.await.unwrap();
}

fn main() {
    if !root().join("target/guests/echo.wasm").exists() {
        let status = Command::new("bash")
            .arg(root().join("guests/build.sh"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        throughput(Durability::Normal).await;
        throughput(Durability::Full).await;
        latency().await;
    });
}
