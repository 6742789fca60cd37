//! `kiln enqueue`: turns the command line into an [`EnqueueRequest`], enqueues it, and with
//! `--wait` follows the job to its end.
//!
//! Output rule: stdout carries only what a script captures (the id, or with `--wait` the
//! result); notes for people (the id while waiting, "already enqueued with this key", the
//! progress bar, why a job did not succeed) go to stderr. The bar is redrawn in place only
//! when stderr is a terminal; otherwise each change is one plain line.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::jobs::print_job;
use super::{EXIT_FAILED, EXIT_TIMEOUT, UsageError};
use crate::ops::{EnqueueRequest, JobView, Ops};
use crate::store::{AnyStore, Job, JobState, Timestamp};

/// How often `enqueue --wait` looks at the job.
const WAIT_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Handler name (the file stem of its `.wasm`).
    pub handler: String,
    /// Payload as JSON text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Payload read from a file, as raw bytes.
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Queue; by default the handler's configured queue, else `default`.
    #[arg(long)]
    pub queue: Option<String>,
    /// Start no sooner than this from now (`30s`, `5m`, `1h 30m`).
    #[arg(
        long = "in",
        value_name = "DURATION",
        conflicts_with = "at",
        allow_hyphen_values = true
    )]
    pub delay: Option<String>,
    /// Start no sooner than this time (RFC 3339, `2026-12-01T09:00:00+01:00`).
    #[arg(long)]
    pub at: Option<String>,
    /// Unique key: while an unfinished job has it, enqueue returns that job's id.
    #[arg(long)]
    pub key: Option<String>,
    /// Priority within the queue; higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Wait for the job to finish, showing its progress on stderr, then print its result.
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: stop waiting after this long (`30s`, `5m`) and exit 4; the job itself
    /// is left as it is.
    #[arg(long, value_name = "DURATION", requires = "wait")]
    pub timeout: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `kiln enqueue`.
pub async fn enqueue(ops: &Ops<AnyStore>, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| duration("--timeout", t))
        .transpose()?;
    let enqueued = ops.enqueue(request(&args, Timestamp::now())?).await?;
    if enqueued.existing {
        eprintln!(
            "job {} was already enqueued with key `{}`",
            enqueued.id,
            args.key.as_deref().unwrap_or_default()
        );
    }
    if !args.wait {
        if args.json {
            println!("{}", serde_json::to_string(&enqueued)?);
        } else {
            println!("{}", enqueued.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("waiting for job {}", enqueued.id);
    let Some(job) = wait_for(ops, &enqueued.id, !args.json, timeout).await? else {
        let job = ops.job(&enqueued.id).await?;
        eprintln!(
            "job {} is still {} after {}; stopped waiting (the job was not cancelled)",
            job.id,
            job.state,
            humantime::format_duration(timeout.unwrap_or_default())
        );
        return Ok(ExitCode::from(EXIT_TIMEOUT));
    };
    if args.json {
        print_job(&job, true, false)?;
    } else if job.state == JobState::Succeeded {
        let view = JobView::new(&job, true);
        println!(
            "{}",
            view.result().map(|r| r.to_string()).unwrap_or_default()
        );
    }
    Ok(match job.state {
        JobState::Succeeded => ExitCode::SUCCESS,
        JobState::Cancelled => {
            eprintln!("job {} was cancelled", job.id);
            ExitCode::from(EXIT_FAILED)
        }
        state => {
            let error = job.error.as_deref().unwrap_or("its handler gave no error");
            eprintln!("job {} {state}: {error}", job.id);
            ExitCode::from(EXIT_FAILED)
        }
    })
}

/// The request an `enqueue` command line stands for.
fn request(args: &EnqueueArgs, now: Timestamp) -> anyhow::Result<EnqueueRequest> {
    let payload = match (&args.payload, &args.payload_file) {
        (Some(text), _) => {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| UsageError(format!("--payload is not valid JSON: {e}")))?;
            text.clone().into_bytes()
        }
        (None, Some(file)) => std::fs::read(file).map_err(|e| {
            UsageError(format!(
                "failed to read payload file `{}`: {e}",
                file.display()
            ))
        })?,
        (None, None) => b"{}".to_vec(),
    };
    let run_at = match (&args.delay, &args.at) {
        (Some(delay), _) => Some(now + duration("--in", delay)?),
        (None, Some(at)) => {
            let at = chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|e| UsageError(format!("--at `{at}` is not an RFC 3339 time: {e}")))?;
            Some(Timestamp(at.timestamp_millis()))
        }
        (None, None) => None,
    };
    Ok(EnqueueRequest {
        handler: args.handler.clone(),
        payload,
        queue: args.queue.clone(),
        run_at,
        unique_key: args.key.clone(),
        priority: args.priority,
    })
}

/// `text` as a duration for `flag`; a negative one is refused by name.
fn duration(flag: &str, text: &str) -> Result<Duration, UsageError> {
    if text.trim_start().starts_with('-') {
        return Err(UsageError(format!(
            "{flag} `{text}` is negative; give a duration from now such as `30s` (or --at TIME)"
        )));
    }
    humantime::parse_duration(text)
        .map_err(|e| UsageError(format!("{flag} `{text}` is not a duration: {e}")))
}

/// Polls the job until it finishes (`Some`) or `timeout` passes (`None`), drawing its
/// progress on stderr when `bar` is set.
async fn wait_for(
    ops: &Ops<AnyStore>,
    id: &str,
    bar: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<Option<Job>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let terminal = std::io::stderr().is_terminal();
    let mut shown = None;
    loop {
        let job = ops.job(id).await?;
        if bar {
            let line = progress_line(&job);
            if shown.as_ref() != Some(&line) {
                if terminal {
                    eprint!("\r\x1b[2K{line}");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{line}");
                }
                shown = Some(line);
            }
        }
        let finished = job.state.is_finished();
        if finished || deadline.is_some_and(|d| Instant::now() >= d) {
            if bar && terminal {
                eprintln!();
            }
            return Ok(finished.then_some(job));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `[#####     ]  50% active (attempt 1/3) resizing`; a job that succeeded is at 100%
/// whether or not it reported progress.
fn progress_line(job: &Job) -> String {
    const WIDTH: usize = 30;
    let reported = job.progress.as_ref().map_or(0, |p| p.percent.min(100));
    let percent = if job.state == JobState::Succeeded {
        100
    } else {
        reported
    };
    let filled = WIDTH * usize::from(percent) / 100;
    let note = job
        .progress
        .as_ref()
        .and_then(|p| p.message.clone())
        .unwrap_or_default();
    format!(
        "[{}{}] {percent:>3}% {} (attempt {}/{}) {note}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled),
        job.state,
        job.attempts,
        job.max_attempts
    )
    .trim_end()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn negative_and_malformed_durations_are_refused_by_flag() {
        assert!(duration("--in", "-5s").unwrap_err().0.contains("negative"));
        assert!(
            duration("--in", "soon")
                .unwrap_err()
                .0
                .contains("--in `soon`")
        );
        assert_eq!(duration("--in", "1m").unwrap().as_secs(), 60);
    }
}
