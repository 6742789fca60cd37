//! Attempt logs: each attempt's capped log is kept with its attempt record in both stores,
//! records written before logs were kept still read, and the CLI shows a log (`kiln status`,
//! `kiln logs ID [--attempt N]`, `--json`).

use kiln::store::{AnyStore, JobStore, OutcomeClass, RedisTarget, SettleAction};
use serde_json::Value;

use crate::cli::Project;
use crate::redis_server::RedisServer;
use crate::store::{LEASE, T0, at, job, settlement};

/// Claims the one job of queue `q` and settles it with `action`, its attempt record carrying
/// `log`; returns the job as stored afterwards.
async fn run_with_log(store: &AnyStore, action: SettleAction, log: &str) -> kiln::store::Job {
    let claimed = store.claim("q", 1, "w", LEASE, T0).await.unwrap();
    let mut settled = settlement(&claimed[0], "w", action, at(1));
    let record = settled.attempt.as_mut().expect("an attempt record");
    record.log = log.to_owned();
    record.log_truncated = true;
    assert!(store.settle(vec![settled], at(1)).await.unwrap().is_empty());
    store.get(&claimed[0].id).await.unwrap().unwrap()
}

/// Both stores keep each attempt's log and its truncation mark through a retry and a
/// success, oldest attempt first.
async fn keeps_logs(store: AnyStore) {
    store.enqueue(vec![job("q", "x")], T0).await.unwrap();
    let retry = SettleAction::Retry {
        at: T0,
        error: "again".to_owned(),
    };
    run_with_log(&store, retry, "info: first try\nstderr: oops\n").await;
    let done = SettleAction::Succeed { result: Vec::new() };
    let job = run_with_log(&store, done, "info: second try\n").await;
    let logs: Vec<(&str, bool)> = job
        .history
        .iter()
        .map(|a| (a.log.as_str(), a.log_truncated))
        .collect();
    assert_eq!(
        logs,
        [
            ("info: first try\nstderr: oops\n", true),
            ("info: second try\n", true)
        ]
    );
    assert_eq!(job.history[1].outcome, OutcomeClass::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_keeps_attempt_logs() {
    let dir = tempfile::tempdir().unwrap();
    keeps_logs(AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_attempt_logs() {
    let server = RedisServer::start();
    let store = AnyStore::open_redis(RedisTarget::server(server.url()))
        .await
        .unwrap();
    keeps_logs(store).await;
}

/// The attempt record as written before logs were kept (no `log` key).
const OLD_ATTEMPT: &str = r#"[{"attempt":1,"digest":"sha256:old","started_at":1,"ended_at":2,"outcome":"error","message":"boom","wall_ms":1,"fuel":null}]"#;

/// An embedded store file whose history was written before logs were kept opens and reads:
/// the old attempt has an empty log.
#[tokio::test]
async fn an_embedded_file_without_logs_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiln.db");
    let id = {
        let store = AnyStore::open_embedded(&path).unwrap();
        store.enqueue(vec![job("q", "x")], T0).await.unwrap()[0]
            .id
            .clone()
    };
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE jobs SET history = ?1", [OLD_ATTEMPT])
        .unwrap();
    drop(conn);
    let store = AnyStore::open_embedded(&path).unwrap();
    let job = store.get(&id).await.unwrap().unwrap();
    assert_eq!(job.history.len(), 1);
    assert_eq!(
        (job.history[0].log.as_str(), job.history[0].log_truncated),
        ("", false)
    );
}

/// A Redis record whose history was written before logs were kept still reads.
#[tokio::test]
async fn a_redis_record_without_logs_still_reads() {
    let server = RedisServer::start();
    let store = AnyStore::open_redis(RedisTarget::server(server.url()))
        .await
        .unwrap();
    let id = store.enqueue(vec![job("q", "x")], T0).await.unwrap()[0]
        .id
        .clone();
    let key = format!("kiln:{{q:q}}:job:{id}");
    let script = "local r = cmsgpack.unpack(redis.call('GET', KEYS[1])); r.history = ARGV[1]; \
                  redis.call('SET', KEYS[1], cmsgpack.pack(r))";
    server.cli(&["EVAL", script, "1", &key, OLD_ATTEMPT]);
    let job = store.get(&id).await.unwrap().unwrap();
    assert_eq!(job.history[0].message.as_deref(), Some("boom"));
    assert_eq!(job.history[0].log, "");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A host runs `progress` (a log line per step): `enqueue --wait --json` carries the log in
/// the attempt, `kiln status` shows it, `kiln logs` prints it alone, and an unknown job or
/// attempt exits 2 naming it.
#[test]
fn the_cli_shows_an_attempts_log() {
    let project = Project::new(&["progress"], "threads = 1");
    let host = project.host();
    let out = project.run(&[
        "enqueue",
        "progress",
        "--payload",
        r#"{"pause_ms":1}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = job["id"].as_str().unwrap();
    let log = job["history"][0]["log"].as_str().unwrap_or_default();
    assert!(log.starts_with("info: step 1 of 11: 0%\n"), "{job}");

    let logs = project.run(&["logs", id]);
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs.stderr));
    assert_eq!(text(&logs.stdout), log);
    assert_eq!(text(&logs.stdout).lines().count(), 11);
    let first = project.run(&["logs", id, "--attempt", "1"]);
    assert_eq!(text(&first.stdout), log);

    let status = text(&project.run(&["status", id]).stdout);
    assert!(
        status.contains("log of attempt 1:\n  info: step 1 of 11: 0%\n"),
        "{status}"
    );

    let missing = project.run(&["logs", id, "--attempt", "2"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains(&format!("job `{id}` has no attempt 2")));
    let unknown = project.run(&["logs", "no-such-job"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("job `no-such-job` not found"));
    assert!(host.terminate().success());
}
