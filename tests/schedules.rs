//! Schedules: each cron tick is enqueued once however many hosts run the scheduler (two
//! on one embedded store file, three on one Redis server and on a Redis Cluster), even when
//! a host is late and the tick's job already finished and was deleted; both misfire
//! policies after the hosts were down for 5 ticks; a store outage is retried; the fire times
//! a host enqueues across the daylight-saving changes of Madrid and New York. Time is a
//! controlled clock and each host's scheduler is driven a round at a time
//! (`Scheduler::pass`), so nothing waits for real minutes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kiln::clock::Clock;
use kiln::config::Config;
use kiln::ops::Ops;
use kiln::scheduler::Scheduler;
use kiln::store::{AnyStore, JobStore, Patience, RedisTarget, SettleAction, Timestamp};

use crate::redis_server::{RedisCluster, RedisServer};
use crate::store::settlement;

/// A minute boundary (2027-01-15T08:00:00Z), where the cases' clocks start.
const START: i64 = 1_800_000_000_000;

const MINUTE: i64 = 60_000;

/// A clock the case sets by hand.
struct TestClock(AtomicI64);

impl TestClock {
    fn set(&self, at: Timestamp) {
        self.0.store(at.0, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// `START` plus `minutes`.
fn minute(minutes: i64) -> Timestamp {
    Timestamp(START + minutes * MINUTE)
}

/// A config with one schedule `every` of handler `echo` (declared, so no handlers directory
/// is needed) with `cron` and `misfire`.
fn config(dir: &std::path::Path, cron: &str, misfire: &str) -> Arc<Config> {
    let text = format!(
        "[host]\nhandlers_dir = \"no-handlers\"\n[store]\npath = \"kiln.db\"\n\
         [handlers.echo]\n\
         [[schedules]]\nname = \"every\"\nhandler = \"echo\"\ncron = \"{cron}\"\n\
         payload = {{ n = 1 }}\nmisfire = \"{misfire}\"\n"
    );
    Arc::new(Config::from_toml_str(&text, &dir.join("config.toml"), Vec::new()).unwrap())
}

/// One host's scheduler on `store`, reading `clock`.
fn host(config: &Arc<Config>, store: AnyStore, clock: &Arc<TestClock>) -> Scheduler<AnyStore> {
    let ops = Ops::new(config.clone(), Arc::new(store)).with_clock(clock.clone());
    Scheduler::new(ops, clock.clone())
}

/// Claims every waiting job of the default queue, deletes each as a succeeded job with a
/// retention of 0 does, and returns their ticks (ms).
async fn drain(store: &AnyStore, now: Timestamp) -> Vec<i64> {
    let jobs = store
        .claim("default", 1000, "drainer", Duration::from_secs(30), now)
        .await
        .unwrap();
    let mut ticks = Vec::new();
    let mut done = Vec::new();
    for job in &jobs {
        let tick = job
            .tick
            .as_ref()
            .expect("a schedule's job records its tick");
        assert_eq!(tick.schedule, "every");
        assert!(!tick.manual);
        assert_eq!(job.payload, br#"{"n":1}"#);
        ticks.push(tick.at.0);
        done.push(settlement(
            job,
            "drainer",
            SettleAction::SucceedAndDelete,
            now,
        ));
    }
    let stale = store.settle(done, now).await.unwrap();
    assert!(stale.is_empty());
    ticks
}

/// Drives `hosts` (each on its own store handle) through 100 minutely ticks: every round
/// all hosts run at once (each on its own task), the tick's job is finished and deleted,
/// then every host runs again at the same instant, as a late host would. Each tick must be
/// enqueued once.
async fn hundred_ticks_once(config: Arc<Config>, stores: Vec<AnyStore>) {
    let clock = Arc::new(TestClock(AtomicI64::new(START)));
    let reader = stores[0].clone();
    let mut hosts: Vec<_> = stores
        .into_iter()
        .map(|store| host(&config, store, &clock))
        .collect();
    let mut seen = Vec::new();
    for n in 1..=100 {
        let now = minute(n) + Duration::from_millis(n as u64 * 7 % 1000);
        clock.set(now);
        let rounds: Vec<_> = (hosts.drain(..))
            .map(|mut host| {
                tokio::spawn(async move {
                    let next = host.pass(now).await.unwrap();
                    (host, next)
                })
            })
            .collect();
        for round in rounds {
            let (host, next) = round.await.unwrap();
            assert_eq!(next, Some(minute(n + 1)));
            hosts.push(host);
        }
        let ticks = drain(&reader, now).await;
        assert_eq!(ticks, [minute(n).0], "round {n}");
        seen.extend(ticks);
        // Late hosts, after the tick's job finished and was deleted: nothing new.
        for host in &mut hosts {
            host.pass(now).await.unwrap();
        }
        assert!(
            drain(&reader, now).await.is_empty(),
            "round {n} enqueued twice"
        );
    }
    let distinct: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 100);
    let record = reader
        .schedule_records(&[("every".into(), "default".into())])
        .await
        .unwrap();
    let record = record[0].clone().expect("the store remembers the schedule");
    assert_eq!(record.cursor, Some(minute(100)));
    assert_eq!(record.last_tick, minute(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn two_hosts_on_one_embedded_store_enqueue_each_of_100_ticks_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "* * * * *", "skip");
    let path = dir.path().join("kiln.db");
    let stores = vec![
        AnyStore::open_embedded(&path).unwrap(),
        AnyStore::open_embedded(&path).unwrap(),
    ];
    hundred_ticks_once(config, stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_hosts_on_one_redis_enqueue_each_of_100_ticks_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "* * * * *", "skip");
    let server = RedisServer::start();
    let mut stores = Vec::new();
    for _ in 0..3 {
        let target = RedisTarget::server(server.url()).with_namespace("ticks");
        stores.push(AnyStore::open_redis(target).await.unwrap());
    }
    hundred_ticks_once(config, stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_hosts_on_a_redis_cluster_enqueue_each_of_100_ticks_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "* * * * *", "skip");
    let cluster = RedisCluster::start();
    let mut stores = Vec::new();
    for _ in 0..3 {
        let target = RedisTarget::cluster(cluster.urls()).with_namespace("ticks");
        stores.push(AnyStore::open_redis(target).await.unwrap());
    }
    hundred_ticks_once(config, stores).await;
}

/// A host runs ticks 1 and 2 of an every-10-minutes schedule, then every host is down for
/// ticks 3 to 7; a new host starts 2 minutes after tick 7. Returns the ticks (in
/// 10-minute units) enqueued at its start, and then at tick 8.
async fn after_five_missed_ticks(misfire: &str) -> (Vec<i64>, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "*/10 * * * *", misfire);
    let store = AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(START)));
    let in_tens = |ticks: Vec<i64>| -> Vec<i64> {
        ticks
            .into_iter()
            .map(|t| (t - START) / (10 * MINUTE))
            .collect()
    };
    let mut first = host(&config, store.clone(), &clock);
    for n in 1..=2 {
        clock.set(minute(10 * n));
        first.pass(minute(10 * n)).await.unwrap();
        assert_eq!(in_tens(drain(&store, minute(10 * n)).await), [n]);
    }
    drop(first);

    let back = minute(72);
    clock.set(back);
    let mut second = host(&config, store.clone(), &clock);
    let next = second.pass(back).await.unwrap();
    assert_eq!(next, Some(minute(80)));
    let at_start = in_tens(drain(&store, back).await);
    second.pass(minute(75)).await.unwrap();
    assert!(
        drain(&store, minute(75)).await.is_empty(),
        "nothing between ticks"
    );
    second.pass(minute(80)).await.unwrap();
    let at_tick_8 = in_tens(drain(&store, minute(80)).await);
    (at_start, at_tick_8)
}

#[tokio::test]
async fn misfire_skip_drops_the_ticks_missed_while_hosts_were_down() {
    let (at_start, at_tick_8) = after_five_missed_ticks("skip").await;
    assert_eq!(at_start, Vec::<i64>::new());
    assert_eq!(at_tick_8, [8]);
}

#[tokio::test]
async fn misfire_run_once_enqueues_one_catch_up_for_the_latest_missed_tick() {
    let (at_start, at_tick_8) = after_five_missed_ticks("run-once").await;
    assert_eq!(at_start, [7]);
    assert_eq!(at_tick_8, [8]);
}

#[tokio::test]
async fn a_tick_late_within_the_grace_is_on_time_not_missed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "*/10 * * * *", "skip");
    let store = AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(START)));
    let mut scheduler = host(&config, store.clone(), &clock);
    let late = minute(10) + Duration::from_secs(45);
    scheduler.pass(late).await.unwrap();
    assert_eq!(drain(&store, late).await, [minute(10).0]);
}

