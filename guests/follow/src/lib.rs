//! `follow`: GETs a URL and follows redirects itself, up to five hops. The host follows none,
//! so each hop is a new request checked against the grant; a hop to an origin not granted is
//! denied.
//!
//! Payload: `{"url": "http://..."}`. Result: `{"hops": ["302 http://a/", "error: ..."]}`, one
//! entry per request sent: its status and URL, or why it failed.

use kiln_sdk::{Handler, Job, JobError, http};
use serde::Deserialize;

/// Redirects followed at most, so a redirect loop ends.
const MAX_HOPS: usize = 5;

#[derive(Deserialize)]
struct Request {
    url: String,
}

struct Follow;

impl Handler for Follow {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let mut url = job.json::<Request>()?.url;
        let mut hops = Vec::new();
        for _ in 0..MAX_HOPS {
            match http::get(&url).send() {
                Ok(response) => {
                    hops.push(format!("{} {url}", response.status()));
                    match response.header("location") {
                        Some(next) if (300..400).contains(&response.status()) => {
                            url = next.to_owned();
                        }
                        _ => break,
                    }
                }
                Err(error) => {
                    hops.push(format!("error: {error}"));
                    break;
                }
            }
        }
        kiln_sdk::json(&serde_json::json!({ "hops": hops }))
    }
}

kiln_sdk::export!(Follow);
