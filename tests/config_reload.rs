//! Config reload in a running `kiln run`: a file edit adds, changes and removes a schedule;
//! an invalid edit is refused with the old config kept; SIGHUP reloads; a queue added or
//! unpaused by an edit is claimed from; a handler's limits follow an edit; a raised
//! concurrency runs more jobs at once; and, on a controlled clock, the scheduler's rule for
//! a schedule a reload adds. Every wait is bounded polling on what the host did
//! (jobs in the store, lines in its log), never a sleep standing for a duration.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use kiln::Registry;
use kiln::clock::Clock;
use kiln::config::{Config, LiveConfig};
use kiln::ops::Ops;
use kiln::scheduler::Scheduler;
use kiln::store::{AnyStore, Job, JobState, JobStore, ListFilter, NewJob, Page, Timestamp};
use kiln::worker::{SystemClock, Worker};

use crate::cli::{Host, Project};
use crate::util::{guest, install, runtime, wait_until};

/// The project's config with `rest` (queues, schedules) after the `[store]` table.
fn config(rest: &str) -> String {
    format!(
        "[host]\nhandlers_dir = \"handlers\"\ncache_dir = \"cache\"\nconcurrency = 4\n\
         [store]\npath = \"kiln.db\"\n{rest}"
    )
}

/// An every-second schedule of `echo` named `name` whose payload is `payload`.
fn every_second(name: &str, payload: &str) -> String {
    format!(
        "[[schedules]]\nname = \"{name}\"\nhandler = \"echo\"\ncron = \"* * * * * *\"\n\
         payload = \"{payload}\"\n"
    )
}

/// Replaces the config file as editors do: a new file renamed over the old one.
fn edit(project: &Project, text: &str) {
    let next = project.path().join("config.toml.new");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, project.path().join("config.toml")).unwrap();
}

fn start(project: &Project, text: &str) -> Host {
    std::fs::write(project.path().join("config.toml"), text).unwrap();
    let host = project.host();
    wait_for_log(project, "worker started");
    host
}

/// Every host log of the project, whole.
fn log(project: &Project) -> String {
    project.all_host_logs()
}

fn log_count(project: &Project, needle: &str) -> usize {
    log(project).matches(needle).count()
}

fn wait_for_log(project: &Project, needle: &str) {
    wait_until(
        &format!("the host logs {needle:?}\n{}", log(project)),
        || log(project).contains(needle),
    );
}

fn now_ms() -> i64 {
    Timestamp::now().0
}

/// Every job in the project's store.
fn jobs(db: &Path) -> Vec<Job> {
    if !db.exists() {
        return Vec::new();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = AnyStore::open_embedded(db).unwrap();
        let page = Page {
            limit: 10_000,
            ..Page::default()
        };
        store.list(ListFilter::default(), page).await.unwrap()
    })
}

/// The jobs of schedule `name`'s ticks.
fn ticks(db: &Path, name: &str) -> Vec<Job> {
    (jobs(db).into_iter())
        .filter(|job| job.tick.as_ref().is_some_and(|t| t.schedule == name))
        .collect()
}

fn succeeded_with(db: &Path, name: &str, payload: &str) -> bool {
    let payload = format!("\"{payload}\"");
    ticks(db, name)
        .iter()
        .any(|job| job.state == JobState::Succeeded && job.payload == payload.as_bytes())
}

#[test]
fn an_edit_adds_changes_and_removes_schedules_while_the_host_runs() {
    let project = Project::new(&["echo"], "");
    let db = project.path().join("kiln.db");
    let host = start(&project, &config(""));
    // A whole second passes between the host's start and the edit, so a tick instant lies
    // between them: an added schedule must not enqueue it.
    let started = now_ms();
    wait_until("a second boundary passes", || {
        now_ms() / 1000 > started / 1000
    });
    let edited = now_ms();
    edit(&project, &config(&every_second("a", "first")));
    wait_for_log(&project, "schedules added [a]");
    wait_until("schedule a's tick succeeds", || {
        succeeded_with(&db, "a", "first")
    });
    let early: Vec<i64> = (ticks(&db, "a").iter())
        .map(|j| j.tick.as_ref().unwrap().at.0)
        .filter(|at| *at < edited)
        .collect();
    assert!(
        early.is_empty(),
        "an added schedule starts after the reload: {early:?}"
    );

    edit(&project, &config(&every_second("a", "second")));
    wait_for_log(&project, "schedules changed [a]");
    wait_until("the changed schedule's tick succeeds", || {
        succeeded_with(&db, "a", "second")
    });

    edit(&project, &config(&every_second("b", "other")));
    wait_for_log(&project, "schedules added [b]; schedules removed [a]");
    // Once b has ticked twice, every scheduler pass since its first reads the new config;
    // a's count then must not grow while b ticks twice more.
    wait_until("b ticks twice", || ticks(&db, "b").len() >= 2);
    let a_count = ticks(&db, "a").len();
    let b_count = ticks(&db, "b").len();
    wait_until("b ticks twice more", || {
        ticks(&db, "b").len() >= b_count + 2
    });
    assert_eq!(ticks(&db, "a").len(), a_count, "a removed schedule stops");
    let status = host.terminate();
    assert!(status.success(), "{status:?}\n{}", log(&project));
}

