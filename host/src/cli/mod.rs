//! The `kiln` command line: parses arguments and runs one command.
//!
//! Commands return `anyhow::Result<ExitCode>`; `main` only prints errors and maps them to
//! exit codes (0 ok, 1 the thing checked or waited for failed, 2 usage or config error).

mod host;
mod jobs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde::Serialize;
use wasmtime::component::types::ComponentItem;

use crate::config::{Config, StoreConfig};
use crate::engine::{Runtime, RuntimeSettings};
use crate::registry::{LoadSource, Registry, describe};
use crate::store::AnyStore;

/// Exit code for a failed job (`--wait`) or an invalid handler (`check`).
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or a bad configuration.
pub const EXIT_USAGE: u8 = 2;

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
    /// Enqueue a job.
    Enqueue(jobs::EnqueueArgs),
    /// Show one job: state, progress, result or error, and every attempt.
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List jobs, newest first.
    Jobs(jobs::ListArgs),
    /// Retry a failed job, or every failed job.
    Retry {
        /// The job to retry.
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<String>,
        /// Retry every failed job (of `--queue` if given).
        #[arg(long)]
        all_failed: bool,
        #[arg(long, requires = "all_failed")]
        queue: Option<String>,
    },
    /// Cancel a job; a running job's sandbox is interrupted.
    Cancel { id: String },
    /// Stop handing out jobs of a queue (running jobs finish).
    Pause { queue: String },
    /// Resume a paused queue.
    Resume { queue: String },
    /// Delete the waiting and scheduled jobs of a queue.
    Clear { queue: String },
    /// Job counts per queue and state.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Validate a handler component against the contract and list its imports and exports.
    Check {
        /// The `.wasm` file to check.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Load the configured handlers directory and list each handler.
    Handlers {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the parsed command line on an async runtime with the configured number of threads.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Check { file, json } = &cli.command {
        return check(file, *json);
    }
    let config = Arc::new(load_config(&cli.config)?);
    let runtime =
        async_runtime(config.host.threads).context("failed to start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Check { .. } => unreachable!("handled above"),
            Command::Handlers { json } => handlers(&config, json).await,
            Command::Run => host::run(config).await,
            command => jobs::run(command, &config).await,
        }
    })
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

#[derive(Debug, Serialize)]
struct CheckReport {
    file: String,
    valid: bool,
    error: Option<String>,
    digest: Option<String>,
    size: Option<u64>,
    imports: Vec<String>,
    exports: Vec<String>,
}

fn check(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeSettings {
        max_instances: 1,
        ..RuntimeSettings::default()
    })?;
    let report = check_report(&runtime, file);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_check(&report);
    }
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

fn check_report(runtime: &Runtime, file: &Path) -> CheckReport {
    let mut report = CheckReport {
        file: file.display().to_string(),
        valid: false,
        error: None,
        digest: None,
        size: None,
        imports: Vec::new(),
        exports: Vec::new(),
    };
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) => {
            report.error = Some(format!("failed to read `{}`: {error}", file.display()));
            return report;
        }
    };
    report.digest = Some(crate::registry::digest(&bytes));
    report.size = Some(bytes.len() as u64);
    let name = file.display().to_string();
    let component = match runtime.compile(&bytes, &name) {
        Ok(component) => component,
        Err(error) => {
            report.error = Some(describe(&error));
            return report;
        }
    };
    let engine = runtime.engine();
    let ty = component.component_type();
    report.imports = ty
        .imports(engine)
        .map(|(n, item)| item_line(n, &item.ty))
        .collect();
    report.exports = ty
        .exports(engine)
        .map(|(n, item)| item_line(n, &item.ty))
        .collect();
    match runtime.pre_instantiate(&component, &name) {
        Ok(_) => report.valid = true,
        Err(error) => report.error = Some(describe(&error)),
    }
    report
}

fn item_line(name: &str, item: &ComponentItem) -> String {
    let kind = match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "interface",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    };
    format!("{name} ({kind})")
}

fn print_check(report: &CheckReport) {
    match &report.error {
        None => println!("valid: {}", report.file),
        Some(error) => println!("invalid: {error}"),
    }
    if let (Some(digest), Some(size)) = (&report.digest, report.size) {
        println!("  digest  sha256:{digest}\n  size    {size} bytes");
    }
    for (title, items) in [("imports", &report.imports), ("exports", &report.exports)] {
        if !items.is_empty() {
            println!("{title}:");
            for item in items {
                println!("  {item}");
            }
        }
    }
}

#[derive(Debug, Serialize)]
struct HandlerRow {
    name: String,
    digest: Option<String>,
    size: Option<u64>,
    load_ms: Option<f64>,
    source: Option<LoadSource>,
    error: Option<String>,
}

async fn handlers(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let dir = config.host.handlers_dir.clone();
    let runtime = Arc::new(Runtime::new(RuntimeSettings {
        max_instances: 1,
        max_memory: config.max_job_memory(),
        pooling: true,
    })?);
    let registry = Registry::new(runtime, dir.clone(), Some(config.host.cache_dir.clone()));
    registry
        .load_all()
        .await
        .with_context(|| format!("failed to read handlers directory `{}`", dir.display()))?;
    let mut rows: Vec<HandlerRow> = registry
        .handlers()
        .iter()
        .map(|h| HandlerRow {
            name: h.name.clone(),
            digest: Some(h.digest.clone()),
            size: Some(h.size),
            load_ms: Some(h.took.as_secs_f64() * 1000.0),
            source: Some(h.source),
            error: None,
        })
        .collect();
    rows.extend(
        registry
            .errors()
            .into_iter()
            .map(|(name, error)| HandlerRow {
                name,
                digest: None,
                size: None,
                load_ms: None,
                source: None,
                error: Some(error),
            }),
    );
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_handlers(&dir, &rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_handlers(dir: &Path, rows: &[HandlerRow]) {
    println!("handlers in {}", dir.display());
    println!(
        "{:<16} {:<14} {:>10} {:>10}  FROM",
        "NAME", "DIGEST", "SIZE", "LOAD ms"
    );
    for row in rows {
        match &row.error {
            Some(error) => println!("{:<16} error: {error}", row.name),
            None => println!(
                "{:<16} {:<14} {:>10} {:>10.2}  {}",
                row.name,
                row.digest.as_deref().map_or("", |d| &d[..12]),
                row.size.unwrap_or(0),
                row.load_ms.unwrap_or(0.0),
                match row.source {
                    Some(LoadSource::Cache) => "cache",
                    _ => "compiled",
                }
            ),
        }
    }
}

/// The exit code for an error that ended a command: usage and config errors are 2.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let usage = error.chain().any(|cause| {
        cause.downcast_ref::<UsageError>().is_some()
            || cause.downcast_ref::<crate::config::ConfigError>().is_some()
    });
    if usage { EXIT_USAGE } else { EXIT_FAILED }
}

/// A mistake in how Kiln was invoked or configured (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Opens the job store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<AnyStore> {
    if let StoreConfig::Embedded { path, .. } = &config.store
        && let Some(parent) = path.parent()
    {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "failed to create job store directory `{}`",
                parent.display()
            )
        })?;
    }
    config
        .store
        .open()
        .await
        .map_err(|error| match &config.store {
            StoreConfig::Embedded { path, .. } => anyhow::Error::new(error)
                .context(format!("failed to open job store `{}`", path.display())),
            StoreConfig::Redis(_) => {
                anyhow::Error::new(error).context("failed to connect to the Redis job store")
            }
        })
}
