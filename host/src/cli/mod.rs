//! The `kiln` command line: parses arguments, calls the operations layer, prints.
//!
//! - `mod.rs`: the commands and their arguments, the async runtime, and the one mapping of
//!   errors to exit codes ([`exit_code`]).
//! - `enqueue`: enqueue, and `--wait` for the result.
//! - `jobs`: status, jobs, retry, cancel, pause, resume, clear, stats.
//! - `logs`: one attempt's stored log.
//! - `handlers`: `check` and `handlers`.
//! - `schedules`: `schedules` and `schedules trigger`.
//! - `host`: `run`.
//!
//! Commands return `anyhow::Result<ExitCode>`; `main` only prints errors and maps them.

mod enqueue;
mod handlers;
mod host;
mod jobs;
mod logs;
mod schedules;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::engine::RuntimeSettings;
use crate::ops::{ErrorClass, OpsError};
use crate::registry::{compile_child_main, describe};
use crate::store::{StoreConfig, StoreError};

pub use crate::host::open_store;

/// Exit code for a job that failed or was cancelled (`--wait`), an invalid component
/// (`check`), a handler file that was refused (`handlers`), or an action the job's state
/// refuses.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage, a bad configuration, or something named that does not exist.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the job store cannot be reached.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code when `enqueue --wait --timeout` stopped waiting before the job finished.
pub const EXIT_TIMEOUT: u8 = 4;

/// Runs background jobs whose handlers are WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "kiln", version)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "KILN_CONFIG",
        default_value = "config.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: load handlers, watch for changes, claim and run jobs until stopped.
    Run,
    /// Enqueue a job and print its id.
    Enqueue(enqueue::EnqueueArgs),
    /// Show one job: state, progress, result or error, and every attempt.
    Status {
        /// The job's id, as `enqueue` printed it.
        id: String,
        /// Show payloads and results over 64 KiB whole instead of summarised.
        #[arg(long)]
        full: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List jobs, newest first.
    Jobs(jobs::ListArgs),
    /// Print one attempt's log (the last attempt's by default).
    Logs(logs::LogsArgs),
    /// Retry a failed job, or every failed job.
    Retry {
        /// The failed job to retry.
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<String>,
        /// Retry every failed job (of `--queue` if given).
        #[arg(long)]
        all_failed: bool,
        /// With `--all-failed`: only this configured queue's failed jobs.
        #[arg(long, requires = "all_failed")]
        queue: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job; a running job's sandbox is interrupted.
    Cancel {
        /// The job to cancel.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop handing out jobs of a queue (running jobs finish).
    Pause(jobs::QueueArgs),
    /// Resume a paused queue.
    Resume(jobs::QueueArgs),
    /// Delete the waiting and scheduled jobs of a queue.
    Clear(jobs::QueueArgs),
    /// Job counts per queue and state, every configured queue included.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate a handler component against the contract and list its imports and exports.
    Check {
        /// The `.wasm` file to check; its file stem is the handler name it would serve.
        file: PathBuf,
        /// The memory cap to check against: a component whose memory starts larger is
        /// invalid (`64MiB`; the default is `max_memory`'s default).
        #[arg(long, value_name = "SIZE", default_value = "256MiB")]
        max_memory: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compile a component read from stdin under CPU and memory limits and write its
    /// artifact to stdout (what a host runs to compile untrusted handlers).
    #[command(hide = true)]
    CompileHandler {
        /// The host engine's pool size.
        #[arg(long)]
        max_instances: u32,
        /// The host engine's largest memory cap, in bytes.
        #[arg(long)]
        max_memory: u64,
        /// Whether the host engine pools instances.
        #[arg(long, action = clap::ArgAction::Set)]
        pooling: bool,
        /// CPU seconds the compile may take.
        #[arg(long)]
        cpu_seconds: u64,
    },
    /// List the configured schedules with their next fire times and latest tick, or
    /// trigger one (`schedules trigger NAME`).
    Schedules(schedules::SchedulesArgs),
    /// Load the configured handlers directory and list each handler; exits 1 when any
    /// file was refused.
    Handlers {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the parsed command line on an async runtime with the configured number of threads.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::CompileHandler {
        max_instances,
        max_memory,
        pooling,
        cpu_seconds,
    } = cli.command
    {
        let settings = RuntimeSettings {
            max_instances,
            max_memory,
            pooling,
        };
        return Ok(compile_child_main(&settings, cpu_seconds));
    }
    if let Command::Check {
        file,
        json,
        max_memory,
    } = &cli.command
    {
        let cap = crate::config::parse_size(max_memory)
            .map_err(|e| UsageError(format!("invalid --max-memory: {e}")))?;
        return handlers::check(file, *json, cap);
    }
    let config = Arc::new(load_config(&cli.config)?);
    let runtime =
        async_runtime(config.host.threads).context("failed to start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Check { .. } | Command::CompileHandler { .. } => {
                unreachable!("handled above")
            }
            Command::Handlers { json } => handlers::handlers(&config, json).await,
            Command::Run => host::run(config).await,
            command => {
                let store = config.store.clone();
                let done = match command {
                    Command::Logs(args) => logs::run(args, config).await,
                    Command::Schedules(args) => schedules::run(args, config).await,
                    command => jobs::run(command, config).await,
                };
                done.map_err(|error| name_the_store(error, &store))
            }
        }
    })
}

/// `error`, saying which store could not be reached when it is that and does not say so.
fn name_the_store(error: anyhow::Error, store: &StoreConfig) -> anyhow::Error {
    let named = store.to_string();
    if exit_code(&error) == EXIT_UNAVAILABLE && !format!("{error:#}").contains(&named) {
        error.context(format!("job store {named} is unreachable"))
    } else {
        error
    }
}

/// A multi-threaded runtime with `threads` workers (one per CPU when `None`).
pub fn async_runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// Loads the configuration; any problem with it is a usage error (exit code 2).
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|error| UsageError(describe(&error)).into())
}

/// The exit code for an error that ended a command; the one place errors become codes.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<UsageError>().is_some()
            || cause.downcast_ref::<crate::config::ConfigError>().is_some()
        {
            return EXIT_USAGE;
        }
        if let Some(ops) = cause.downcast_ref::<OpsError>() {
            return match ops.class() {
                ErrorClass::NotFound | ErrorClass::Invalid | ErrorClass::TooLarge => EXIT_USAGE,
                ErrorClass::Unavailable => EXIT_UNAVAILABLE,
                ErrorClass::Conflict | ErrorClass::Internal => EXIT_FAILED,
            };
        }
        if cause
            .downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_unavailable)
        {
            return EXIT_UNAVAILABLE;
        }
    }
    EXIT_FAILED
}

/// A mistake in how Kiln was invoked or configured (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
