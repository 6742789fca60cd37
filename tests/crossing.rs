//! Values a handler hands the host are bounded before they are copied: a result, a child
//! payload or a log line far over Kiln's caps is refused by the store's hostcall fuel with
//! Kiln's own message, and the host serves `echo` right after.

use kiln::{ErrorKind, JobLimits, Outcome};
use serde_json::json;

use crate::util::{job, load, run, runtime};

#[tokio::test]
async fn a_value_far_over_the_caps_is_refused_before_the_copy() {
    let runtime = runtime();
    let oversize = load(&runtime, "oversize");
    let limits = JobLimits {
        memory: 256 << 20,
        ..JobLimits::default()
    };
    for via in ["result", "child", "log"] {
        let payload = json!({"via": via, "mib": 50}).to_string();
        let attempt = run(
            &runtime,
            &oversize,
            &job("oversize", payload.as_bytes()),
            &limits,
        )
        .await;
        match &attempt.outcome {
            Outcome::Error {
                kind: ErrorKind::Fatal,
                message,
            } => {
                assert!(
                    message.contains("refused before it was copied"),
                    "{via}: {message}"
                );
                assert!(!message.contains("too much data"), "{via}: {message}");
            }
            other => panic!("{via}: {other:?}"),
        }
    }
    let echo = load(&runtime, "echo");
    let attempt = run(&runtime, &echo, &job("echo", b"after"), &limits).await;
    assert_eq!(attempt.outcome, Outcome::Ok(b"after".to_vec()));
}

/// Seven attempts handing over 50 MiB results at once, under a 2 s deadline, beside `echo`:
/// each is refused before its copy with Kiln's message (none runs into its deadline while
/// the host copies), and `echo` is served beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_oversized_results_at_once_are_refused_without_a_copy() {
    let runtime = runtime();
    let oversize = load(&runtime, "oversize");
    let echo = load(&runtime, "echo");
    let limits = JobLimits {
        memory: 256 << 20,
        timeout: std::time::Duration::from_secs(2),
        ..JobLimits::default()
    };
    let payload = json!({"via": "result", "mib": 50}).to_string();
    let input = job("oversize", payload.as_bytes());
    let attacks = (0..7).map(|_| run(&runtime, &oversize, &input, &limits));
    let echo_job = job("echo", b"beside");
    let (attempts, served) = tokio::join!(
        futures::future::join_all(attacks),
        run(&runtime, &echo, &echo_job, &limits)
    );
    for attempt in attempts {
        match &attempt.outcome {
            Outcome::Error {
                kind: ErrorKind::Fatal,
                message,
            } => assert!(
                message.contains("refused before it was copied"),
                "{message}"
            ),
            other => panic!("expected Kiln's refusal, got {other:?}"),
        }
    }
    assert_eq!(served.outcome, Outcome::Ok(b"beside".to_vec()));
}

/// A value over its cap but within the slack still reaches Kiln's own check.
#[tokio::test]
async fn a_result_just_over_its_cap_is_refused_by_kilns_check() {
    let runtime = runtime();
    let oversize = load(&runtime, "oversize");
    let limits = JobLimits {
        max_result: 512 << 10,
        ..JobLimits::default()
    };
    let payload = json!({"via": "result", "mib": 1}).to_string();
    let attempt = run(
        &runtime,
        &oversize,
        &job("oversize", payload.as_bytes()),
        &limits,
    )
    .await;
    assert!(
        matches!(&attempt.outcome, Outcome::Error { message, .. } if message.contains("exceeds the cap")),
        "{:?}",
        attempt.outcome
    );
}
