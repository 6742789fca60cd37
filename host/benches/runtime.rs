//! Runtime benchmarks: instantiate + call `echo` (pooling, no pooling, a native call as the
//! floor), reload latency from file write to new version serving, and warm start from the
//! artifact cache. Run with `cargo bench -p kiln --bench runtime`; figures go to
//! BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln::registry::{Registry, digest};
use kiln::reload::Watcher;
use kiln::{Change, Grants, JobHooks, JobInput, JobLimits, Runtime, RuntimeSettings};
use tokio_util::sync::CancellationToken;

const CALLS: usize = 20_000;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn guest(name: &str) -> PathBuf {
    root().join("target/guests").join(format!("{name}.wasm"))
}

fn job() -> JobInput {
    JobInput {
        id: "bench".into(),
        handler: "echo".into(),
        queue: "default".into(),
        payload: b"{}".to_vec(),
        attempt: 1,
        max_attempts: 1,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn latency(runtime: &Runtime) -> (Duration, Duration) {
    let echo = runtime.load_handler(&guest("echo"), None).unwrap();
    let (job, limits, cancel) = (job(), JobLimits::default(), CancellationToken::new());
    let mut times = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        let attempt = runtime
            .run(
                &echo,
                &job,
                &limits,
                &Grants::default(),
                JobHooks::default(),
                &cancel,
            )
            .await;
        times.push(started.elapsed());
        assert!(matches!(attempt.outcome, kiln::Outcome::Ok(_)));
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

async fn throughput(runtime: Arc<Runtime>, tasks: usize) -> f64 {
    let echo = Arc::new(runtime.load_handler(&guest("echo"), None).unwrap());
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (runtime, echo) = (runtime.clone(), echo.clone());
        handles.push(tokio::spawn(async move {
            let (job, limits, cancel) = (job(), JobLimits::default(), CancellationToken::new());
            let mut calls = 0u64;
            while started.elapsed() < THROUGHPUT_WINDOW {
                runtime
                    .run(
                        &echo,
                        &job,
                        &limits,
                        &Grants::default(),
                        JobHooks::default(),
                        &cancel,
                    )
                    .await;
                calls += 1;
            }
            calls
        }));
    }
    let mut calls = 0;
    for handle in handles {
        calls += handle.await.unwrap();
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

#[inline(never)]
fn native_echo(payload: &[u8]) -> Vec<u8> {
    payload.to_vec()
}

fn native_floor() -> Duration {
    let payload = b"{}".to_vec();
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(native_echo(std::hint::black_box(&payload)));
    }
    started.elapsed() / CALLS as u32
}

fn settings(pooling: bool) -> RuntimeSettings {
    RuntimeSettings {
        max_instances: 64,
        max_memory: 64 << 20,
        pooling,
    }
}

async fn reload_latency(name: &str, rounds: u32) -> (u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest(name)).unwrap();
    let runtime = Arc::new(Runtime::new(settings(true)).unwrap());
    let registry = Arc::new(Registry::new(runtime, dir.path().to_owned(), None));
    let watcher = Watcher::start(registry.clone()).unwrap();
    let mut changes = watcher.subscribe();
    let mut times = Vec::new();
    for n in 0..rounds {
        let mut version = bytes.clone();
        version.extend_from_slice(&[0, 6, 4, b'k', b'i', b'l', b'n', n as u8]);
        let wanted = digest(&version);
        let started = Instant::now();
        std::fs::write(dir.path().join("h.wasm"), &version).unwrap();
        loop {
            match changes.recv().await.unwrap() {
                Change::Added { digest, .. } | Change::Replaced { digest, .. }
                    if digest == wanted =>
                {
                    break;
                }
                _ => {}
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    (bytes.len() as u64, percentile(&times, 0.5))
}

async fn warm_start(handlers: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let echo = std::fs::read(guest("echo")).unwrap();
    for n in 0..handlers {
        let mut version = echo.clone();
        version.extend_from_slice(&[0, 6, 4, b'k', b'i', b'l', b'n', n as u8]);
        std::fs::write(dir.path().join(format!("h{n}.wasm")), version).unwrap();
    }
    let runtime = Arc::new(Runtime::new(settings(true)).unwrap());
    let cold = Registry::new(
        runtime.clone(),
        dir.path().into(),
        Some(cache.path().into()),
    );
    cold.load_all().await.unwrap();
    let warm = Registry::new(runtime, dir.path().into(), Some(cache.path().into()));
    let started = Instant::now();
    warm.load_all().await.unwrap();
    let took = started.elapsed();
    assert_eq!(warm.handlers().len(), handlers);
    took
}

fn main() {
    if !guest("echo").exists() || !guest("big").exists() {
        let status = Command::new("bash")
            .arg(root().join("guests/build.sh"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let one = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let two = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    println!("native echo call (floor): {:?}", native_floor());
    for pooling in [true, false] {
        let runtime = Arc::new(Runtime::new(settings(pooling)).unwrap());
        let (p50, p99) = one.block_on(latency(&runtime));
        let single = one.block_on(throughput(runtime.clone(), 1));
        let double = two.block_on(throughput(runtime, 8));
        println!(
            "instantiate+call echo, pooling={pooling}: median {p50:?}, p99 {p99:?}, \
             {single:.0} calls/s on 1 thread, {double:.0} calls/s on 2 threads"
        );
    }
    for name in ["fanout", "big"] {
        let (size, p50) = two.block_on(reload_latency(name, 10));
        println!("reload latency, {name} ({size} bytes): median {p50:?} (write -> serving)");
    }
    println!(
        "warm start, 50 handlers from the cache: {:?}",
        two.block_on(warm_start(50))
    );
}
