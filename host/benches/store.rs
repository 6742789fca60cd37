//! Throughput of the embedded store alone (no wasm, no worker): enqueue 100,000 jobs in
//! batches of 1,000, then claim and settle them in batches of 128, for both durability
//! modes. Each settlement carries an attempt record, as a worker's does.
//! Run with `cargo bench -p kiln --bench store`; figures go to BENCHMARKS.md.

use std::time::{Duration, Instant};

use kiln::store::{
    AttemptRecord, Durability, EmbeddedStore, Job, JobStore, NewJob, OutcomeClass, SettleAction,
    Settlement, Timestamp,
};

const JOBS: usize = 100_000;
const ENQUEUE_BATCH: usize = 1_000;
const CLAIM_BATCH: usize = 128;

/// The one clock reading every call gets: the store never reads the clock itself, and a
/// fixed time keeps every job due and every lease held for the whole run.
const NOW: Timestamp = Timestamp(1_700_000_000_000);
const LEASE: Duration = Duration::from_secs(30);
const OWNER: &str = "w";

/// Time spent in each phase.
#[derive(Default)]
struct Phases {
    enqueue: Duration,
    claim: Duration,
    settle: Duration,
}

async fn enqueue_all(store: &EmbeddedStore, phases: &mut Phases) {
    let started = Instant::now();
    for _ in 0..JOBS / ENQUEUE_BATCH {
        let batch = (0..ENQUEUE_BATCH)
            .map(|_| NewJob::new("echo", "bench", b"{}".to_vec()))
            .collect();
        store.enqueue(batch, NOW).await.unwrap();
    }
    phases.enqueue = started.elapsed();
}

/// Claims and settles until the queue is empty; returns how many jobs were processed.
async fn drain(store: &EmbeddedStore, phases: &mut Phases) -> usize {
    let mut done = 0;
    loop {
        let started = Instant::now();
        let claimed = store
            .claim("bench", CLAIM_BATCH, OWNER, LEASE, NOW)
            .await
            .unwrap();
        phases.claim += started.elapsed();
        if claimed.is_empty() {
            return done;
        }
        done += claimed.len();
        let batch = claimed.iter().map(succeeded).collect();
        let started = Instant::now();
        assert!(store.settle(batch, NOW).await.unwrap().is_empty());
        phases.settle += started.elapsed();
    }
}

/// The settlement a worker sends for `job` after its handler returned.
fn succeeded(job: &Job) -> Settlement {
    Settlement {
        id: job.id.clone(),
        owner: OWNER.to_owned(),
        attempt: Some(AttemptRecord {
            attempt: job.attempts,
            digest: Some("sha256:test".to_owned()),
            started_at: job.updated_at,
            ended_at: NOW,
            outcome: OutcomeClass::Ok,
            message: None,
            wall_ms: 1,
            fuel: Some(42),
            http: None,
            tcp: None,
            log: String::new(),
            log_truncated: false,
        }),
        action: SettleAction::Succeed { result: Vec::new() },
    }
}

async fn throughput(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("kiln.db"), durability).unwrap();
    let mut phases = Phases::default();
    enqueue_all(&store, &mut phases).await;
    assert_eq!(drain(&store, &mut phases).await, JOBS);
    let processed = phases.claim + phases.settle;
    let rate = |d: Duration| JOBS as f64 / d.as_secs_f64();
    println!(
        "{durability:?}: enqueue {:.0} jobs/s, claim {:.0} jobs/s, settle {:.0} jobs/s, \
         claim+settle {:.0} jobs/s, end to end {:.0} jobs/s",
        rate(phases.enqueue),
        rate(phases.claim),
        rate(phases.settle),
        rate(processed),
        rate(phases.enqueue + processed)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        throughput(Durability::Normal).await;
        throughput(Durability::Full).await;
    });
}
