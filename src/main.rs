//! The `ringd` binary: parse arguments, set up logging, run the process (server, signals,
//! live upgrades: [`ringd::process`]) and turn the outcome into an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ringd::cli::Args;
use ringd::Error;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    ringd::metrics::process_start_time();
    let args = Args::parse();
    init_logging(&args.log_level);
    match ringd::process::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringd: error: {e:#}");
            match e {
                Error::Usage(_) => usage(),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The exit code of arguments that cannot be used, the same as clap's.
fn usage() -> ExitCode {
    ExitCode::from(2)
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr must not bring the server down (the default reports the failed
        // write on stderr, which panics when stderr itself is gone).
        .log_internal_errors(false)
        .init();
}
