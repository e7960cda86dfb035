//! The `ringd` binary: parse arguments, set up logging, run the process (server, signals,
//! live upgrades: [`ringd::process`]) and turn the outcome into an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ringd::config::cli::Args;
use ringd::Error;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    ringd::metrics::process_start_time();
    let args = Args::parse();
    let rust_log = std::env::var_os("RUST_LOG");
    match ringd::config::cli::log_filter(&args.log_level, rust_log.as_deref()) {
        Ok(filter) => init_logging(filter),
        Err(e) => {
            eprintln!("ringd: error: {e}");
            return usage();
        }
    }
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

fn init_logging(filter: EnvFilter) {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr must not bring the server down (the default reports the failed
        // write on stderr, which panics when stderr itself is gone).
        .log_internal_errors(false)
        .init();
}
