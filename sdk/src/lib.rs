//! Write Kiln job handlers in Rust.
//!
//! A handler is a WebAssembly component that Kiln runs once per attempt of a job, in a fresh
//! sandbox. With this crate a handler is one small file: implement [`Handler`] and invoke
//! [`export!`]. The crate generates its bindings from the contract in the Kiln repository's
//! `wit/` directory when it is built, so handler crates need no `wit/` of their own; depend
//! on it by path from a Kiln checkout, build as a `cdylib` for `wasm32-wasip2` and drop the
//! `.wasm` into Kiln's handlers directory (its file stem is the handler's name).
//!
//! ```no_run
//! use kiln_sdk::{EnqueueOptions, Handler, Job, JobError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Request {
//!     images: Vec<String>,
//!     width: u32,
//! }
//!
//! #[derive(Serialize)]
//! struct Report {
//!     resized: usize,
//! }
//!
//! struct Resize;
//!
//! impl Handler for Resize {
//!     fn handle(job: Job) -> Result<Vec<u8>, JobError> {
//!         // A payload that is not a `Request` fails the job for good, with a clear message.
//!         let request: Request = job.json()?;
//!         if request.width == 0 {
//!             return Err(JobError::fatal("width must be positive"));
//!         }
//!         for (done, image) in request.images.iter().enumerate() {
//!             kiln_sdk::debug!("resizing {image} to {}px", request.width);
//!             let percent = (done * 100 / request.images.len()) as u8;
//!             kiln_sdk::progress(percent, Some(image));
//!         }
//!         kiln_sdk::enqueue("notify", br#"{"what": "resized"}"#, EnqueueOptions::new())
//!             .map_err(|reason| JobError::retry(format!("could not enqueue notify: {reason}")))?;
//!         kiln_sdk::info!("resized {} images", request.images.len());
//!         kiln_sdk::json(&Report { resized: request.images.len() })
//!     }
//! }
//!
//! kiln_sdk::export!(Resize);
//! # fn main() {}
//! ```
//!
//! A handler crate's `Cargo.toml` needs little more than this (a small release profile keeps
//! the component small; `panic = "abort"` turns a panic into a trap the host records):
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! kiln-sdk = { path = "../kiln/sdk" }   # a Kiln checkout
//! serde = { version = "1", features = ["derive"] }
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! strip = true
//! panic = "abort"
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the component is
//! `target/wasm32-wasip2/release/<crate>.wasm`.
//!
//! Layout:
//! - `bindings.rs`: the one `wit_bindgen::generate!` of the handler world (hidden).
//! - `job.rs`: [`Job`], [`JobError`] and the [`json`] result helper.
//! - `host.rs`: [`log()`], [`progress`], [`enqueue`] and the logging macros ([`info!`] and
//!   friends).
//! - `http.rs`: [`http`], a blocking HTTP client for the origins a handler is granted.
//!
//! Off wasm32 (e.g. in a handler's unit tests) there is no host: log lines and progress go to
//! stderr, and [`enqueue`] and [`http`] requests return an error.

#[doc(hidden)]
pub mod bindings;
mod host;
pub mod http;
mod job;

pub use host::{EnqueueOptions, Level, enqueue, log, progress};
pub use job::{Job, JobError, json};

/// A job handler: Kiln calls [`Handler::handle`] once per attempt, in a fresh sandbox, so
/// nothing is kept between jobs or attempts.
pub trait Handler {
    /// Runs one attempt of `job`; returns the result bytes (often [`json`]), or how the attempt
    /// failed so Kiln knows whether to try again.
    fn handle(job: Job) -> Result<Vec<u8>, JobError>;
}

/// Makes a [`Handler`] the component's export; invoke it once per handler crate.
///
/// ```no_run
/// struct Echo;
/// impl kiln_sdk::Handler for Echo {
///     fn handle(job: kiln_sdk::Job) -> Result<Vec<u8>, kiln_sdk::JobError> {
///         Ok(job.payload)
///     }
/// }
/// kiln_sdk::export!(Echo);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($handler:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct KilnExport;

            impl $crate::bindings::Guest for KilnExport {
                fn handle(
                    job: $crate::bindings::Job,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::bindings::JobError>
                {
                    $crate::__private::run::<$handler>(job)
                }
            }

            $crate::bindings::export! { KilnExport with_types_in $crate::bindings }
        };
    };
}

/// What [`export!`] expands to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use crate::bindings::{self, kiln::handler::types};
    use crate::{Handler, Job, JobError};

    /// Converts the generated job into the SDK's, runs the handler and converts back.
    pub fn run<H: Handler>(job: bindings::Job) -> Result<Vec<u8>, bindings::JobError> {
        let job = Job {
            id: job.id,
            name: job.name,
            queue: job.queue,
            payload: job.payload,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
        };
        H::handle(job).map_err(|err| match err {
            JobError::Retry { message, delay } => types::JobError::Retry(types::RetryInfo {
                message,
                delay_ms: delay.map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            }),
            JobError::Fatal(message) => types::JobError::Fatal(message),
        })
    }
}
