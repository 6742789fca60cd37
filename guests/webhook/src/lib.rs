//! `webhook`: POSTs a JSON body to a URL. A 2xx succeeds; a 5xx (or 429) asks for a retry,
//! no sooner than the server's `Retry-After`; any other status fails the job for good, since
//! sending the same request again would get the same answer.
//!
//! Payload: `{"url": "https://...", "body": <any JSON>}`. Result: `{"status": 204}`.

use kiln_sdk::{Handler, Job, JobError, http};
use serde::Deserialize;

#[derive(Deserialize)]
struct Request {
    url: String,
    #[serde(default)]
    body: serde_json::Value,
}

struct Webhook;

impl Handler for Webhook {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json()?;
        let response = http::post(&request.url).json(&request.body).send()?;
        let status = response.status();
        let message = format!("POST {} answered {status}", request.url);
        match status {
            200..=299 => kiln_sdk::json(&serde_json::json!({ "status": status })),
            429 | 500..=599 => Err(match response.retry_after() {
                Some(delay) => JobError::retry_after(message, delay),
                None => JobError::retry(message),
            }),
            _ => Err(JobError::fatal(message)),
        }
    }
}

kiln_sdk::export!(Webhook);
