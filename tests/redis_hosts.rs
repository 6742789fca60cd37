//! Many `kiln run` processes sharing one Redis: every job completes exactly once, a host
//! killed with `kill -9` has its jobs finished by the others, a Redis restart mid-run
//! (append-only file on) loses nothing, and a Redis stalled longer than the lease takes no
//! job from a host that is alive while the CLI says the store is unreachable.

use std::time::{Duration, Instant};

use kiln::store::{
    AnyStore, Job, JobState, JobStore, ListFilter, NewJob, OutcomeClass, Page, RedisTarget,
    Timestamp,
};

use crate::cli::{Host, LAST_ATTEMPT_SPIN, Project, two_signals_hand_back_the_last_attempt};
use crate::redis_server::RedisServer;

/// Keeps every finished job, so the tests can inspect all of them.
const KEEP_ALL: &str =
    "[defaults]\nretention = { succeeded = { count = 1000000, age = \"1d\" } }\n";

fn project(redis: &RedisServer, handlers: &[&str], host_keys: &str) -> Project {
    let store = format!("[store]\nurl = \"{}\"\n{KEEP_ALL}", redis.url());
    Project::with_store(handlers, host_keys, &store)
}

async fn store(redis: &RedisServer) -> AnyStore {
    AnyStore::open_redis(RedisTarget::server(redis.url()))
        .await
        .unwrap()
}

async fn enqueue(store: &AnyStore, handler: &str, payload: &str, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let jobs = chunk
            .iter()
            .map(|_| NewJob::new(handler, "default", payload.as_bytes().to_vec()))
            .collect();
        store.enqueue(jobs, Timestamp::now()).await.unwrap();
    }
}

/// Succeeded jobs in the store; errors (Redis restarting) count as none yet.
async fn succeeded(store: &AnyStore) -> u64 {
    match store.counts().await {
        Ok(counts) => counts.iter().map(|c| c.succeeded).sum(),
        Err(_) => 0,
    }
}

async fn until_succeeded(project: &Project, store: &AnyStore, jobs: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let done = succeeded(store).await;
        if done >= jobs {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {jobs} jobs succeeded; host logs:\n{}",
            project.host_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn all_jobs(store: &AnyStore) -> Vec<Job> {
    let page = Page {
        offset: 0,
        limit: 100_000,
    };
    store.list(ListFilter::default(), page).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_run_ten_thousand_jobs_exactly_once() {
    const JOBS: usize = 10_000;
    let redis = RedisServer::start();
    let project = project(&redis, &["echo"], "");
    let store = store(&redis).await;
    enqueue(&store, "echo", "{}", JOBS).await;
    let hosts: Vec<Host> = (0..3).map(|_| project.host()).collect();
    until_succeeded(&project, &store, JOBS as u64, Duration::from_secs(300)).await;
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.len(), JOBS, "no job lost, none duplicated");
    for job in &jobs {
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.attempts, 1, "job {} ran more than once", job.id);
        assert_eq!(job.history.len(), 1);
    }
    for host in hosts {
        assert!(host.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_hosts_finish_the_jobs_of_a_killed_host() {
    const JOBS: usize = 300;
    let redis = RedisServer::start();
    let project = project(&redis, &["progress"], "lease = \"1s\"");
    let store = store(&redis).await;
    enqueue(&store, "progress", r#"{"pause_ms":10}"#, JOBS).await;
    let mut hosts: Vec<Host> = (0..3).map(|_| project.host()).collect();
    until_succeeded(&project, &store, 30, Duration::from_secs(120)).await;
    hosts.remove(0).kill_9();
    until_succeeded(&project, &store, JOBS as u64, Duration::from_secs(300)).await;
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.len(), JOBS);
    assert!(jobs.iter().all(|j| j.state == JobState::Succeeded));
    let recovered = jobs
        .iter()
        .filter(|j| j.history.iter().any(|a| a.outcome == OutcomeClass::Lost))
        .count();
    assert!(
        recovered > 0,
        "the killed host's running jobs were taken over"
    );
    for host in hosts {
        assert!(host.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_loses_no_job() {
    const JOBS: usize = 300;
    let mut redis = RedisServer::persistent();
    let project = project(&redis, &["progress"], "lease = \"2s\"");
    let store = store(&redis).await;
    enqueue(&store, "progress", r#"{"pause_ms":5}"#, JOBS).await;
    let hosts: Vec<Host> = (0..2).map(|_| project.host()).collect();
    until_succeeded(&project, &store, 30, Duration::from_secs(120)).await;
    redis.restart();
    until_succeeded(&project, &store, JOBS as u64, Duration::from_secs(300)).await;
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.len(), JOBS);
    assert!(jobs.iter().all(|j| j.state == JobState::Succeeded));
    for host in hosts {
        assert!(host.terminate().success(), "hosts survive the restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_longer_than_the_lease_takes_no_job_from_a_live_host() {
    const LEASE: Duration = Duration::from_secs(2);
    let redis = RedisServer::start();
    let project = project(&redis, &["progress"], "lease = \"2s\"");
    let store = store(&redis).await;
    enqueue(&store, "progress", r#"{"pause_ms":1000}"#, 1).await;
    let host = project.host();
    let deadline = Instant::now() + Duration::from_secs(60);
    while all_jobs(&store).await[0].state != JobState::Active {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    redis.stall();
    // A job command against the stopped server ends, saying which store it could not reach.
    let out = project.run(&["stats"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&redis.url()), "{stderr}");
    // The stall itself, whatever the command took: twice the lease.
    std::thread::sleep(2 * LEASE);
    redis.resume();

    until_succeeded(&project, &store, 1, Duration::from_secs(60)).await;
    let job = &all_jobs(&store).await[0];
    let outcomes: Vec<OutcomeClass> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [OutcomeClass::Ok],
        "ran once, kept by its host: {job:?}"
    );
    assert_eq!(job.attempts, 1);
    assert!(host.terminate().success());
}

#[test]
fn two_signals_do_not_use_up_the_last_attempt_on_redis() {
    let redis = RedisServer::start();
    let store = format!("[store]\nurl = \"{}\"\n", redis.url());
    let project = Project::with_store(&["spin"], LAST_ATTEMPT_SPIN, &store);
    two_signals_hand_back_the_last_attempt(&project);
}
