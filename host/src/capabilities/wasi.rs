//! The WASI base of every attempt, which denies by default. A handler's WASI context starts
//! with:
//! - no environment variables and no arguments (`env` grants add variables);
//! - no preopened directories (a `dir` grant adds one, read-only);
//! - stdin closed; stdout and stderr captured into the job's capped log, never the host's
//!   own stdio;
//! - no TCP, UDP or name lookup (wasmtime's default, kept; a `tcp` grant opens TCP to its
//!   endpoints and lookups of its names, UDP stays off);
//! - no HTTP: `wasi:http` is linked, but a request to an origin not granted by `http` is
//!   denied;
//! - clocks and random numbers, which cannot reach anything outside.
//!
//! The WASI interfaces themselves are linked for every handler (`Runtime::new`), so a
//! component that imports them loads; what they may reach is decided here, per attempt.

use std::sync::Arc;

use wasmtime_wasi::WasiCtxBuilder;

use crate::host_api::{CaptureStream, Journal, LogSource};

/// The deny-all builder for one attempt, with stdout and stderr going to `journal`.
pub(crate) fn base(journal: &Arc<Journal>) -> WasiCtxBuilder {
    let mut builder = wasmtime_wasi::WasiCtx::builder();
    builder
        .stdout(CaptureStream::new(journal.clone(), LogSource::Stdout))
        .stderr(CaptureStream::new(journal.clone(), LogSource::Stderr));
    builder
}
