//! `panic`: panics on purpose, which aborts the component and reaches the host as a trap.
//!
//! Payload (optional): `{"message": "..."}`, the panic message; by default
//! "handler panicked on purpose".

use kiln_sdk::{Handler, Job, JobError};
use serde::Deserialize;

#[derive(Default, Deserialize)]
struct Request {
    #[serde(default)]
    message: Option<String>,
}

struct Panic;

impl Handler for Panic {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json_or_default()?;
        let message = request
            .message
            .unwrap_or_else(|| "handler panicked on purpose".to_owned());
        panic!("{message}");
    }
}

kiln_sdk::export!(Panic);
