//! `fetch`: GETs a URL from the payload and returns the status, the body's size and its
//! SHA-256, reading the body in chunks (so a large body costs no more memory than a chunk).
//!
//! Payload: `{"url": "https://..."}`. Result: `{"status": 200, "bytes": 1234, "sha256": "..."}`.
//! A request the host denies (origin not granted) fails the job for good; other failures
//! ask for a retry.

use kiln_sdk::{Handler, Job, JobError, http};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Request {
    url: String,
}

#[derive(Serialize)]
struct Report {
    status: u16,
    bytes: u64,
    sha256: String,
}

struct Fetch;

impl Handler for Fetch {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json()?;
        let mut response = http::get(&request.url).send()?;
        let mut digest = Sha256::new();
        let mut bytes = 0;
        while let Some(chunk) = response.chunk()? {
            bytes += chunk.len() as u64;
            digest.update(&chunk);
        }
        let sha256 = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        kiln_sdk::info!(
            "GET {} -> {} ({bytes} bytes)",
            request.url,
            response.status()
        );
        kiln_sdk::json(&Report {
            status: response.status(),
            bytes,
            sha256,
        })
    }
}

kiln_sdk::export!(Fetch);
