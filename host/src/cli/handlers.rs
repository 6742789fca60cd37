//! `kiln check FILE` and `kiln handlers`: what a component file is, and what the configured
//! handlers directory serves. Both print what `ops::handlers` found, and both exit 1 when a
//! file could not be served. `handlers` reports refusals in its table, not as log lines.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::EXIT_FAILED;
use crate::config::Config;
use crate::engine::{Runtime, RuntimeSettings};
use crate::events::Events;
use crate::ops::handlers::{CheckReport, HandlerView, check as check_file, handlers as views};
use crate::registry::{LoadSource, Registry, compile_budget};

/// `kiln check`: exit 0 when `file` is a handler a host with memory cap `max_memory` can
/// serve, 1 when not.
pub fn check(file: &Path, json: bool, max_memory: u64) -> anyhow::Result<ExitCode> {
    let mut runtime = Runtime::new(RuntimeSettings {
        max_instances: 1,
        max_memory,
        ..RuntimeSettings::default()
    })?;
    if let Some(budget) = compile_budget(None) {
        runtime = runtime.with_compile_budget(budget);
    }
    let report = check_file(&runtime, file);
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

fn print_check(report: &CheckReport) {
    match &report.error {
        None => println!("valid: {}", report.file),
        Some(error) => println!("invalid: {error}"),
    }
    if let (Some(digest), Some(size)) = (&report.digest, report.size) {
        println!("  digest  {digest}\n  size    {size} bytes");
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

/// `kiln handlers`: loads the configured directory as a host would and lists each handler;
/// exit 1 when any file was refused.
pub async fn handlers(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let dir = config.host.handlers_dir.clone();
    let mut runtime = Runtime::new(RuntimeSettings {
        max_instances: 1,
        max_memory: config.max_job_memory(),
        pooling: true,
    })?;
    if let Some(budget) = compile_budget(Some(&config.host)) {
        runtime = runtime.with_compile_budget(budget);
    }
    let runtime = Arc::new(runtime);
    let registry = Registry::new(runtime, dir.clone(), Some(config.host.cache_dir.clone()))
        .with_events(Events::new(Vec::new()));
    registry
        .load_all()
        .await
        .with_context(|| format!("failed to read handlers directory `{}`", dir.display()))?;
    let rows = views(&registry);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_handlers(&dir, &rows);
    }
    Ok(if rows.iter().any(|row| row.error.is_some()) {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_handlers(dir: &Path, rows: &[HandlerView]) {
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
