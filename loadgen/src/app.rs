//! The `loadgen` command from arguments to exit status: check the input (exit 2), run
//! (exit 1 if it cannot start), print the table, write every file asked for, and exit with
//! the report's verdict (0 ok, 1 nothing measured or a thread gave up, 3 too many failed
//! requests) — or 1 if a file could not be written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::args::Args;
use crate::output::{write_files, Outputs};
use crate::report::{Report, EXIT_FAILED, EXIT_USAGE};
use crate::run::{self, RunOptions};

/// Runs the command; returns the exit status.
pub fn main(args: Args) -> u8 {
    let outputs = Outputs {
        json: args.json.clone(),
        hgrm: args.hgrm.clone(),
        hlog: args.hlog.clone(),
        plot: args.plot.clone(),
    };
    let quiet = args.quiet;
    let server_pid = args.server_pid;
    let checked = args
        .into_plan()
        .and_then(|plan| outputs.check().map(|()| plan))
        .and_then(|plan| run::ensure_fd_limit(plan.connections).map(|()| plan));
    let plan = match checked {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            return EXIT_USAGE;
        }
    };
    let opts = RunOptions {
        server_pid,
        progress: !quiet && run::stderr_is_terminal(),
        interrupts: Some(count_signals()),
    };
    let result = match run::run(plan, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let report = Report::new(&result);
    if outputs.json_to_stdout() {
        eprint!("{}", report.table());
    } else {
        print!("{}", report.table());
    }
    let write_errors = write_files(&outputs, &result, &report);
    crate::report::finish("loadgen", &write_errors, Some(&report))
}

/// Counts SIGINT and SIGTERM from now on instead of dying of them: the first stops the
/// run, which then reports; the second stops waiting for responses in flight.
fn count_signals() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        let _ = std::thread::Builder::new()
            .name("loadgen-signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            });
    }
    count
}