#[tokio::test]
async fn a_store_outage_fails_the_round_and_the_next_round_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "* * * * *", "skip");
    let mut server = RedisServer::start();
    let target = RedisTarget::server(server.url())
        .with_namespace("outage")
        .with_patience(Patience::FailFast);
    let store = AnyStore::open_redis(target).await.unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(START)));
    let mut scheduler = host(&config, store.clone(), &clock);
    scheduler.pass(minute(1)).await.unwrap();
    assert_eq!(drain(&store, minute(1)).await, [minute(1).0]);

    server.kill();
    let down = minute(2) + Duration::from_secs(5);
    let error = scheduler.pass(down).await.unwrap_err();
    assert!(error.to_string().contains("unavailable"), "{error}");
    server.restart();
    // Within the grace of tick 2: it is on time, enqueued once.
    let back = minute(2) + Duration::from_secs(20);
    scheduler.pass(back).await.unwrap();
    assert_eq!(drain(&store, back).await, [minute(2).0]);
}

#[tokio::test]
async fn the_scheduler_ends_at_shutdown_even_while_its_store_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "* * * * * *", "skip");
    let mut server = RedisServer::start();
    let target = RedisTarget::server(server.url()).with_namespace("shutdown");
    let store = AnyStore::open_redis(target).await.unwrap();
    server.kill();
    let clock = Arc::new(TestClock(AtomicI64::new(START)));
    let scheduler = host(&config, store, &clock);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(scheduler.run(async {
        let _ = stopped.await;
    }));
    tokio::task::yield_now().await;
    stop.send(()).unwrap();
    // Only a guard against hanging: the round reconnecting to Redis is abandoned at once.
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the scheduler ended")
        .unwrap();
}