#[test]
fn an_invalid_edit_is_refused_and_the_running_config_kept() {
    let project = Project::new(&["echo"], "");
    let db = project.path().join("kiln.db");
    let host = start(&project, &config(&every_second("a", "kept")));
    wait_until("a ticks", || succeeded_with(&db, "a", "kept"));

    let bad = config(&every_second("a", "kept")).replace("* * * * * *", "not a cron");
    edit(&project, &bad);
    wait_for_log(&project, "config refused");
    let text = log(&project);
    let refused = text.lines().find(|l| l.contains("config refused")).unwrap();
    assert!(
        refused.contains("`schedules.a.cron`") && refused.contains("line 10"),
        "the error names the key and its line: {refused}"
    );
    assert!(refused.contains("keeping the running config"), "{refused}");

    // The old schedule keeps ticking and its jobs still run.
    let before = ticks(&db, "a").len();
    wait_until("a keeps ticking", || {
        let ticks = ticks(&db, "a");
        ticks.len() >= before + 2 && ticks.iter().any(|j| j.state == JobState::Succeeded)
    });
    // The CLI refuses the invalid file too; a valid copy beside it names the same store.
    let good = project.path().join("good.toml");
    std::fs::write(&good, config(&every_second("a", "kept"))).unwrap();
    let env = [("KILN_CONFIG", good.to_str().unwrap())];
    let out = project.run_with(&["enqueue", "echo", "--payload", "1", "--wait"], &env);
    assert_eq!(out.status.code(), Some(0), "a job still runs: {out:?}");
    let status = host.terminate();
    assert!(status.success(), "{status:?}\n{}", log(&project));
}

