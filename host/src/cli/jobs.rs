//! The job commands other than `enqueue`: status, jobs, retry, cancel, pause, resume, clear
//! and stats. Each parses its arguments, calls the operations layer on the configured store
//! (so they work with or without a running host), and prints text, or JSON with `--json`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::enqueue::enqueue;
use super::{Command, open_store};
use crate::config::Config;
use crate::ops::{JobView, Ops};
use crate::store::{AnyStore, CancelOutcome, Job, JobState, Page};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs of this configured queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only jobs in this state: scheduled, waiting, active, succeeded, failed or cancelled.
    #[arg(long)]
    pub state: Option<JobState>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Skip this many of the newest jobs first (for paging).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// A queue configured under `[queues]` (`default` always is).
    pub queue: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: Command, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let store = Arc::new(open_store(&config).await?);
    let ops = Ops::new(config, store);
    let out = match command {
        Command::Enqueue(args) => return enqueue(&ops, args).await,
        Command::Status { id, full, json } => {
            print_job(&ops.job(&id).await?, json, full)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Jobs(args) => return list(&ops, args).await,
        Command::Stats { json } => return stats(&ops, json).await,
        Command::Retry {
            id, queue, json, ..
        } => {
            let n = match id {
                Some(id) => ops.retry(&id).await?,
                None => ops.retry_all_failed(queue).await?,
            };
            Output {
                json,
                text: format!("{n} job(s) moved back to waiting"),
                value: json!({ "retried": n }),
            }
        }
        Command::Cancel { id, json } => cancel(&ops, &id, json).await?,
        Command::Pause(QueueArgs { queue, json }) => {
            ops.pause(&queue).await?;
            paused(queue, true, json)
        }
        Command::Resume(QueueArgs { queue, json }) => {
            ops.resume(&queue).await?;
            paused(queue, false, json)
        }
        Command::Clear(QueueArgs { queue, json }) => {
            let n = ops.clear(&queue).await?;
            Output {
                json,
                text: format!("{n} waiting or scheduled job(s) deleted from {queue}"),
                value: json!({ "queue": queue, "deleted": n }),
            }
        }
        Command::Run
        | Command::Check { .. }
        | Command::Handlers { .. }
        | Command::Logs(_)
        | Command::Schedules(_)
        | Command::CompileHandler { .. } => {
            unreachable!("not a job command")
        }
    };
    out.print();
    Ok(ExitCode::SUCCESS)
}

/// What an action command prints: a line of text, or one JSON object.
struct Output {
    json: bool,
    text: String,
    value: serde_json::Value,
}

impl Output {
    fn print(&self) {
        if self.json {
            println!("{}", self.value);
        } else {
            println!("{}", self.text);
        }
    }
}

fn paused(queue: String, paused: bool, json: bool) -> Output {
    let word = if paused { "paused" } else { "resumed" };
    Output {
        json,
        text: format!("queue {queue} {word}"),
        value: json!({ "queue": queue, "paused": paused }),
    }
}

async fn cancel(ops: &Ops<AnyStore>, id: &str, json: bool) -> anyhow::Result<Output> {
    let (outcome, state, text) = match ops.cancel(id).await? {
        CancelOutcome::Cancelled => (
            "cancelled",
            JobState::Cancelled,
            format!("job {id} cancelled"),
        ),
        CancelOutcome::Requested => (
            "requested",
            JobState::Active,
            format!("job {id} is running: its host will interrupt it"),
        ),
        CancelOutcome::AlreadyFinished(state) => (
            "already_finished",
            state,
            format!("job {id} already {state}; nothing to cancel"),
        ),
    };
    Ok(Output {
        json,
        text,
        value: json!({ "id": id, "outcome": outcome, "state": state.as_str() }),
    })
}

/// Prints one job as text, or as one JSON object; bodies over 64 KiB whole only if `full`.
pub fn print_job(job: &Job, json: bool, full: bool) -> anyhow::Result<()> {
    let view = JobView::new(job, full);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", view.text());
    }
    Ok(())
}

async fn list(ops: &Ops<AnyStore>, args: ListArgs) -> anyhow::Result<ExitCode> {
    let page = Page {
        offset: args.offset,
        limit: args.limit,
    };
    let jobs = ops.list(args.queue, args.state, page).await?;
    if args.json {
        let views: Vec<JobView<'_>> = jobs.iter().map(|job| JobView::new(job, false)).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}

async fn stats(ops: &Ops<AnyStore>, json: bool) -> anyhow::Result<ExitCode> {
    let counts = ops.stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&counts)?);
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}
