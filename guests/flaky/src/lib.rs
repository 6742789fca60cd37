//! `flaky`: fails its first attempts with a retryable error, then succeeds; exercises retries
//! and backoff.
//!
//! Payload: `{"fail_times": N, "delay_ms": D}` (`delay_ms` optional). Attempts `1..=N` return
//! a retry error (asking for at least `D` ms before the next attempt, if given); later
//! attempts return `{"attempt": k}`.

use std::time::Duration;

use kiln_sdk::{Handler, Job, JobError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Request {
    fail_times: u32,
    #[serde(default)]
    delay_ms: Option<u64>,
}

struct Flaky;

impl Handler for Flaky {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json()?;
        if job.attempt <= request.fail_times {
            let message = format!(
                "attempt {} fails on purpose (first {} fail)",
                job.attempt, request.fail_times
            );
            kiln_sdk::warn!("{message}");
            return Err(match request.delay_ms {
                Some(ms) => JobError::retry_after(message, Duration::from_millis(ms)),
                None => JobError::retry(message),
            });
        }
        kiln_sdk::json(&serde_json::json!({ "attempt": job.attempt }))
    }
}

kiln_sdk::export!(Flaky);
