//! `ringd-report`: draws the SVG plots of an engine comparison from the `summary.json` that
//! `scripts/compare` writes, next to it: throughput per engine per scenario (bars with
//! min..max), the engines' latency percentile curves overlaid per scenario, server CPU per
//! request, and the subject engine's ratios against every other row with their 95%
//! intervals (`ratios.svg`). Prints the files it wrote, one a line.

use std::path::Path;
use std::process::ExitCode;

mod bars;
mod draw;
mod ratios;
mod summary;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [summary] = args.as_slice() else {
        eprintln!("usage: ringd-report RESULTS_DIR/summary.json");
        return ExitCode::from(2);
    };
    match draw::draw(Path::new(summary)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringd-report: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
