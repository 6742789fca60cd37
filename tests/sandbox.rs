//! The sandbox: each example guest's behaviour through the real runtime, the limits that stop
//! runaway handlers, and the host serving normally after each of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln::host_api::{ChildEnqueuer, ChildRequest, EnqueueFuture};
use kiln::{ErrorKind, Grants, JobHooks, JobLimits, LogSource, Outcome};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::util::{job, load, run, runtime};

fn limits() -> JobLimits {
    JobLimits {
        timeout: Duration::from_secs(10),
        memory: 32 << 20,
        ..JobLimits::default()
    }
}

fn json_result(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Ok(bytes) => serde_json::from_slice(bytes).expect("result is JSON"),
        other => panic!("expected success, got {other:?}"),
    }
}

#[tokio::test]
async fn echo_returns_its_payload_and_records_the_version() {
    let runtime = runtime();
    let echo = load(&runtime, "echo");
    let attempt = run(&runtime, &echo, &job("echo", b"hello kiln"), &limits()).await;
    assert_eq!(attempt.outcome, Outcome::Ok(b"hello kiln".to_vec()));
    assert_eq!(attempt.digest, echo.digest);
    assert_eq!(echo.digest.len(), 64);
    assert!(attempt.fuel_used > 0, "fuel use is recorded");
}

#[tokio::test]
async fn flaky_asks_for_retries_then_succeeds() {
    let runtime = runtime();
    let flaky = load(&runtime, "flaky");
    let payload = json!({"fail_times": 2, "delay_ms": 1500}).to_string();
    let mut input = job("flaky", payload.as_bytes());
    for attempt in 1..=2 {
        input.attempt = attempt;
        let outcome = run(&runtime, &flaky, &input, &limits()).await.outcome;
        let Outcome::Error { kind, .. } = &outcome else {
            panic!("attempt {attempt}: expected a retry, got {outcome:?}");
        };
        assert_eq!(
            *kind,
            ErrorKind::Retry {
                delay: Some(Duration::from_millis(1500))
            }
        );
        assert!(outcome.is_retryable());
    }
    input.attempt = 3;
    let outcome = run(&runtime, &flaky, &input, &limits()).await.outcome;
    assert_eq!(json_result(&outcome)["attempt"], 3);
}

#[tokio::test]
async fn spin_is_stopped_at_its_deadline() {
    let runtime = runtime();
    let spin = load(&runtime, "spin");
    let limits = JobLimits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let attempt = run(&runtime, &spin, &job("spin", b""), &limits).await;
    assert_eq!(attempt.outcome, Outcome::Timeout);
    assert!(
        attempt.wall >= limits.timeout,
        "stopped early: {:?}",
        attempt.wall
    );
    // Generous bound: the point is that the handler was stopped, not how fast.
    assert!(
        attempt.wall < limits.timeout + Duration::from_secs(2),
        "stopped late: {:?}",
        attempt.wall
    );
}

#[tokio::test]
async fn spin_is_stopped_when_its_fuel_runs_out() {
    let runtime = runtime();
    let spin = load(&runtime, "spin");
    let limits = JobLimits {
        fuel: Some(20_000_000),
        ..limits()
    };
    let attempt = run(&runtime, &spin, &job("spin", b""), &limits).await;
    assert_eq!(attempt.outcome, Outcome::OutOfFuel);
    assert_eq!(attempt.fuel_used, 20_000_000);
}

#[tokio::test]
async fn hog_is_stopped_at_the_memory_cap() {
    let runtime = runtime();
    let hog = load(&runtime, "hog");
    let attempt = run(&runtime, &hog, &job("hog", b""), &limits()).await;
    assert_eq!(attempt.outcome, Outcome::MemoryLimit);
    assert_eq!(
        attempt.outcome.message().as_deref(),
        Some("handler exceeded its memory cap")
    );
}

#[tokio::test]
async fn panic_message_is_captured() {
    let runtime = runtime();
    let panic = load(&runtime, "panic");
    let payload = json!({"message": "disk on fire"}).to_string();
    let attempt = run(
        &runtime,
        &panic,
        &job("panic", payload.as_bytes()),
        &limits(),
    )
    .await;
    let Outcome::Panic { message } = &attempt.outcome else {
        panic!("expected a panic, got {:?}", attempt.outcome);
    };
    assert!(message.contains("disk on fire"), "{message}");
    assert!(attempt.log.iter().any(|l| l.source == LogSource::Stderr));
}

