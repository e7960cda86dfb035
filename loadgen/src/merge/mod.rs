//! `loadgen merge`: one report from several runs (several hosts started together with the
//! same plan). Histograms are added exactly (HdrHistogram `add`), never percentiles
//! averaged; counts and errors are summed; rates are counted over the window every run
//! was measuring. Inputs are each run's JSON report ([`reports`]) or each run's interval
//! log ([`logs`]), not a mix; [`input`] reads them and [`window`] places them in time.
//!
//! Exit status: that of the merged report (0, 1 nothing measured or a thread gave up,
//! 3 too many failed requests; always 0 for interval logs, which hold no errors), 2 for
//! inputs that cannot be merged, 1 if a file cannot be written.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use clap::Parser;

use crate::hdr;
use crate::output::check_writable;
use crate::report::EXIT_USAGE;

pub mod input;
pub mod logs;
pub mod reports;
pub mod window;

use input::Input;

/// loadgen merge: one report from several runs started together with the same plan (one
/// per host), by adding their histograms exactly.
#[derive(Debug, Parser)]
#[command(
    bin_name = "loadgen merge",
    version,
    after_help = "Example: start `loadgen TARGET … --json hostN.json` on every host at the same time, then\n  loadgen merge --json all.json --hgrm all.hgrm host1.json host2.json host3.json\n\nExit status: the merged report's (0 ok; 1 nothing measured or a thread gave up; 3 failed\nrequests above --max-error-rate); 2 inputs that cannot be merged; 1 a file could not be\nwritten."
)]
pub struct MergeArgs {
    /// Each run's JSON report (--json), or each run's interval log (--hlog); not a mix.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Write the merged report as JSON (the same schema as a run's); `-` for stdout (the
    /// table then goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write the merged percentile distribution (.hgrm, values in microseconds).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,

    /// Write the merged interval log, one histogram per second on one clock (interval-log
    /// inputs only: JSON reports carry no per-second histograms).
    #[arg(long)]
    pub hlog: Option<PathBuf>,
}

/// What a merge produced.
#[derive(Debug)]
enum Merged {
    Reports(Box<crate::report::Report>),
    Logs(Box<logs::LogReport>),
}

/// Runs `loadgen merge`; returns the exit status.
pub fn main(args: MergeArgs) -> u8 {
    let merged = match check(&args).and_then(|()| merge(&args.files, args.hlog.is_some())) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("loadgen merge: error: {e}");
            return EXIT_USAGE;
        }
    };
    let to_stdout = args.json.as_deref() == Some(Path::new("-"));
    let table = match &merged {
        Merged::Reports(r) => r.table(),
        Merged::Logs(l) => l.table(),
    };
    if to_stdout {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    let errors = write_files(&args, &merged, to_stdout);
    let report = match &merged {
        Merged::Reports(r) => Some(&**r),
        Merged::Logs(_) => None,
    };
    crate::report::finish("loadgen merge", &errors, report)
}

