//! `hoard`: GETs a URL and keeps the whole body in memory, however large. Against a 1 GiB
//! response it must be stopped at its memory cap, with the host's own memory unchanged.
//!
//! Payload: `{"url": "http://..."}`. Result (if the body fits): `{"bytes": N}`.

use kiln_sdk::{Handler, Job, JobError, http};
use serde::Deserialize;

#[derive(Deserialize)]
struct Request {
    url: String,
}

struct Hoard;

impl Handler for Hoard {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json()?;
        let body = http::get(&request.url).send()?.bytes()?;
        kiln_sdk::json(&serde_json::json!({ "bytes": body.len() }))
    }
}

kiln_sdk::export!(Hoard);