#[test]
fn sighup_reloads_and_queue_changes_take_effect() {
    let project = Project::new(&["echo"], "");
    let db = project.path().join("kiln.db");
    let paused = "[queues.default]\npaused = true\nconcurrency = 1\n";
    let host = start(&project, &config(paused));

    host.signal("HUP");
    wait_for_log(&project, "SIGHUP: reloading the config");
    wait_for_log(&project, "config reloaded: no changes");

    let out = project.run(&["enqueue", "echo", "--payload", "1"]);
    assert_eq!(out.status.code(), Some(0));
    // Paused at start by the config, the job waits.
    assert!(jobs(&db).iter().all(|j| j.state != JobState::Succeeded));

    // One edit unpauses default, raises its concurrency, adds a queue, and (a restart-only
    // key) changes host.concurrency, which is named and left as it is.
    let reloads = log_count(&project, "config reloaded");
    let next = config("[queues.default]\nconcurrency = 2\n[queues.extra]\n")
        .replace("concurrency = 4", "concurrency = 5");
    edit(&project, &next);
    wait_until("the edit is reloaded", || {
        log_count(&project, "config reloaded") > reloads
    });
    let text = log(&project);
    assert!(
        text.contains("queues added [extra]; queues changed [default]"),
        "{text}"
    );
    assert!(
        text.contains("`host.concurrency` changed but needs a restart"),
        "{text}"
    );
    wait_until("the unpaused queue's job runs", || {
        jobs(&db).iter().any(|j| j.state == JobState::Succeeded)
    });
    // The added queue is claimed from.
    let out = project.run(&[
        "enqueue",
        "echo",
        "--queue",
        "extra",
        "--payload",
        "2",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", log(&project));
    let status = host.terminate();
    assert!(status.success(), "{status:?}\n{}", log(&project));
}

#[test]
fn a_handlers_limits_follow_an_edit_from_the_next_attempt() {
    let project = Project::new(&["echo"], "");
    let capped = config("[handlers.echo]\nmax_attempts = 1\nmax_result = \"4B\"\n");
    let host = start(&project, &capped);
    let payload = r#""longer than four bytes""#;
    let out = project.run(&["enqueue", "echo", "--payload", payload, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "the result is over the cap");

    let reloads = log_count(&project, "config reloaded");
    edit(&project, &config("[handlers.echo]\nmax_attempts = 1\n"));
    wait_until("the edit is reloaded", || {
        log_count(&project, "config reloaded") > reloads
    });
    assert!(log(&project).contains("handlers changed [echo]"));
    let out = project.run(&["enqueue", "echo", "--payload", payload, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", log(&project));
    let status = host.terminate();
    assert!(status.success(), "{status:?}\n{}", log(&project));
}

/// A worker whose live config raises a queue's concurrency runs more of its jobs at once
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_queue_concurrency_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).unwrap();
    install(&guest("progress"), &handlers, "progress.wasm");
    let config = |concurrency: usize| {
        let text = format!(
            "[host]\nhandlers_dir = \"handlers\"\nconcurrency = 8\nshutdown_grace = \"100ms\"\n\
             [store]\npath = \"kiln.db\"\n[queues.default]\nconcurrency = {concurrency}\n"
        );
        let path = dir.path().join("config.toml");
        Arc::new(Config::from_toml_str(&text, &path, Vec::new()).unwrap())
    };
    let live = LiveConfig::new(config(1));
    let store = Arc::new(AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap());
    let registry = Arc::new(Registry::new(runtime(), handlers, None));
    registry.load_all().await.unwrap();
    let worker = Worker::new(store.clone(), registry, live.clone(), Arc::new(SystemClock));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    // Each job takes about 10 s (11 steps, 1 s apart); the test never waits for one.
    let jobs: Vec<_> = (0..4)
        .map(|_| NewJob::new("progress", "default", br#"{"pause_ms":1000}"#.to_vec()))
        .collect();
    store.enqueue(jobs, Timestamp::now()).await.unwrap();
    let active = || async {
        let page = Page::default();
        let all = store.list(ListFilter::default(), page).await.unwrap();
        all.iter().filter(|j| j.state == JobState::Active).count()
    };
    let bounded = Instant::now() + Duration::from_secs(60);
    while active().await < 1 {
        assert!(Instant::now() < bounded, "no job started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(active().await, 1, "concurrency 1 runs one job");
    live.replace(config(3));
    loop {
        let now = active().await;
        assert!(now <= 3, "{now} jobs run at concurrency 3");
        if now == 3 {
            break;
        }
        assert!(Instant::now() < bounded, "the raise did not take effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// A clock the case sets by hand.
struct SetClock(AtomicI64);

impl Clock for SetClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// With a controlled clock: a schedule a reload adds starts at its first tick after the
/// reload (no catch-up of the ticks since the host started, even under `run-once`), a
/// changed cron applies from its next tick, and a removed schedule enqueues nothing more.
#[tokio::test]
async fn the_scheduler_follows_added_changed_and_removed_schedules() {
    const START: i64 = 1_800_000_000_000; // a minute boundary
    let minute = |m: i64, s: i64| Timestamp(START + m * 60_000 + s * 1000);
    let dir = tempfile::tempdir().unwrap();
    let config = |schedule: &str| {
        let text = format!(
            "[host]\nhandlers_dir = \"no-handlers\"\n[store]\npath = \"kiln.db\"\n\
             [handlers.echo]\n{schedule}"
        );
        Arc::new(Config::from_toml_str(&text, &dir.path().join("c.toml"), Vec::new()).unwrap())
    };
    let schedule = |cron: &str| {
        format!(
            "[[schedules]]\nname = \"every\"\nhandler = \"echo\"\ncron = \"{cron}\"\n\
             misfire = \"run-once\"\n"
        )
    };
    let store = Arc::new(AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap());
    let clock = Arc::new(SetClock(START.into()));
    let live = LiveConfig::new(config(""));
    let ops = Ops::new(live.clone(), store.clone()).with_clock(clock.clone());
    let mut scheduler = Scheduler::new(ops, clock.clone());
    let ticks = || async {
        let all = store
            .list(ListFilter::default(), Page::default())
            .await
            .unwrap();
        let mut ticks: Vec<i64> = all
            .iter()
            .filter_map(|j| Some(j.tick.as_ref()?.at.0))
            .collect();
        ticks.sort();
        ticks
    };

    scheduler.pass(minute(0, 1)).await.unwrap();
    live.replace(config(&schedule("* * * * *")));
    scheduler.pass(minute(10, 30)).await.unwrap();
    assert_eq!(
        ticks().await,
        Vec::<i64>::new(),
        "no catch-up since the start"
    );
    scheduler.pass(minute(11, 1)).await.unwrap();
    assert_eq!(ticks().await, [minute(11, 0).0]);

    live.replace(config(&schedule("*/5 * * * *")));
    scheduler.pass(minute(14, 1)).await.unwrap();
    scheduler.pass(minute(15, 1)).await.unwrap();
    assert_eq!(ticks().await, [minute(11, 0).0, minute(15, 0).0]);

    live.replace(config(""));
    scheduler.pass(minute(20, 1)).await.unwrap();
    assert_eq!(
        ticks().await.len(),
        2,
        "a removed schedule enqueues nothing"
    );
}
