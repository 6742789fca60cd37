//! A small blocking HTTP client for handlers, on `wasi:http` (through the `waki` crate).
//!
//! A handler reaches only the origins its config grants (`grants = { http = [..] }`); a
//! request to anything else fails with an [`Error`] whose [`Error::is_denied`] is true. The
//! host follows no redirects: a 3xx comes back as it is, and a handler that follows it sends
//! a new request, checked again. Response bodies stream: read them with
//! [`Response::chunk`] to keep memory flat, or whole with [`Response::bytes`] (bounded by the
//! handler's memory cap).
//!
//! ```no_run
//! use kiln_sdk::http;
//!
//! # fn run() -> Result<(), kiln_sdk::JobError> {
//! let response = http::post("https://api.mail.example/send")
//!     .header("authorization", "Bearer token")
//!     .json(&serde_json::json!({"to": "a@example.com"}))
//!     .send()?; // an error here retries the job, or fails it if the origin is not granted
//! if response.status() >= 500 {
//!     return Err(kiln_sdk::JobError::retry("the mail API is down"));
//! }
//! let reply: serde_json::Value = response.json()?;
//! # let _ = reply;
//! # Ok(())
//! # }
//! ```
//!
//! Off wasm32 there is no host: [`Request::send`] returns an error.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::JobError;

/// Bytes asked for per read of a response body.
const CHUNK: u64 = 64 << 10;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

/// Why a request failed before a response arrived, or while its body was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    denied: bool,
}

impl Error {
    /// Whether the host refused the request: its origin is not granted, or a granted name
    /// resolves to an internal address. Retrying does not help.
    pub fn is_denied(&self) -> bool {
        self.denied
    }

    fn other(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            denied: false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A denied request fails the job for good; any other failure asks for a retry.
impl From<Error> for JobError {
    fn from(error: Error) -> JobError {
        if error.denied {
            JobError::fatal(format!("http request denied: {error}"))
        } else {
            JobError::retry(format!("http request failed: {error}"))
        }
    }
}

/// A request being built; [`Request::send`] sends it.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    connect_timeout: Option<Duration>,
    /// A problem found while building (a body that would not serialize), reported by `send`.
    invalid: Option<String>,
}

/// A `GET` of `url`.
pub fn get(url: &str) -> Request {
    Request::new(Method::Get, url)
}

/// A `POST` to `url`.
pub fn post(url: &str) -> Request {
    Request::new(Method::Post, url)
}

/// A `PUT` to `url`.
pub fn put(url: &str) -> Request {
    Request::new(Method::Put, url)
}

/// A `DELETE` of `url`.
pub fn delete(url: &str) -> Request {
    Request::new(Method::Delete, url)
}

impl Request {
    /// A request with `method` to `url` (`https://host[:port]/path?query`).
    pub fn new(method: Method, url: &str) -> Request {
        Request {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            connect_timeout: None,
            invalid: None,
        }
    }

    /// Adds a header (`Host` is set by the host to the origin connected to).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body bytes.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Request {
        match serde_json::to_vec(value) {
            Ok(body) => self.body(body).header("content-type", "application/json"),
            Err(e) => {
                self.invalid = Some(format!("body is not serializable as JSON: {e}"));
                self
            }
        }
    }

