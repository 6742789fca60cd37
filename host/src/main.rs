//! The `kiln` binary: parses the command line, runs it, and maps errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
use kiln::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(cli::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    kiln::logging::init();
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kiln: {error:#}");
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
