//! The `ringd` binary: parse arguments, set up logging, run the process (server, signals,
//! live upgrades: [`ringd::process`]) and turn the outcome into an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ringd::config::cli::{Args, Subcommand};
use ringd::Error;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    ringd::metrics::process_start_time();
    let cli = Args::parse();
    if let Some(Subcommand::CheckConfig { file }) = &cli.command {
        return check_config(file);
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (args, file) = match ringd::config::file::resolve(&argv) {
        Ok(got) => got,
        Err(problems) => {
            for p in problems {
                eprintln!("ringd: error: {p}");
            }
            return usage();
        }
    };
    let rust_log = std::env::var_os("RUST_LOG");
    match ringd::config::cli::log_filter(&args.log_level, rust_log.as_deref()) {
        Ok(filter) => init_logging(filter),
        Err(e) => {
            eprintln!("ringd: error: {e}");
            return usage();
        }
    }
    match ringd::process::run(&args, file) {
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

/// `ringd check-config FILE`: `FILE: OK` and 0, or one line per problem and 2.
fn check_config(file: &std::path::Path) -> ExitCode {
    match ringd::config::file::check(file, ringd::engine::auto::pick) {
        Ok(()) => {
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{}: {p}", file.display());
            }
            usage()
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
