//! `progress`: reports progress 0, 10, ..., 100 with a pause between steps and logs a line
//! per step; returns `{"steps": 11}`.
//!
//! Payload (optional): `{"pause_ms": n}`, the pause between steps; 20 by default.

use std::thread;
use std::time::Duration;

use kiln_sdk::{Handler, Job, JobError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Request {
    #[serde(default = "default_pause_ms")]
    pause_ms: u64,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            pause_ms: default_pause_ms(),
        }
    }
}

fn default_pause_ms() -> u64 {
    20
}

struct Progress;

impl Handler for Progress {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json_or_default()?;
        let steps: u8 = 11;
        for step in 0..steps {
            if step > 0 {
                thread::sleep(Duration::from_millis(request.pause_ms));
            }
            let percent = step * 10;
            kiln_sdk::progress(percent, Some(&format!("step {} of {steps}", step + 1)));
            kiln_sdk::info!("step {} of {steps}: {percent}%", step + 1);
        }
        kiln_sdk::json(&serde_json::json!({ "steps": steps }))
    }
}

kiln_sdk::export!(Progress);