/// A panic message longer than the few KiB of stderr once searched for the report is
/// still a panic with its message, cut at the log cap, not a bare `unreachable` trap.
#[tokio::test]
async fn a_long_panic_message_is_a_panic_cut_at_the_log_cap() {
    let runtime = runtime();
    let panic = load(&runtime, "panic");
    let long = format!("start {} end", "x".repeat(20_000));
    let payload = json!({ "message": long }).to_string();
    let limits = JobLimits {
        max_log: 12_000,
        ..limits()
    };
    let attempt = run(&runtime, &panic, &job("panic", payload.as_bytes()), &limits).await;
    let Outcome::Panic { message } = &attempt.outcome else {
        panic!("expected a panic, got {:?}", attempt.outcome);
    };
    assert!(message.starts_with("start xxx"), "{message:.60}");
    assert!(
        !message.contains("end"),
        "cut at the cap: {} bytes",
        message.len()
    );
    assert!(message.len() <= 12_000, "{} bytes", message.len());
    assert!(message.len() > 4096, "{} bytes", message.len());
}

#[tokio::test]
async fn escape_sees_nothing_it_was_not_granted() {
    let runtime = runtime();
    let escape = load(&runtime, "escape");
    let payload = json!({"connect": "127.0.0.1:9"}).to_string();
    let attempt = run(
        &runtime,
        &escape,
        &job("escape", payload.as_bytes()),
        &limits(),
    )
    .await;
    let report = json_result(&attempt.outcome);
    for (path, seen) in report["files"].as_object().expect("files") {
        assert!(
            seen.as_str().unwrap().starts_with("error"),
            "{path}: {seen}"
        );
    }
    assert_eq!(report["env"], json!([]));
    assert!(
        report["tcp"].as_str().unwrap().starts_with("error"),
        "{report}"
    );
    assert!(
        report["udp"].as_str().unwrap().starts_with("error"),
        "{report}"
    );
    assert!(
        report["write"].as_str().unwrap().starts_with("error"),
        "{report}"
    );
    assert_eq!(report["stdin"], "ok: ", "stdin is closed and empty");
    let sources: Vec<LogSource> = attempt.log.iter().map(|l| l.source).collect();
    assert!(sources.contains(&LogSource::Stdout) && sources.contains(&LogSource::Stderr));
}

#[tokio::test]
async fn granted_env_and_directory_are_visible_read_only() {
    let runtime = runtime();
    let escape = load(&runtime, "escape");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "granted text").unwrap();
    let grants = Grants {
        env: [("API_BASE".into(), "https://example.test".into())].into(),
        dir: Some(dir.path().to_owned()),
        ..Grants::default()
    };
    let read = dir.path().join("note.txt");
    let write = dir.path().join("new.txt");
    let payload = json!({
        "read": read, "write": write, "env_key": "API_BASE", "connect": "127.0.0.1:9"
    });
    let attempt = runtime
        .run(
            &escape,
            &job("escape", payload.to_string().as_bytes()),
            &limits(),
            &grants,
            JobHooks::default(),
            &CancellationToken::new(),
        )
        .await;
    let report = json_result(&attempt.outcome);
    assert_eq!(report["read"], "ok: granted text");
    assert_eq!(report["env_key"], "ok: https://example.test");
    assert_eq!(report["env"], json!(["API_BASE=https://example.test"]));
    assert!(
        report["write"].as_str().unwrap().starts_with("error"),
        "{report}"
    );
    assert!(!write.exists());
}

#[tokio::test]
async fn the_host_serves_echo_after_every_misbehaving_handler() {
    let runtime = runtime();
    let echo = load(&runtime, "echo");
    let tight = JobLimits {
        timeout: Duration::from_millis(200),
        fuel: Some(50_000_000),
        ..limits()
    };
    for name in ["spin", "hog", "panic", "escape"] {
        let handler = load(&runtime, name);
        let outcome = run(&runtime, &handler, &job(name, b"{}"), &tight)
            .await
            .outcome;
        assert_ne!(
            name == "escape",
            outcome.is_retryable(),
            "{name}: {outcome:?}"
        );
        let after = run(&runtime, &echo, &job("echo", name.as_bytes()), &limits()).await;
        assert_eq!(
            after.outcome,
            Outcome::Ok(name.as_bytes().to_vec()),
            "after {name}"
        );
    }
}

