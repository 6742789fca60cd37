//! `chatter`: writes far more log than its job may keep, to check that the host's own log
//! grows no more than the job's (`max_log`), that a slow reader of the host's log slows no
//! job, and that a message cannot forge a line of the host's log.
//!
//! Payload (all optional): `{"calls": n, "message": "...", "stdout_mib": n, "stderr_mib": n}`:
//! `n` calls to `log` at info with `message` (default "chatter"), then `stdout_mib` MiB of
//! lines written to stdout and `stderr_mib` MiB to stderr. Result: `{"calls": n}`.

use std::io::Write as _;

use kiln_sdk::{Handler, Job, JobError, Level};
use serde::Deserialize;

#[derive(Default, Deserialize)]
#[serde(default)]
struct Request {
    calls: u64,
    message: Option<String>,
    stdout_mib: usize,
    stderr_mib: usize,
}

/// Writes `mib` MiB of numbered lines to `out`, in 64 KiB writes.
fn spew(out: &mut dyn std::io::Write, mib: usize) {
    let mut chunk = Vec::with_capacity(64 << 10);
    let mut line = 0u64;
    for _ in 0..mib * 16 {
        chunk.clear();
        while chunk.len() < (64 << 10) - 64 {
            let _ = writeln!(
                chunk,
                "chatter line {line} ................................"
            );
            line += 1;
        }
        if out.write_all(&chunk).is_err() {
            return;
        }
    }
}

struct Chatter;

impl Handler for Chatter {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json_or_default()?;
        let message = request.message.as_deref().unwrap_or("chatter");
        for _ in 0..request.calls {
            kiln_sdk::log(Level::Info, message);
        }
        spew(&mut std::io::stdout(), request.stdout_mib);
        spew(&mut std::io::stderr(), request.stderr_mib);
        kiln_sdk::json(&serde_json::json!({ "calls": request.calls }))
    }
}

kiln_sdk::export!(Chatter);
