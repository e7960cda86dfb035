//! The `loadgen` binary: parse the command line, hand it to [`loadgen::app`] (or, for
//! `loadgen merge …`, to [`loadgen::merge`]), exit with the status it returns (0 ok, 1 run
//! failed, 2 bad arguments, 3 too many failed requests).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use loadgen::args::Args;
use loadgen::merge::MergeArgs;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // `merge` cannot be a target (a target is HOST:PORT or a URL), so it names the
    // subcommand without making every run's arguments a subcommand's.
    if argv.get(1).is_some_and(|a| a == "merge") {
        let args = MergeArgs::parse_from(argv.into_iter().skip(1));
        return ExitCode::from(loadgen::merge::main(args));
    }
    ExitCode::from(loadgen::app::main(Args::parse_from(argv)))
}