#[tokio::test]
async fn cancelling_interrupts_a_running_handler() {
    let runtime = runtime();
    let spin = load(&runtime, "spin");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.cancel();
    });
    let attempt = runtime
        .run(
            &spin,
            &job("spin", b""),
            &limits(),
            &Grants::default(),
            JobHooks::default(),
            &cancel,
        )
        .await;
    assert_eq!(attempt.outcome, Outcome::Cancelled);
}

#[tokio::test]
async fn progress_reports_reach_the_hook_and_logs_are_captured() {
    let runtime = runtime();
    let progress = load(&runtime, "progress");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let hooks = JobHooks {
        progress: Some(Arc::new(move |percent, _message| {
            sink.lock().unwrap().push(percent);
        })),
        enqueue: None,
    };
    let payload = json!({"pause_ms": 1}).to_string();
    let attempt = runtime
        .run(
            &progress,
            &job("progress", payload.as_bytes()),
            &limits(),
            &Grants::default(),
            hooks,
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(json_result(&attempt.outcome)["steps"], 11);
    let expected: Vec<u8> = (0..=100).step_by(10).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
    assert_eq!(attempt.log.len(), 11);
}

#[tokio::test]
async fn logs_and_results_are_capped() {
    let runtime = runtime();
    let progress = load(&runtime, "progress");
    let small = JobLimits {
        max_log: 40,
        ..limits()
    };
    let payload = json!({"pause_ms": 0}).to_string();
    let attempt = run(
        &runtime,
        &progress,
        &job("progress", payload.as_bytes()),
        &small,
    )
    .await;
    assert!(attempt.log_truncated);
    let kept: usize = attempt.log.iter().map(|l| l.text.len()).sum();
    assert!(kept <= 40);

    let echo = load(&runtime, "echo");
    let tiny = JobLimits {
        max_result: 8,
        ..limits()
    };
    let outcome = run(&runtime, &echo, &job("echo", b"way more than eight"), &tiny).await;
    assert!(
        matches!(&outcome.outcome, Outcome::Error { kind: ErrorKind::Fatal, message } if message.contains("exceeds")),
        "{:?}",
        outcome.outcome
    );
}

/// Records child requests and hands out ids.
struct Children(Mutex<Vec<ChildRequest>>);

impl ChildEnqueuer for Children {
    fn enqueue(&self, request: ChildRequest) -> EnqueueFuture {
        let mut seen = self.0.lock().unwrap();
        seen.push(request);
        let id = format!("child-{}", seen.len());
        Box::pin(async move { Ok(id) })
    }
}

#[tokio::test]
async fn fanout_enqueues_children_through_the_host() {
    let runtime = runtime();
    let fanout = load(&runtime, "fanout");
    let payload = json!({"handler": "echo", "count": 3, "payload": {"n": 1}}).to_string();
    let children = Arc::new(Children(Mutex::new(Vec::new())));
    let hooks = JobHooks {
        progress: None,
        enqueue: Some(children.clone()),
    };
    let input = job("fanout", payload.as_bytes());
    let attempt = runtime
        .run(
            &fanout,
            &input,
            &limits(),
            &Grants::default(),
            hooks,
            &CancellationToken::new(),
        )
        .await;
    let result = json_result(&attempt.outcome);
    assert_eq!(result["children"], json!(["child-1", "child-2", "child-3"]));
    let seen = children.0.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|c| c.handler == "echo" && c.parent_id == input.id)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&seen[0].payload).unwrap(),
        json!({"n": 1})
    );

    // Without a job store behind it, the host refuses and the handler fails for good.
    let outcome = run(&runtime, &fanout, &input, &limits()).await.outcome;
    assert!(
        matches!(&outcome, Outcome::Error { kind: ErrorKind::Fatal, message } if message.contains("not supported")),
        "{outcome:?}"
    );
}