/// Claims every waiting job of the default queue, finishes it, and returns `(schedule,
/// tick as RFC 3339 UTC)` pairs, sorted.
async fn drain_named(store: &AnyStore, now: Timestamp) -> Vec<(String, String)> {
    let jobs = store
        .claim("default", 1000, "drainer", Duration::from_secs(30), now)
        .await
        .unwrap();
    let mut ticks: Vec<(String, String)> = (jobs.iter())
        .map(|job| {
            let tick = job.tick.as_ref().unwrap();
            (tick.schedule.clone(), tick.at.to_string())
        })
        .collect();
    let done = (jobs.iter())
        .map(|job| settlement(job, "drainer", SettleAction::SucceedAndDelete, now))
        .collect();
    store.settle(done, now).await.unwrap();
    ticks.sort();
    ticks
}

/// Runs a daily 02:30, an hourly and an every-15-minutes schedule in `zone` with the clock
/// stepping a minute at a time from `from` for `hours`, and returns the ticks each enqueued.
async fn ticks_across(zone: &str, from: &str, hours: i64) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let entry = |name: &str, cron: &str| {
        format!(
            "[[schedules]]\nname = \"{name}\"\nhandler = \"echo\"\ncron = \"{cron}\"\n\
             timezone = \"{zone}\"\n"
        )
    };
    let text = format!(
        "[host]\nhandlers_dir = \"none\"\n[handlers.echo]\n{}{}{}",
        entry("daily", "30 2 * * *"),
        entry("hourly", "0 * * * *"),
        entry("quarter", "*/15 * * * *"),
    );
    let config = Arc::new(
        Config::from_toml_str(&text, &dir.path().join("config.toml"), Vec::new()).unwrap(),
    );
    let store = AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap();
    let start: jiff::Timestamp = from.parse().unwrap();
    let start = Timestamp(start.as_millisecond());
    let clock = Arc::new(TestClock(AtomicI64::new(start.0)));
    let mut scheduler = host(&config, store.clone(), &clock);
    let mut ticks = Vec::new();
    for step in 1..=hours * 60 {
        let now = Timestamp(start.0 + step * MINUTE);
        clock.set(now);
        scheduler.pass(now).await.unwrap();
        ticks.extend(drain_named(&store, now).await);
    }
    ticks
}

