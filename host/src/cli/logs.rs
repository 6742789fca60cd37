//! `kiln logs ID [--attempt N]`: prints one attempt's stored log (its `log` calls and
//! stdout/stderr, `source: text` per line), the last attempt's by default. Only the log goes
//! to stdout, so it can be piped; a note about a cut or empty log goes to stderr.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::open_store;
use crate::config::Config;
use crate::ops::Ops;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job whose attempt log to print.
    pub id: String,
    /// Which recorded attempt (1 is the first); the last one when not given.
    #[arg(long)]
    pub attempt: Option<u32>,
}

/// Prints the log of the attempt `args` names; an unknown job or attempt is an `OpsError`
/// (exit code 2 through `exit_code`).
pub async fn run(args: LogsArgs, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let store = Arc::new(open_store(&config).await?);
    let ops = Ops::new(config, store);
    let record = ops.logs(&args.id, args.attempt).await?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(record.log.as_bytes())
        .and_then(|()| stdout.flush())
        .context("failed to write the log to stdout")?;
    if record.log.is_empty() {
        eprintln!(
            "attempt {} of job {} logged nothing",
            record.attempt, args.id
        );
    }
    if record.log_truncated {
        eprintln!("the log was cut at the job's max_log cap; later lines were dropped");
    }
    Ok(ExitCode::SUCCESS)
}
