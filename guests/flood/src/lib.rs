//! `flood`: opens many HTTP requests at once, without waiting for any response, through the
//! raw `wasi:http` bindings (the SDK's client sends one at a time). The host must keep no more
//! than `http_max_in_flight` of them in flight; the rest wait for a slot.
//!
//! Payload: `{"authority": "127.0.0.1:8080", "count": 20}` (plain HTTP, path `/`). Result:
//! `{"ok": N, "errors": ["..."]}`: how many requests got a response, and why the others failed.

use kiln_sdk::{Handler, Job, JobError};
use serde::Deserialize;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, FutureIncomingResponse, OutgoingBody, OutgoingRequest, Scheme};

#[derive(Deserialize)]
struct Request {
    authority: String,
    count: usize,
}

fn start(authority: &str) -> Result<FutureIncomingResponse, String> {
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some("/")))
        .map_err(|()| "invalid request".to_owned())?;
    let body = request.body().map_err(|()| "no body".to_owned())?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    Ok(future)
}

fn wait(future: FutureIncomingResponse) -> Result<u16, String> {
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Ok(response.status()),
        Some(Ok(Err(code))) => Err(format!("{code:?}")),
        _ => Err("no response".to_owned()),
    }
}

struct Flood;

impl Handler for Flood {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json()?;
        let started: Vec<_> = (0..request.count)
            .map(|_| start(&request.authority))
            .collect();
        let mut ok = 0;
        let mut errors = Vec::new();
        for future in started {
            match future.and_then(wait) {
                Ok(_) => ok += 1,
                Err(error) => errors.push(error),
            }
        }
        kiln_sdk::json(&serde_json::json!({ "ok": ok, "errors": errors }))
    }
}

kiln_sdk::export!(Flood);
