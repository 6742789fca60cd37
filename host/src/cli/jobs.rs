//! The job commands of the CLI: enqueue (optionally waiting for the result), status, jobs,
//! retry, cancel, pause, resume, clear and stats. They talk to the configured job store
//! directly, so they work with or without a running host.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::{Command, EXIT_FAILED, UsageError, open_store};
use crate::config::Config;
use crate::store::{
    AnyStore, CancelOutcome, Job, JobState, JobStore, ListFilter, NewJob, Page, RetryTarget,
    Timestamp,
};

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

pub async fn run(command: Command, config: &Config) -> anyhow::Result<ExitCode> {
    let store = open_store(config).await?;
    let now = Timestamp::now();
    match command {
        Command::Enqueue(args) => return enqueue(&store, config, args).await,
        Command::Status { id, json } => {
            let job = find(&store, &id).await?;
            print_job(&JobView::from(&job), json)?;
        }
        Command::Jobs(args) => list(&store, args).await?,
        Command::Retry { id, queue, .. } => {
            let target = match id {
                Some(id) => RetryTarget::One(id),
                None => RetryTarget::AllFailed { queue },
            };
            let n = store.retry_failed(target, now).await?;
            println!("{n} job(s) moved back to waiting");
        }
        Command::Cancel { id } => match store.cancel(&id, now).await? {
            CancelOutcome::Cancelled => println!("job {id} cancelled"),
            CancelOutcome::Requested => {
                println!("job {id} is running: its host will interrupt it")
            }
            CancelOutcome::AlreadyFinished(state) => {
                println!("job {id} already {state}; nothing to cancel")
            }
        },
        Command::Pause { queue } => {
            known_queue(config, &queue)?;
            store.pause(&queue).await?;
            println!("queue {queue} paused");
        }
        Command::Resume { queue } => {
            known_queue(config, &queue)?;
            store.resume(&queue).await?;
            println!("queue {queue} resumed");
        }
        Command::Clear { queue } => {
            let n = store.clear(&queue).await?;
            println!("{n} waiting or scheduled job(s) deleted from {queue}");
        }
        Command::Stats { json } => stats(&store, json).await?,
        Command::Run | Command::Check { .. } | Command::Handlers { .. } => {
            unreachable!("not a job command")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn known_queue(config: &Config, queue: &str) -> anyhow::Result<()> {
    if config.queues.contains_key(queue) {
        return Ok(());
    }
    let known: Vec<&str> = config.queues.keys().map(String::as_str).collect();
    Err(UsageError(format!(
        "queue `{queue}` is not configured (queues: {})",
        known.join(", ")
    ))
    .into())
}

async fn find(store: &AnyStore, id: &str) -> anyhow::Result<Job> {
    store
        .get(id)
        .await?
        .ok_or_else(|| UsageError(format!("job `{id}` not found")).into())
}

/// The job an `enqueue` command line asks for.
pub fn new_job(config: &Config, args: &EnqueueArgs, now: Timestamp) -> anyhow::Result<NewJob> {
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
    let queue = args
        .queue
        .clone()
        .unwrap_or_else(|| config.queue_for(&args.handler).to_owned());
    known_queue(config, &queue)?;
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
    let settings = config.job_settings(&args.handler, &queue);
    Ok(NewJob {
        handler: args.handler.clone(),
        priority: args.priority.unwrap_or(config.queues[&queue].priority),
        queue,
        payload,
        run_at,
        max_attempts: settings.max_attempts,
        unique_key: args.key.clone(),
    })
}

async fn enqueue(store: &AnyStore, config: &Config, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let dir = &config.host.handlers_dir;
    if dir.is_dir() && !dir.join(format!("{}.wasm", args.handler)).exists() {
        return Err(UsageError(format!(
            "unknown handler `{}`: no `{}.wasm` in handlers directory `{}`",
            args.handler,
            args.handler,
            dir.display()
        ))
        .into());
    }
    let now = Timestamp::now();
    let job = new_job(config, &args, now)?;
    let enqueued = store.enqueue(vec![job], now).await?;
    let enqueued = enqueued
        .into_iter()
        .next()
        .context("the job store returned no id")?;
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
    let job = wait_for(store, &enqueued.id, !args.json).await?;
    let view = JobView::from(&job);
    if args.json {
        print_job(&view, true)?;
    } else if job.state == JobState::Succeeded {
        println!("{}", view.result.unwrap_or_default());
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
async fn wait_for(store: &AnyStore, id: &str, bar: bool) -> anyhow::Result<Job> {
    let mut shown = None;
    loop {
        let job = find(store, id).await?;
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

/// A job as the CLI shows it: payload and result as text when they are UTF-8.
#[derive(Debug, Serialize)]
struct JobView<'a> {
    #[serde(flatten)]
    job: &'a Job,
    payload_text: Option<String>,
    result: Option<String>,
}

impl<'a> From<&'a Job> for JobView<'a> {
    fn from(job: &'a Job) -> Self {
        JobView {
            job,
            payload_text: String::from_utf8(job.payload.clone()).ok(),
            result: job
                .result
                .as_ref()
                .map(|r| String::from_utf8_lossy(r).into_owned()),
        }
    }
}

fn print_job(view: &JobView<'_>, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(view)?);
        return Ok(());
    }
    let job = view.job;
    println!("job       {}", job.id);
    println!(
        "handler   {}  queue {}  priority {}",
        job.handler, job.queue, job.priority
    );
    println!(
        "state     {}  attempts {}/{}",
        job.state, job.attempts, job.max_attempts
    );
    println!("run at    {}  created {}", job.run_at, job.created_at);
    if let Some(progress) = &job.progress {
        let note = progress.message.as_deref().unwrap_or("");
        println!("progress  {}% {note}", progress.percent);
    }
    if let Some(result) = &view.result {
        println!("result    {result}");
    }
    if let Some(error) = &job.error {
        println!("error     {error}");
    }
    for a in &job.history {
        println!(
            "  attempt {} {:?} {}ms digest {} {}",
            a.attempt,
            a.outcome,
            a.wall_ms,
            a.digest.as_deref().map_or("-", |d| &d[..d.len().min(12)]),
            a.message.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn list(store: &AnyStore, args: ListArgs) -> anyhow::Result<()> {
    let filter = ListFilter {
        queue: args.queue,
        state: args.state,
    };
    let page = Page {
        offset: args.offset,
        limit: args.limit,
    };
    let jobs = store.list(filter, page).await?;
    if args.json {
        let views: Vec<JobView<'_>> = jobs.iter().map(JobView::from).collect();
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

async fn stats(store: &AnyStore, json: bool) -> anyhow::Result<()> {
    let counts = store.counts().await?;
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