/// Output paths are writable before anything is read.
fn check(args: &MergeArgs) -> Result<(), String> {
    for (flag, path) in [
        ("--json", &args.json),
        ("--hgrm", &args.hgrm),
        ("--hlog", &args.hlog),
    ] {
        let Some(path) = path else { continue };
        if flag == "--json" && path == Path::new("-") {
            continue;
        }
        check_writable(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Reads and merges `files`.
fn merge(files: &[PathBuf], want_log: bool) -> Result<Merged, String> {
    let inputs: Vec<Input> = files
        .iter()
        .map(|f| input::read(f))
        .collect::<Result<_, _>>()?;
    distinct(&inputs)?;
    let logs = inputs.iter().filter(|i| i.is_log()).count();
    if logs != 0 && logs != inputs.len() {
        let (a, b) = (
            inputs.iter().find(|i| i.is_log()),
            inputs.iter().find(|i| !i.is_log()),
        );
        let (a, b) = (a.map_or("", |i| &i.file), b.map_or("", |i| &i.file));
        return Err(format!(
            "{a} is an interval log and {b} a JSON report: give every run's JSON (it carries everything) or every run's .hlog"
        ));
    }
    if want_log && logs == 0 {
        return Err(
            "--hlog needs the runs' interval logs: JSON reports carry no per-second histograms"
                .into(),
        );
    }
    if let Some(empty) = inputs.iter().find(|i| i.span.end <= i.span.start) {
        return Err(format!(
            "{} has no measured window (the run stopped before its warm-up ended): leave it out",
            empty.file
        ));
    }
    let spans: Vec<_> = inputs.iter().map(|i| i.span.clone()).collect();
    let Some(w) = window::common(&spans) else {
        let t0 = spans.iter().map(|s| s.start).fold(f64::MAX, f64::min);
        let list: Vec<String> = inputs
            .iter()
            .map(|i| {
                format!(
                    "{} {}..{}",
                    i.file,
                    window::after(i.span.start, t0),
                    window::after(i.span.end, t0)
                )
            })
            .collect();
        return Err(format!(
            "the runs never all measured at the same time ({}, from the earliest start): start them together",
            list.join(", ")
        ));
    };
    if logs == 0 {
        Ok(Merged::Reports(Box::new(reports::merge(&inputs, w)?)))
    } else {
        Ok(Merged::Logs(Box::new(logs::merge(&inputs, w)?)))
    }
}

/// The same run given twice (under one name or two) would count twice.
fn distinct(inputs: &[Input]) -> Result<(), String> {
    for (i, a) in inputs.iter().enumerate() {
        for b in &inputs[..i] {
            let same_file = match (
                std::fs::canonicalize(&a.file),
                std::fs::canonicalize(&b.file),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            };
            let same_run = a.span.start == b.span.start && a.latency == b.latency;
            if same_file || same_run {
                return Err(format!(
                    "{} and {} are the same run: give each run once",
                    b.file, a.file
                ));
            }
        }
    }
    Ok(())
}

/// Writes every file asked for, each even if another failed; returns what failed.
fn write_files(args: &MergeArgs, merged: &Merged, json_to_stdout: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let mut check = |path: &Path, r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(format!("cannot write {}: {e}", path.display()));
        }
    };
    if let Some(path) = &args.json {
        let text = match merged {
            Merged::Reports(r) => serde_json::to_string_pretty(r),
            Merged::Logs(l) => serde_json::to_string_pretty(l),
        }
        .map_err(|e| e.to_string());
        let r = text.and_then(|t| {
            if json_to_stdout {
                println!("{t}");
                Ok(())
            } else {
                std::fs::write(path, t + "\n").map_err(|e| e.to_string())
            }
        });
        check(path, r);
    }
    if let Some(path) = &args.hgrm {
        let text = match merged {
            Merged::Reports(r) => r
                .histograms
                .as_ref()
                .ok_or_else(|| "the merged histogram could not be encoded".to_string())
                .and_then(|h| hdr::decode(&h.latency_ns))
                .map(|h| hdr::hgrm(&h, hdr::HGRM_UNIT_NS)),
            Merged::Logs(l) => Ok(hdr::hgrm(&l.latency, hdr::HGRM_UNIT_NS)),
        };
        check(
            path,
            text.and_then(|t| std::fs::write(path, t).map_err(|e| e.to_string())),
        );
    }
    if let (Some(path), Merged::Logs(l)) = (&args.hlog, merged) {
        let time = |s: f64| UNIX_EPOCH + Duration::from_secs_f64(s.max(0.0));
        let m = &l.merged;
        let r = hdr::write_hlog(
            path,
            time(m.timeseries_start_unix_s),
            time(m.window_start_unix_s),
            Duration::from_secs_f64(m.window_s),
            Duration::from_secs(1),
            &l.intervals,
        );
        check(path, r.map_err(|e| e.to_string()));
    }
    errors
}
