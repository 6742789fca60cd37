//! `oversize`: hands the host one value far larger than Kiln's caps, to check that the cap is
//! enforced before the value is copied out of the sandbox (the host's memory never holds it).
//!
//! Payload: `{"via": "result" | "child" | "log", "mib": n}`: return `n` MiB, enqueue an
//! `echo` child with an `n` MiB payload, or log one `n` MiB line.

use kiln_sdk::{EnqueueOptions, Handler, Job, JobError, Level};
use serde::Deserialize;

#[derive(Deserialize)]
struct Request {
    via: String,
    mib: usize,
}

struct Oversize;

impl Handler for Oversize {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json()?;
        let big = vec![b'x'; request.mib << 20];
        match request.via.as_str() {
            "result" => Ok(big),
            "child" => {
                let refused = kiln_sdk::enqueue("echo", &big, EnqueueOptions::new())
                    .expect_err("the host refuses an oversized child payload");
                Err(JobError::fatal(refused))
            }
            "log" => {
                let line = String::from_utf8(big).expect("ASCII");
                kiln_sdk::log(Level::Info, &line);
                Ok(b"logged".to_vec())
            }
            other => Err(JobError::fatal(format!("unknown via `{other}`"))),
        }
    }
}

kiln_sdk::export!(Oversize);
