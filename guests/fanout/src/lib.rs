//! `fanout`: enqueues child jobs through the host and returns their ids.
//!
//! Payload: `{"handler": "echo", "count": n, "payload": <any json>}` (`handler` defaults to
//! `echo`, `payload` to `null`). Each child gets `payload` as its JSON payload. Returns
//! `{"children": [id, ...]}`; if the host refuses an enqueue, the job fails (fatal) with the
//! host's reason.

use kiln_sdk::{EnqueueOptions, Handler, Job, JobError};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Request {
    #[serde(default = "default_handler")]
    handler: String,
    count: u32,
    #[serde(default)]
    payload: Value,
}

fn default_handler() -> String {
    "echo".to_owned()
}

struct Fanout;

impl Handler for Fanout {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json()?;
        let payload = kiln_sdk::json(&request.payload)?;
        let mut children = Vec::new();
        for n in 1..=request.count {
            let id = kiln_sdk::enqueue(&request.handler, &payload, EnqueueOptions::new()).map_err(
                |reason| {
                    JobError::fatal(format!(
                        "enqueue of child {n} of {} (`{}`) refused: {reason}",
                        request.count, request.handler
                    ))
                },
            )?;
            children.push(id);
        }
        kiln_sdk::info!("enqueued {} `{}` jobs", children.len(), request.handler);
        kiln_sdk::json(&serde_json::json!({ "children": children }))
    }
}

kiln_sdk::export!(Fanout);
