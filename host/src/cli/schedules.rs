//! `kiln schedules [--json]`: every configured schedule, its next fire times in its zone and
//! in UTC, and its latest tick with that job's state; `kiln schedules trigger NAME`: a tick
//! now, its job id printed like `enqueue` prints one. An unknown name exits 2.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;

use super::open_store;
use crate::config::Config;
use crate::ops::Ops;
use crate::ops::schedules::ScheduleView;

#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub action: Option<ScheduleAction>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Enqueue a tick of a schedule now, whatever its cron says, and print the job's id.
    Trigger {
        /// The schedule's `name` in `[[schedules]]`.
        name: String,
        /// Print JSON instead of the id.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: SchedulesArgs, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let store = Arc::new(open_store(&config).await?);
    let ops = Ops::new(config, store);
    match args.action {
        Some(ScheduleAction::Trigger { name, json }) => {
            let enqueued = ops.trigger(&name).await?;
            if json {
                println!("{}", json!({ "schedule": name, "id": enqueued.id }));
            } else {
                println!("{}", enqueued.id);
            }
        }
        None => {
            let views = ops.schedules().await?;
            if args.json {
                println!("{}", serde_json::to_string(&views)?);
            } else if views.is_empty() {
                eprintln!("no schedules are configured");
            } else {
                print!("{}", text(&views));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text listing: a heading line per schedule, its next fire times, its latest tick.
fn text(views: &[ScheduleView]) -> String {
    let mut out = String::new();
    for view in views {
        let _ = writeln!(
            out,
            "{}  handler {}  queue {}  cron \"{}\"  zone {}  misfire {}",
            view.name, view.handler, view.queue, view.cron, view.timezone, view.misfire
        );
        for next in &view.next {
            let _ = writeln!(out, "  next  {}  ({})", next.local, next.utc);
        }
        match &view.last_tick {
            Some(last) => {
                let state = last.state.map_or("pruned".to_owned(), |s| s.to_string());
                let outcome = last.outcome.map(|o| format!(" ({o})")).unwrap_or_default();
                let error = last
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  last  {}  job {}  {state}{outcome}{error}",
                    last.at, last.job
                );
            }
            None => {
                let _ = writeln!(out, "  last  never");
            }
        }
    }
    out
}