fn of<'a>(ticks: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    (ticks.iter())
        .filter(|(schedule, _)| schedule == name)
        .map(|(_, at)| at.as_str())
        .collect()
}

/// The gaps, in minutes, between consecutive RFC 3339 times.
fn gaps(times: &[&str]) -> Vec<i64> {
    let millis: Vec<i64> = (times.iter())
        .map(|t| t.parse::<jiff::Timestamp>().unwrap().as_millisecond())
        .collect();
    millis.windows(2).map(|w| (w[1] - w[0]) / MINUTE).collect()
}

#[tokio::test]
async fn a_host_enqueues_the_daylight_saving_fire_times_in_madrid_and_new_york() {
    // Madrid springs forward at 01:00Z on 2026-03-29 and falls back at 01:00Z on 2026-10-25.
    let spring = ticks_across("Europe/Madrid", "2026-03-28T22:00:00Z", 6).await;
    assert_eq!(
        of(&spring, "daily"),
        ["2026-03-29T01:00:00.000Z"],
        "03:00 CEST"
    );
    let fall = ticks_across("Europe/Madrid", "2026-10-24T22:00:00Z", 6).await;
    assert_eq!(
        of(&fall, "daily"),
        ["2026-10-25T00:30:00.000Z"],
        "the first 02:30"
    );
    // New York springs forward at 07:00Z on 2026-03-08 and falls back at 06:00Z on 2026-11-01.
    let ny_spring = ticks_across("America/New_York", "2026-03-08T04:00:00Z", 6).await;
    assert_eq!(
        of(&ny_spring, "daily"),
        ["2026-03-08T07:00:00.000Z"],
        "03:00 EDT"
    );
    let ny_fall = ticks_across("America/New_York", "2026-11-01T03:00:00Z", 6).await;
    assert_eq!(of(&ny_fall, "daily"), ["2026-11-01T07:30:00.000Z"]);
    for ticks in [&spring, &fall, &ny_spring, &ny_fall] {
        let hourly = of(ticks, "hourly");
        assert_eq!(hourly.len(), 6, "{hourly:?}");
        assert_eq!(gaps(&hourly), [60; 5], "{hourly:?}");
        let quarter = of(ticks, "quarter");
        assert_eq!(quarter.len(), 24, "{quarter:?}");
        assert_eq!(gaps(&quarter), [15; 23], "{quarter:?}");
    }
}

#[tokio::test]
async fn on_redis_a_tick_whose_job_exists_is_not_enqueued_again_without_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "* * * * *", "skip");
    let server = RedisServer::start();
    let target = RedisTarget::server(server.url()).with_namespace("moved");
    let store = AnyStore::open_redis(target).await.unwrap();
    let ops = Ops::new(config.clone(), Arc::new(store.clone()));
    let every = ops.schedule("every").unwrap().clone();
    let first = ops.enqueue_tick(&every, minute(1), false).await.unwrap();
    let first = first.expect("enqueued");
    // As if the schedule had come from another queue: this queue has no cursor for it.
    server.cli(&["HDEL", "moved:{q:default}:schedules", "cursor:every"]);
    let again = ops.enqueue_tick(&every, minute(1), false).await.unwrap();
    assert_eq!(again, None, "the tick's job (same derived id) still exists");
    let job = store.get(&first.id).await.unwrap().unwrap();
    assert_eq!(job.tick.unwrap().at, minute(1));
}
