//! The worker through a job store that stalls, as a stopped `redis-server` does: every
//! call waits until the stall ends, then goes through. Driven by a manual clock, so the
//! stall outlasts the lease by as much as the test says, and no wall-clock timing decides
//! the outcome: a host that is alive keeps its running job, which runs once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln::config::Config;
use kiln::registry::Registry;
use kiln::store::{
    AnyStore, CancelOutcome, Enqueued, Job, JobState, JobStore, ListFilter, NewJob, OutcomeClass,
    Page, Progress, QueueCounts, RenewReport, RetentionPolicy, RetryTarget, ScheduleRecord,
    Settlement, StoreResult, Timestamp,
};
use kiln::worker::{Clock, Worker};
use tokio::sync::{oneshot, watch};

use crate::util::{guest, install, runtime};
use crate::worker::{ManualClock, START};

/// The embedded store behind a switch: while it is on, every call waits (and is counted by
/// name); when it goes off, the waiting calls go through.
struct Stalling {
    inner: AnyStore,
    stalled: watch::Sender<bool>,
    /// Names of the calls that waited, in arrival order.
    waited: Mutex<Vec<&'static str>>,
}

impl Stalling {
    async fn gate(&self, call: &'static str) {
        let mut stalled = self.stalled.subscribe();
        if *stalled.borrow_and_update() {
            self.waited.lock().unwrap().push(call);
            let _ = stalled.wait_for(|on| !*on).await;
        }
    }

    fn waited(&self, call: &str) -> bool {
        self.waited.lock().unwrap().contains(&call)
    }
}

/// Forwards one call to the embedded store once the stall (if any) is over.
macro_rules! through {
    ($self:ident, $name:literal, $call:expr) => {{
        $self.gate($name).await;
        $call.await
    }};
}

impl JobStore for Stalling {
    async fn check(&self) -> StoreResult<()> {
        through!(self, "check", self.inner.check())
    }

    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> StoreResult<Vec<Enqueued>> {
        through!(self, "enqueue", self.inner.enqueue(jobs, now))
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<Vec<Job>> {
        through!(
            self,
            "claim",
            self.inner.claim(queue, max, owner, lease, now)
        )
    }

    async fn renew(
        &self,
        ids: &[String],
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> StoreResult<RenewReport> {
        through!(self, "renew", self.inner.renew(ids, owner, lease, now))
    }

    async fn settle(&self, batch: Vec<Settlement>, now: Timestamp) -> StoreResult<Vec<String>> {
        through!(self, "settle", self.inner.settle(batch, now))
    }

    async fn progress(
        &self,
        id: &str,
        owner: &str,
        progress: Progress,
        now: Timestamp,
    ) -> StoreResult<()> {
        through!(
            self,
            "progress",
            self.inner.progress(id, owner, progress, now)
        )
    }

    async fn recover(&self, now: Timestamp) -> StoreResult<usize> {
        through!(self, "recover", self.inner.recover(now))
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Job>> {
        through!(self, "get", self.inner.get(id))
    }

    async fn list(&self, filter: ListFilter, page: Page) -> StoreResult<Vec<Job>> {
        through!(self, "list", self.inner.list(filter, page))
    }

    async fn counts(&self) -> StoreResult<Vec<QueueCounts>> {
        through!(self, "counts", self.inner.counts())
    }

    async fn retry_failed(&self, target: RetryTarget, now: Timestamp) -> StoreResult<usize> {
        through!(self, "retry_failed", self.inner.retry_failed(target, now))
    }

    async fn cancel(&self, id: &str, now: Timestamp) -> StoreResult<CancelOutcome> {
        through!(self, "cancel", self.inner.cancel(id, now))
    }

    async fn pause(&self, queue: &str) -> StoreResult<()> {
        through!(self, "pause", self.inner.pause(queue))
    }

    async fn resume(&self, queue: &str) -> StoreResult<()> {
        through!(self, "resume", self.inner.resume(queue))
    }

    async fn clear(&self, queue: &str) -> StoreResult<usize> {
        through!(self, "clear", self.inner.clear(queue))
    }

    async fn prune(&self, policy: &RetentionPolicy, now: Timestamp) -> StoreResult<usize> {
        through!(self, "prune", self.inner.prune(policy, now))
    }

    async fn wait(&self, queues: &[String], now: Timestamp, timeout: Duration) -> StoreResult<()> {
        through!(self, "wait", self.inner.wait(queues, now, timeout))
    }

    async fn unpark(&self, handler: &str, queues: &[String], now: Timestamp) -> StoreResult<usize> {
        through!(self, "unpark", self.inner.unpark(handler, queues, now))
    }

    async fn next_run_at(&self, queues: &[String]) -> StoreResult<Option<Timestamp>> {
        through!(self, "next_run_at", self.inner.next_run_at(queues))
    }

    async fn enqueue_tick(&self, job: NewJob, now: Timestamp) -> StoreResult<Option<Enqueued>> {
        through!(self, "enqueue_tick", self.inner.enqueue_tick(job, now))
    }

    async fn schedule_records(
        &self,
        schedules: &[(String, String)],
    ) -> StoreResult<Vec<Option<ScheduleRecord>>> {
        through!(
            self,
            "schedule_records",
            self.inner.schedule_records(schedules)
        )
    }
}

/// Polls (real time, bounded) until `done` holds: the worker runs on its own tasks.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_longer_than_the_lease_takes_no_job_from_a_live_host() {
    let dir = tempfile::tempdir().unwrap();
    let handlers_dir = dir.path().join("handlers");
    std::fs::create_dir(&handlers_dir).unwrap();
    install(&guest("progress"), &handlers_dir, "progress.wasm");
    let text = "[host]\nhandlers_dir = \"handlers\"\nlease = \"3s\"\n\
                [store]\npath = \"kiln.db\"\n[defaults]\nmax_attempts = 3\n";
    let config = Config::from_toml_str(text, &dir.path().join("config.toml"), Vec::new()).unwrap();
    let inner = AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap();
    let store = Arc::new(Stalling {
        inner: inner.clone(),
        stalled: watch::Sender::new(false),
        waited: Mutex::default(),
    });
    let registry = Arc::new(Registry::new(runtime(), handlers_dir, None));
    registry.load_all().await.unwrap();
    let clock = Arc::new(ManualClock::at(START));
    let payload = br#"{"pause_ms":1000}"#.to_vec();
    let job = NewJob::new("progress", "default", payload);
    let id = inner.enqueue(vec![job], clock.now()).await.unwrap()[0]
        .id
        .clone();
    let worker = Worker::new(store.clone(), registry, Arc::new(config), clock.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    let state = || async { inner.get(&id).await.unwrap().unwrap().state };
    let deadline = Instant::now() + Duration::from_secs(60);
    while state().await != JobState::Active {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.stalled.send_replace(true);
    until("the renewer waits on the stalled store", || {
        store.waited("renew")
    })
    .await;
    // The store stays stalled for ten seconds of the host's clock: over three leases.
    clock.advance(Duration::from_secs(10));
    until("the reaper waits on the stalled store", || {
        store.waited("check") || store.waited("recover")
    })
    .await;
    store.stalled.send_replace(false);

    let deadline = Instant::now() + Duration::from_secs(60);
    while state().await != JobState::Succeeded {
        assert!(Instant::now() < deadline, "the job never succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = inner.get(&id).await.unwrap().unwrap();
    let outcomes: Vec<OutcomeClass> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [OutcomeClass::Ok],
        "ran once, kept by its host: {job:?}"
    );
    assert_eq!(job.attempts, 1);
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
}