    /// Gives up connecting after `timeout` (the host also applies its own, shorter or not).
    pub fn connect_timeout(mut self, timeout: Duration) -> Request {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The method and URL, for messages.
    pub fn target(&self) -> String {
        format!("{:?} {}", self.method, self.url)
    }

    /// Sends the request and waits for the response's status and headers.
    pub fn send(self) -> Result<Response, Error> {
        if let Some(reason) = self.invalid {
            return Err(Error::other(reason));
        }
        wasi::send(self)
    }
}

/// A response whose status and headers have arrived; its body is read on demand.
pub struct Response {
    status: u16,
    inner: wasi::Body,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name`, if it is present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.header(name)
    }

    /// A `Retry-After` given in seconds, as servers send with 429 and 503.
    pub fn retry_after(&self) -> Option<Duration> {
        let seconds = self.header("retry-after")?.trim().parse::<u64>().ok()?;
        Some(Duration::from_secs(seconds))
    }

    /// The next piece of the body, or `None` at its end.
    pub fn chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        self.inner.chunk(CHUNK)
    }

    /// The whole body.
    pub fn bytes(mut self) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk()? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The whole body as text (invalid UTF-8 replaced).
    pub fn text(self) -> Result<String, Error> {
        Ok(String::from_utf8_lossy(&self.bytes()?).into_owned())
    }

    /// The whole body as JSON.
    pub fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        serde_json::from_slice(&self.bytes()?)
            .map_err(|e| Error::other(format!("response body is not the expected JSON: {e}")))
    }
}

/// The calls into `wasi:http`, through waki.
#[cfg(target_arch = "wasm32")]
mod wasi {
    use super::{Error, Method, Request, Response};

    pub(super) struct Body(waki::Response);

    fn method(method: Method) -> waki::Method {
        match method {
            Method::Get => waki::Method::Get,
            Method::Head => waki::Method::Head,
            Method::Post => waki::Method::Post,
            Method::Put => waki::Method::Put,
            Method::Patch => waki::Method::Patch,
            Method::Delete => waki::Method::Delete,
            Method::Options => waki::Method::Options,
        }
    }

    fn error(error: anyhow::Error) -> Error {
        let denied = matches!(
            error.downcast_ref::<waki::ErrorCode>(),
            Some(waki::ErrorCode::HttpRequestDenied | waki::ErrorCode::DestinationIpProhibited)
        );
        Error {
            message: format!("{error:#}"),
            denied,
        }
    }

    pub(super) fn send(request: Request) -> Result<Response, Error> {
        let mut builder = waki::Client::new().request(method(request.method), &request.url);
        for (name, value) in &request.headers {
            let name = waki::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::other(format!("invalid header name `{name}`: {e}")))?;
            builder = builder.header(name, value.as_str());
        }
        if let Some(timeout) = request.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        let response = builder.body(request.body).send().map_err(error)?;
        Ok(Response {
            status: response.status_code(),
            inner: Body(response),
        })
    }

    impl Body {
        pub(super) fn header(&self, name: &str) -> Option<&str> {
            self.0.header(name)?.to_str().ok()
        }

        pub(super) fn chunk(&mut self, len: u64) -> Result<Option<Vec<u8>>, Error> {
            self.0.chunk(len).map_err(error)
        }
    }
}

/// Off wasm32: no host, so nothing is ever sent.
#[cfg(not(target_arch = "wasm32"))]
mod wasi {
    use super::{Error, Request, Response};

    pub(super) enum Body {}

    pub(super) fn send(request: Request) -> Result<Response, Error> {
        Err(Error::other(format!(
            "cannot send {}: http needs the kiln host (this is not a wasm32 build)",
            request.target()
        )))
    }

    impl Body {
        pub(super) fn header(&self, _name: &str) -> Option<&str> {
            match *self {}
        }

        pub(super) fn chunk(&mut self, _len: u64) -> Result<Option<Vec<u8>>, Error> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_outside_the_host_fail_with_a_reason() {
        let error = get("https://api.example/x").send().err().unwrap();
        assert!(
            error.to_string().contains("https://api.example/x"),
            "{error}"
        );
        assert!(!error.is_denied());
        assert!(matches!(JobError::from(error), JobError::Retry { .. }));
    }

    #[test]
    fn an_unserializable_body_is_reported_by_send() {
        let bad: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let error = post("https://api.example").json(&bad).send().err().unwrap();
        assert!(error.to_string().contains("JSON"), "{error}");
    }

    #[test]
    fn denied_requests_fail_the_job_for_good() {
        let denied = Error {
            message: "HttpRequestDenied".into(),
            denied: true,
        };
        assert!(matches!(JobError::from(denied), JobError::Fatal(_)));
    }
}
