//! The files a run writes (`--json`, `--hgrm`, `--hlog`, `--plot`): every path checked to be
//! writable before the run starts, then each written from the report and the run's
//! histograms, one failure never stopping the others.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::report::Report;
use crate::run::RunResult;
use crate::{hdr, plot};

/// The files asked for on the command line; `None` is not written.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// The report as JSON; `-` is stdout (the table then goes to stderr).
    pub json: Option<PathBuf>,
    /// Corrected latency percentiles as HdrHistogram's `.hgrm` text, in microseconds.
    pub hgrm: Option<PathBuf>,
    /// One histogram per second of the measured window, as an HdrHistogram interval log.
    pub hlog: Option<PathBuf>,
    /// The percentile curve and latency over time, as SVG.
    pub plot: Option<PathBuf>,
}

impl Outputs {
    /// `--json -`: the JSON owns stdout.
    pub fn json_to_stdout(&self) -> bool {
        self.json.as_deref() == Some(Path::new("-"))
    }

    /// Every path must be writable before the run starts, so no run is thrown away for a
    /// typo in a file name.
    pub fn check(&self) -> Result<(), String> {
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
pub fn check_writable(path: &Path) -> Result<(), String> {
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

/// Writes every file asked for, each even if another failed; returns what failed.
pub fn write_files(outputs: &Outputs, result: &RunResult, report: &Report) -> Vec<String> {
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
