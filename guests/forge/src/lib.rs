//! `forge`: sends requests to a granted origin that try to reach another one: one with a
//! `Host` header naming the other origin, one whose request target is an absolute URL of the
//! other origin, one whose target is a network-path reference (`//other/...`). None may
//! reach it: the host connects to the granted origin, sends its own `Host` header and an
//! origin-form target (the bindings refuse the first two before the host sees them).
//!
//! Payload: `{"granted": "127.0.0.1:8080", "other": "127.0.0.1:9090"}` (plain HTTP). Result:
//! `{"host_header": .., "absolute_target": .., "network_path": ..}`, each `<status> <body>` or
//! `error: <why>`, where a
//! status is followed by the response body (the test server echoes what it received).

use kiln_sdk::{Handler, Job, JobError};
use serde::Deserialize;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};

#[derive(Deserialize)]
struct Request {
    granted: String,
    other: String,
}

/// Sends GET `path` to `authority` with `headers`; the status and body, or why it failed.
fn send(authority: &str, path: &str, headers: &[(String, Vec<u8>)]) -> String {
    let fields = match Fields::from_list(headers) {
        Ok(fields) => fields,
        Err(e) => return format!("error: headers refused: {e:?}"),
    };
    let request = OutgoingRequest::new(fields);
    let set = request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some(path)));
    if set.is_err() {
        return "error: request refused by the bindings".to_owned();
    }
    let Ok(body) = request.body() else {
        return "error: no body".to_owned();
    };
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(e) => return format!("error: {e:?}"),
    };
    let _ = OutgoingBody::finish(body, None);
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return format!("error: {code:?}"),
        _ => return "error: no response".to_owned(),
    };
    let status = response.status();
    let mut text = Vec::new();
    if let Ok(body) = response.consume()
        && let Ok(stream) = body.stream()
    {
        while let Ok(chunk) = stream.blocking_read(4096) {
            text.extend_from_slice(&chunk);
        }
    }
    format!("{status} {}", String::from_utf8_lossy(&text))
}

struct Forge;

impl Handler for Forge {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json()?;
        let host = vec![("host".to_owned(), request.other.clone().into_bytes())];
        let absolute = format!("http://{}/stolen", request.other);
        let network_path = format!("//{}/stolen", request.other);
        kiln_sdk::json(&serde_json::json!({
            "host_header": send(&request.granted, "/", &host),
            "absolute_target": send(&request.granted, &absolute, &[]),
            "network_path": send(&request.granted, &network_path, &[]),
        }))
    }
}

kiln_sdk::export!(Forge);
