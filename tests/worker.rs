//! The worker on the embedded store: retries, backoff and dead jobs driven by a controlled
//! clock, handlers that are not loaded, cancelling a running job, child jobs, progress, and
//! graceful shutdown returning unfinished jobs to their queue.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kiln::config::Config;
use kiln::registry::Registry;
use kiln::store::{
    AnyStore, CancelOutcome, Job, JobState, JobStore, NewJob, OutcomeClass, Timestamp,
};
use kiln::worker::{Clock, Worker};
use serde_json::json;
use tokio::sync::oneshot;

use crate::util::{guest, install, runtime};

/// A clock that moves only when the test says so.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock standing at `ms` milliseconds since the Unix epoch.
    pub fn at(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }

    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(i64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A worker on a temporary directory: handlers, SQLite store and a manual clock.
struct TestHost {
    /// Keeps the temporary directory alive for as long as the host.
    _dir: tempfile::TempDir,
    store: Arc<AnyStore>,
    config: Arc<Config>,
    registry: Arc<Registry>,
    clock: Arc<ManualClock>,
    shutdown: Option<oneshot::Sender<()>>,
    worker: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub const START: i64 = 1_800_000_000_000;

impl TestHost {
    async fn start(handlers: &[&str], extra_config: &str) -> TestHost {
        Self::start_with(handlers, "", extra_config).await
    }

    /// Like `start`, with `host_keys` added to the `[host]` table.
    async fn start_with(handlers: &[&str], host_keys: &str, extra_config: &str) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let handlers_dir = dir.path().join("handlers");
        std::fs::create_dir(&handlers_dir).unwrap();
        for name in handlers {
            install(&guest(name), &handlers_dir, &format!("{name}.wasm"));
        }
        let text = format!(
            "[host]\nhandlers_dir = \"handlers\"\nconcurrency = 8\nlease = \"3s\"\n\
             shutdown_grace = \"200ms\"\n{host_keys}\n[store]\npath = \"kiln.db\"\n{extra_config}"
        );
        let config_path = dir.path().join("config.toml");
        let config = Config::from_toml_str(&text, &config_path, Vec::new()).unwrap();
        let store = Arc::new(AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap());
        let registry = Arc::new(Registry::new(runtime(), handlers_dir, None));
        registry.load_all().await.unwrap();
        let mut host = TestHost {
            _dir: dir,
            store,
            config: Arc::new(config),
            registry,
            clock: Arc::new(ManualClock(AtomicI64::new(START))),
            shutdown: None,
            worker: None,
        };
        host.spawn_worker();
        host
    }

    fn spawn_worker(&mut self) {
        let worker = Worker::new(
            self.store.clone(),
            self.registry.clone(),
            self.config.clone(),
            self.clock.clone(),
        );
        let (tx, rx) = oneshot::channel();
        self.shutdown = Some(tx);
        self.worker = Some(tokio::spawn(worker.run(async {
            let _ = rx.await;
        })));
    }

    async fn stop(&mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.worker.take().unwrap().await.unwrap().unwrap();
    }

    async fn enqueue(&self, handler: &str, payload: serde_json::Value) -> String {
        let queue = self.config.queue_for(handler).to_owned();
        let mut job = NewJob::new(handler, queue, payload.to_string().into_bytes());
        job.max_attempts = self.config.job_settings(handler, &job.queue).max_attempts;
        let enqueued = self
            .store
            .enqueue(vec![job], self.clock.now())
            .await
            .unwrap();
        enqueued[0].id.clone()
    }

    /// Waits (real time, bounded) until the job satisfies `done`.
    async fn until(&self, id: &str, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        for _ in 0..600 {
            let job = self.store.get(id).await.unwrap().expect("job exists");
            if done(&job) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let job = self.store.get(id).await.unwrap();
        panic!("job {id} never became {what}: {job:?}");
    }

    async fn until_state(&self, id: &str, state: JobState) -> Job {
        self.until(id, state.as_str(), |job| job.state == state)
            .await
    }

    fn handlers_dir(&self) -> &Path {
        &self.config.host.handlers_dir
    }
}

const NO_JITTER: &str = "[defaults]\nmax_attempts = 3\n\
    backoff = { initial = \"10s\", max = \"1m\", jitter = 0.0 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_exponentially_then_the_job_dies() {
    let mut host = TestHost::start(&["flaky"], NO_JITTER).await;
    let id = host.enqueue("flaky", json!({"fail_times": 5})).await;
    for (attempt, backoff) in [(1, 10), (2, 20)] {
        let job = host
            .until(&id, &format!("retrying after attempt {attempt}"), |j| {
                j.attempts == attempt && j.state == JobState::Scheduled
            })
            .await;
        let ended = job.history.last().unwrap().ended_at;
        assert_eq!(job.run_at, ended + Duration::from_secs(backoff));
        assert_eq!(job.history.last().unwrap().outcome, OutcomeClass::Error);
        // Not due yet: the job stays scheduled until the clock reaches run_at.
        host.clock
            .advance(Duration::from_secs(backoff) - Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = host.store.get(&id).await.unwrap().unwrap();
        assert_eq!(waiting.attempts, attempt, "ran before its backoff was over");
        host.clock.advance(Duration::from_millis(1));
    }
    let job = host.until_state(&id, JobState::Failed).await;
    assert_eq!(job.attempts, 3);
    assert_eq!(job.history.len(), 3);
    assert!(job.error.unwrap().contains("fails on purpose"));
    host.stop().await;
}

/// With a succeeded retention of 0, a job is deleted as it succeeds: it is never seen
/// succeeded, while a failed job is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_nobody_keeps_is_deleted_as_it_succeeds() {
    let config = "[defaults]\nmax_attempts = 1\nretention = { succeeded = { count = 0 } }\n";
    let mut host = TestHost::start(&["flaky"], config).await;
    let fails = host.enqueue("flaky", json!({"fail_times": 1})).await;
    let succeeds = host.enqueue("flaky", json!({"fail_times": 0})).await;
    host.until_state(&fails, JobState::Failed).await;
    let mut seen = Vec::new();
    for _ in 0..600 {
        match host.store.get(&succeeds).await.unwrap() {
            Some(job) => seen.push(job.state),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.dedup();
    assert!(
        host.store.get(&succeeds).await.unwrap().is_none(),
        "{seen:?}"
    );
    assert!(!seen.contains(&JobState::Succeeded), "{seen:?}");
    let counts = &host.store.counts().await.unwrap()[0];
    assert_eq!((counts.succeeded, counts.failed), (0, 1));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_keeps_its_jobs_by_its_own_retention() {
    let config = "[queues.bulk]\nretention = { succeeded = { count = 0 } }\n\
                  [handlers.flaky]\nqueue = \"bulk\"\n";
    let mut host = TestHost::start(&["echo", "flaky"], config).await;
    let kept = host.enqueue("echo", json!("hi")).await;
    let dropped = host.enqueue("flaky", json!({"fail_times": 0})).await;
    host.until_state(&kept, JobState::Succeeded).await;
    for _ in 0..600 {
        if host.store.get(&dropped).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        host.store.get(&dropped).await.unwrap().is_none(),
        "a success on `bulk`, which keeps none, is deleted"
    );
    let kept = host.store.get(&kept).await.unwrap().unwrap();
    assert_eq!(
        kept.result.as_deref(),
        Some(&b"\"hi\""[..]),
        "`default` keeps its own"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_may_ask_for_a_longer_delay() {
    let mut host = TestHost::start(&["flaky"], NO_JITTER).await;
    let id = host
        .enqueue("flaky", json!({"fail_times": 1, "delay_ms": 90_000}))
        .await;
    let job = host
        .until(&id, "scheduled", |j| j.state == JobState::Scheduled)
        .await;
    let ended = job.history[0].ended_at;
    assert_eq!(job.run_at, ended + Duration::from_secs(90));
    host.clock.advance(Duration::from_secs(90));
    let job = host.until_state(&id, JobState::Succeeded).await;
    assert_eq!(job.result.as_deref(), Some(&br#"{"attempt":2}"#[..]));
    host.stop().await;
}

/// A job whose handler is not loaded is parked (offered once, then not again for the park)
/// and runs as soon as its handler is loaded: the clock never moves here, so only the
/// load's wake-up can run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_job_runs_as_soon_as_its_handler_is_loaded() {
    let mut host = TestHost::start_with(&[], "unknown_handler_grace = \"10m\"", "").await;
    let late = host.enqueue("late", json!("hello")).await;
    let job = host
        .until(&late, "parked", |j| j.state == JobState::Scheduled)
        .await;
    assert_eq!(job.attempts, 0);
    assert_eq!(
        job.run_at,
        Timestamp(START + 30_000),
        "parked for the park limit"
    );

    install(&guest("echo"), host.handlers_dir(), "late.wasm");
    host.registry
        .reload(&host.handlers_dir().join("late.wasm"))
        .await;
    let job = host.until_state(&late, JobState::Succeeded).await;
    assert_eq!(job.result.as_deref(), Some(&b"\"hello\""[..]));
    assert_eq!(job.history.len(), 1, "one attempt: the park was not one");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waits_for_its_handler_then_fails_after_the_grace() {
    let mut host = TestHost::start_with(&[], "unknown_handler_grace = \"1m\"", "").await;
    let late = host.enqueue("late", json!("hello")).await;
    let never = host.enqueue("never", json!("hello")).await;
    // Parked, not run: the attempt is not counted.
    let job = host
        .until(&late, "released", |j| j.state == JobState::Scheduled)
        .await;
    assert_eq!(job.attempts, 0);

    install(&guest("echo"), host.handlers_dir(), "late.wasm");
    host.registry
        .reload(&host.handlers_dir().join("late.wasm"))
        .await;
    host.clock.advance(Duration::from_secs(3));
    let job = host.until_state(&late, JobState::Succeeded).await;
    assert_eq!(job.result.as_deref(), Some(&b"\"hello\""[..]));

    host.clock.advance(Duration::from_secs(61));
    let job = host.until_state(&never, JobState::Failed).await;
    assert!(job.error.unwrap().contains("handler `never` is not loaded"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_interrupts_its_sandbox() {
    let mut host = TestHost::start(&["spin"], "[defaults]\ntimeout = \"1h\"\n").await;
    let id = host.enqueue("spin", json!({})).await;
    host.until_state(&id, JobState::Active).await;
    let outcome = host.store.cancel(&id, host.clock.now()).await.unwrap();
    assert_eq!(outcome, CancelOutcome::Requested);
    let job = host.until_state(&id, JobState::Cancelled).await;
    assert_eq!(job.history[0].outcome, OutcomeClass::Cancelled);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_jobs_enqueued_by_a_handler_run() {
    let mut host = TestHost::start(&["fanout", "echo"], "").await;
    let id = host
        .enqueue(
            "fanout",
            json!({"handler": "echo", "count": 3, "payload": {"n": 7}}),
        )
        .await;
    let job = host.until_state(&id, JobState::Succeeded).await;
    let result: serde_json::Value = serde_json::from_slice(&job.result.unwrap()).unwrap();
    let children = result["children"].as_array().unwrap();
    assert_eq!(children.len(), 3);
    for child in children {
        let child = host
            .until_state(child.as_str().unwrap(), JobState::Succeeded)
            .await;
        assert_eq!(child.handler, "echo");
        assert_eq!(child.result.as_deref(), Some(&br#"{"n":7}"#[..]));
    }
    host.stop().await;
}

/// A handler's child job is checked like any producer's: one for a handler that is not in
/// the handlers directory is refused, and the parent's handler hears why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_jobs_go_through_the_same_enqueue_rules() {
    let mut host =
        TestHost::start(&["fanout", "echo"], "[handlers.fanout]\nmax_attempts = 1\n").await;
    let id = host
        .enqueue("fanout", json!({"handler": "ghost", "count": 1}))
        .await;
    let job = host.until_state(&id, JobState::Failed).await;
    let error = job.error.unwrap();
    assert!(error.contains("unknown handler `ghost`"), "{error}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_visible_while_the_job_runs() {
    let mut host = TestHost::start(&["progress"], "").await;
    let id = host.enqueue("progress", json!({"pause_ms": 100})).await;
    let running = host
        .until(&id, "part-way", |j| {
            j.state == JobState::Active
                && j.progress
                    .as_ref()
                    .is_some_and(|p| (1..100).contains(&p.percent))
        })
        .await;
    assert!(running.progress.unwrap().message.is_some());
    let done = host.until_state(&id, JobState::Succeeded).await;
    assert_eq!(
        done.history[0].digest.as_deref(),
        Some(&*host.registry.get("progress").unwrap().digest)
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_returns_unfinished_jobs_to_the_queue() {
    let mut host = TestHost::start(&["spin", "echo"], "[defaults]\ntimeout = \"1h\"\n").await;
    let spinning = [
        host.enqueue("spin", json!({})).await,
        host.enqueue("spin", json!({})).await,
    ];
    let quick = host.enqueue("echo", json!("done")).await;
    host.until_state(&quick, JobState::Succeeded).await;
    for id in &spinning {
        host.until_state(id, JobState::Active).await;
    }
    host.stop().await;
    for id in &spinning {
        let job = host.store.get(id).await.unwrap().unwrap();
        assert!(
            matches!(job.state, JobState::Waiting | JobState::Scheduled),
            "{id} is {}",
            job.state
        );
        assert_eq!(job.attempts, 0, "an interrupted attempt is not counted");
        assert!(job.lease.is_none());
    }
}

/// What an attempt did through its `http` grant is kept with the attempt and shown by
/// `kiln status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_records_its_http_requests() {
    let server =
        crate::http_server::Server::http(|_| crate::http_server::Reply::status(200, "fine")).await;
    let config = format!(
        "[handlers.fetch]\nmax_attempts = 1\ngrants = {{ http = [\"{}\"] }}\n",
        server.origin()
    );
    let mut host = TestHost::start(&["fetch"], &config).await;
    let url = format!("{}/", server.origin());
    let id = host.enqueue("fetch", json!({"url": url})).await;
    let job = host.until_state(&id, JobState::Succeeded).await;
    let http = job.history[0].http.expect("http usage recorded");
    assert_eq!((http.requests, http.denied, http.bytes_received), (1, 0, 4));
    let text = kiln::ops::JobView::new(&job, false).text();
    assert!(text.contains("http  1 requests, 0 denied"), "{text}");
    let shown = serde_json::to_value(kiln::ops::JobView::new(&job, false)).unwrap();
    assert_eq!(shown["history"][0]["http"]["bytes_received"], 4);
    host.stop().await;
}
