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
    let host = matches!(cli.command, cli::Command::Run);
    if !host {
        restore_sigpipe();
    }
    if let Ok(exe) = std::env::current_exe() {
        kiln::registry::set_executable(exe);
    }
    kiln::logging::init(host);
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            kiln::logging::flush();
            eprintln!("kiln: {error:#}");
            ExitCode::from(cli::exit_code(&error))
        }
    };
    kiln::logging::flush();
    code
}

/// A command whose reader went away (`kiln jobs | head`) ends quietly, as other Unix tools
/// do, instead of panicking in `println!`. Not for `kiln run`: a host keeps running its jobs
/// when whatever read its log is gone.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called on the main thread before any other thread exists; `SIG_DFL` is a valid
    // disposition for SIGPIPE, and nothing in Kiln installs a SIGPIPE handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
