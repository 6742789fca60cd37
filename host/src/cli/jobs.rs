//! The job commands: enqueue (optionally waiting for the result), status, jobs, retry,
//! cancel, pause, resume, clear and stats. Each parses its arguments, calls the operations
//! layer on the configured store (so they work with or without a running host), and prints.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{Command, EXIT_FAILED, UsageError, open_store};
use crate::config::Config;
use crate::ops::{EnqueueRequest, JobView, Ops};
use crate::store::{AnyStore, CancelOutcome, Job, JobState, Page, Timestamp};

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
    #[arg(long = "in", value_name = "DURATION", conflicts_with = "at")]
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
    /// Wait for the job to finish, showing its progress, then print its result.
    #[arg(long)]
    pub wait: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub queue: Option<String>,
    /// scheduled, waiting, active, succeeded, failed or cancelled.
    #[arg(long)]
    pub state: Option<JobState>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: Command, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let store = Arc::new(open_store(&config).await?);
    let ops = Ops::new(config, store);
    match command {
        Command::Enqueue(args) => return enqueue(&ops, args).await,
        Command::Status { id, json } => {
            let job = ops.job(&id).await?;
            print_job(&job, json)?;
        }
        Command::Jobs(args) => list(&ops, args).await?,
        Command::Retry { id, queue, .. } => {
            let n = match id {
                Some(id) => ops.retry(&id).await?,
                None => ops.retry_all_failed(queue).await?,
            };
            println!("{n} job(s) moved back to waiting");
        }
        Command::Cancel { id } => match ops.cancel(&id).await? {
            CancelOutcome::Cancelled => println!("job {id} cancelled"),
            CancelOutcome::Requested => {
                println!("job {id} is running: its host will interrupt it")
            }
            CancelOutcome::AlreadyFinished(state) => {
                println!("job {id} already {state}; nothing to cancel")
            }
        },
        Command::Pause { queue } => {
            ops.pause(&queue).await?;
            println!("queue {queue} paused");
        }
        Command::Resume { queue } => {
            ops.resume(&queue).await?;
            println!("queue {queue} resumed");
        }
        Command::Clear { queue } => {
            let n = ops.clear(&queue).await?;
            println!("{n} waiting or scheduled job(s) deleted from {queue}");
        }
        Command::Stats { json } => stats(&ops, json).await?,
        Command::Run | Command::Check { .. } | Command::Handlers { .. } | Command::Logs(_) => {
            unreachable!("not a job command")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The request an `enqueue` command line stands for.
fn request(args: &EnqueueArgs, now: Timestamp) -> anyhow::Result<EnqueueRequest> {
    let payload = match (&args.payload, &args.payload_file) {
        (Some(text), _) => {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| UsageError(format!("--payload is not valid JSON: {e}")))?;
            text.clone().into_bytes()
        }
        (None, Some(file)) => std::fs::read(file)
            .with_context(|| format!("failed to read payload file `{}`", file.display()))?,
        (None, None) => b"{}".to_vec(),
    };
    let run_at = match (&args.delay, &args.at) {
        (Some(delay), _) => {
            let delay = humantime::parse_duration(delay)
                .map_err(|e| UsageError(format!("--in `{delay}` is not a duration: {e}")))?;
            Some(now + delay)
        }
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

async fn enqueue(ops: &Ops<AnyStore>, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let enqueued = ops.enqueue(request(&args, Timestamp::now())?).await?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::to_string(&enqueued)?);
        } else if enqueued.existing {
            println!("{} (already enqueued with this key)", enqueued.id);
        } else {
            println!("{}", enqueued.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let job = wait_for(ops, &enqueued.id, !args.json).await?;
    if args.json {
        print_job(&job, true)?;
    } else if job.state == JobState::Succeeded {
        let view = JobView::new(&job, true);
        println!(
            "{}",
            view.result().map(|r| r.to_string()).unwrap_or_default()
        );
    } else {
        eprintln!(
            "job {} {}: {}",
            job.id,
            job.state,
            job.error.as_deref().unwrap_or("no error recorded")
        );
    }
    Ok(if job.state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// Polls the job until it finishes, drawing its progress on stderr when `bar` is set.
async fn wait_for(ops: &Ops<AnyStore>, id: &str, bar: bool) -> anyhow::Result<Job> {
    let mut shown = None;
    loop {
        let job = ops.job(id).await?;
        if bar {
            let line = progress_line(&job);
            if shown.as_ref() != Some(&line) {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
                shown = Some(line);
            }
        }
        if job.state.is_finished() {
            if bar {
                eprintln!();
            }
            return Ok(job);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

fn progress_line(job: &Job) -> String {
    const WIDTH: usize = 30;
    let percent = job.progress.as_ref().map_or(0, |p| p.percent.min(100));
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
}

fn print_job(job: &Job, json: bool) -> anyhow::Result<()> {
    let view = JobView::new(job, false);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", view.text());
    }
    Ok(())
}

async fn list(ops: &Ops<AnyStore>, args: ListArgs) -> anyhow::Result<()> {
    let page = Page {
        offset: args.offset,
        limit: args.limit,
    };
    let jobs = ops.list(args.queue, args.state, page).await?;
    if args.json {
        let views: Vec<JobView<'_>> = jobs.iter().map(|job| JobView::new(job, false)).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    println!(
        "{:<38} {:<12} {:<10} {:<10} {:>8}  ERROR",
        "ID", "HANDLER", "QUEUE", "STATE", "ATTEMPTS"
    );
    for job in &jobs {
        println!(
            "{:<38} {:<12} {:<10} {:<10} {:>8}  {}",
            job.id,
            job.handler,
            job.queue,
            job.state,
            format!("{}/{}", job.attempts, job.max_attempts),
            job.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn stats(ops: &Ops<AnyStore>, json: bool) -> anyhow::Result<()> {
    let counts = ops.stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&counts)?);
        return Ok(());
    }
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  PAUSED",
        "QUEUE", "SCHEDULED", "WAITING", "ACTIVE", "SUCCEEDED", "FAILED", "CANCELLED"
    );
    for c in &counts {
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
            c.queue, c.scheduled, c.waiting, c.active, c.succeeded, c.failed, c.cancelled, c.paused
        );
    }
    Ok(())
}
