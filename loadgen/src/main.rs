//! The `loadgen` binary: parse the command line, hand it to [`loadgen::app`], exit with
//! the status it returns (0 ok, 1 run failed, 2 bad arguments, 3 too many failed requests).

use std::process::ExitCode;

use clap::Parser;
use loadgen::args::Args;

fn main() -> ExitCode {
    ExitCode::from(loadgen::app::main(Args::parse()))
}
