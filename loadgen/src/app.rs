//! The `loadgen` command from arguments to exit status: check the input (exit 2), run
//! (exit 1 if it cannot start), print the table, write every file asked for, and exit with
//! the report's verdict (0 ok, 1 nothing measured or a thread gave up, 3 too many failed
//! requests) — or 1 if a file could not be written.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::args::Args;
use crate::report::{Report, EXIT_FAILED, EXIT_USAGE};
use crate::run::{self, RunOptions, RunResult};
use crate::{hdr, plot};

/// The files a run writes.
#[derive(Debug, Clone, Default)]
struct Outputs {
    json: Option<PathBuf>,
    hgrm: Option<PathBuf>,
    hlog: Option<PathBuf>,
    plot: Option<PathBuf>,
}

impl Outputs {
    fn json_to_stdout(&self) -> bool {
        self.json.as_deref() == Some(Path::new("-"))
    }

    /// Every path must be writable before the run starts, so no run is thrown away for a
    /// typo in a file name.
    fn check(&self) -> Result<(), String> {
        for (flag, path) in [
            ("--json", &self.json),
            ("--hgrm", &self.hgrm),
            ("--hlog", &self.hlog),
            ("--plot", &self.plot),
        ] {
            let Some(path) = path else { continue };
            if flag == "--json" && self.json_to_stdout() {
                continue;
            }
            check_writable(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// A file can be written at `path`: it is a writable file, or a new one in a writable
/// directory. Nothing is created.
pub(crate) fn check_writable(path: &Path) -> Result<(), String> {
    let writable = |p: &Path, mode| {
        CString::new(p.as_os_str().as_bytes())
            // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
            .map(|c| unsafe { libc::access(c.as_ptr(), mode) } == 0)
            .unwrap_or(false)
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err("is a directory".into()),
        Ok(_) if !writable(path, libc::W_OK) => Err("not writable".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        Err(_) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() && writable(dir, libc::W_OK | libc::X_OK) => Ok(()),
                Ok(m) if m.is_dir() => Err(format!("directory {} is not writable", dir.display())),
                _ => Err(format!("directory {} does not exist", dir.display())),
            }
        }
    }
}

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

/// Writes every file asked for, each even if another failed; returns what failed.
fn write_files(outputs: &Outputs, result: &RunResult, report: &Report) -> Vec<String> {
    let mut errors = Vec::new();
    let mut check = |path: &Path, r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(format!("cannot write {}: {e}", path.display()));
        }
    };
    if let Some(path) = &outputs.json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string());
        let r = text.and_then(|t| {
            if outputs.json_to_stdout() {
                println!("{t}");
                Ok(())
            } else {
                std::fs::write(path, t + "\n").map_err(|e| e.to_string())
            }
        });
        check(path, r);
    }
    if let Some(path) = &outputs.hgrm {
        let text = hdr::hgrm(&result.stats.latency, hdr::HGRM_UNIT_NS);
        check(path, std::fs::write(path, text).map_err(|e| e.to_string()));
    }
    if let Some(path) = &outputs.hlog {
        let r = hdr::write_hlog(
            path,
            result.started,
            result.started,
            result.measured,
            Duration::from_secs(1),
            &result.intervals,
        );
        check(path, r.map_err(|e| e.to_string()));
    }
    if let Some(path) = &outputs.plot {
        let title = format!(
            "{} {} c={}",
            result.plan.protocol,
            result.plan.mode.name(),
            result.plan.connections
        );
        let mut curves = vec![("latency", &result.stats.latency)];
        if result.plan.rate.is_some() {
            curves = vec![
                ("corrected", &result.stats.latency),
                ("uncorrected", &result.stats.service),
            ];
        }
        check(
            path,
            plot::write_svg(path, &title, &curves, &result.intervals),
        );
    }
    errors
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_are_checked_without_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("r.json");
        assert_eq!(check_writable(&new), Ok(()));
        assert!(!new.exists());
        std::fs::write(&new, "").unwrap();
        assert_eq!(check_writable(&new), Ok(()));
        assert!(check_writable(dir.path())
            .unwrap_err()
            .contains("directory"));
        let missing = dir.path().join("no/such/dir/r.json");
        assert!(check_writable(&missing)
            .unwrap_err()
            .contains("does not exist"));
        let o = Outputs {
            json: Some("-".into()),
            hgrm: Some(missing),
            ..Default::default()
        };
        assert!(o.json_to_stdout());
        assert!(o.check().unwrap_err().starts_with("--hgrm"));
    }
}
