//! One run to merge, read from its JSON report (which carries its whole histograms) or its
//! `.hlog` interval log: its histograms, its measured window in wall-clock time and what
//! it counted over time. Anything that is not one of those is one line naming the file.

use std::path::Path;

use hdrhistogram::Histogram;

use super::window::{Bucket, Span};
use crate::hdr::{self, LogInterval};
use crate::report::{Report, HISTOGRAM_ENCODING, SCHEMA};

/// One run to merge.
#[derive(Debug)]
pub struct Input {
    /// The file, as given.
    pub file: String,
    /// Its measured window and counts over time.
    pub span: Span,
    /// Corrected latency (ns).
    pub latency: Histogram<u64>,
    /// Service time (JSON only).
    pub uncorrected: Option<Histogram<u64>>,
    /// Connect latency (crr JSON only).
    pub connect: Option<Histogram<u64>>,
    /// TLS handshake latency (TLS JSON only).
    pub handshake: Option<Histogram<u64>>,
    /// The run's report (JSON inputs).
    pub report: Option<Box<Report>>,
    /// Its interval histograms (interval-log inputs).
    pub intervals: Vec<LogInterval>,
}

impl Input {
    /// True for an interval log.
    pub fn is_log(&self) -> bool {
        self.report.is_none()
    }
}

/// Reads one file: JSON if it starts with `{`, else an interval log.
pub fn read(path: &Path) -> Result<Input, String> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| format!("{file}: {e}"))?;
    let json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    let r = if json {
        from_json(&file, &bytes)
    } else {
        from_log(&file, &bytes)
    };
    r.map_err(|e| format!("{file}: {e}"))
}

fn from_json(file: &str, bytes: &[u8]) -> Result<Input, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    let schema = value.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    if schema != SCHEMA {
        return Err(format!(
            "not a loadgen report (schema {schema:?}, expected {SCHEMA:?})"
        ));
    }
    let report: Report =
        serde_json::from_value(value).map_err(|e| format!("not a whole {SCHEMA} report ({e})"))?;
    let (Some(start), Some(h)) = (report.started_unix_s, &report.histograms) else {
        return Err(
            "this report carries no histograms (an older loadgen wrote it): merge its .hlog instead"
                .into(),
        );
    };
    if h.encoding != HISTOGRAM_ENCODING {
        return Err(format!(
            "histograms encoded as {:?}, expected {HISTOGRAM_ENCODING:?}",
            h.encoding
        ));
    }
    let latency = hdr::decode(&h.latency_ns)?;
    let uncorrected = h.latency_uncorrected_ns.as_deref().map(hdr::decode);
    let connect = h.connect_latency_ns.as_deref().map(hdr::decode);
    let handshake = h.handshake_latency_ns.as_deref().map(hdr::decode);
    if !report.duration_s.is_finite() || report.duration_s < 0.0 || !start.is_finite() {
        return Err(format!(
            "bad measured window (start {start}, {} s)",
            report.duration_s
        ));
    }
    // A merged report's seconds count from its earliest run's start.
    let t0 = report
        .merged
        .as_ref()
        .map_or(start, |m| m.timeseries_start_unix_s);
    let buckets = report
        .timeseries
        .iter()
        .map(|s| Bucket {
            start: t0 + s.second as f64,
            len: 1.0,
            completed: s.completed,
            errors: s.errors,
        })
        .collect();
    Ok(Input {
        file: file.to_string(),
        span: Span {
            start,
            end: start + report.duration_s,
            buckets,
        },
        latency,
        uncorrected: uncorrected.transpose()?,
        connect: connect.transpose()?,
        handshake: handshake.transpose()?,
        report: Some(Box::new(report)),
        intervals: Vec::new(),
    })
}

fn from_log(file: &str, bytes: &[u8]) -> Result<Input, String> {
    let log = hdr::read_hlog(bytes)?;
    let (Some(first), Some(last)) = (log.intervals.first(), log.intervals.last()) else {
        return Err("an interval log with no intervals".into());
    };
    // A loadgen log states its window; for another tool's, the intervals are the window.
    let (start, end) = match log.measured {
        Some(m) => {
            let start = log.start_time.unwrap_or(first.start);
            (start, start + m)
        }
        None => (first.start, last.start + last.len),
    };
    let mut latency = first.hist.clone();
    latency.reset();
    latency.auto(true);
    for iv in &log.intervals {
        add(&mut latency, &iv.hist)?;
    }
    let buckets = log
        .intervals
        .iter()
        .map(|iv| Bucket {
            start: iv.start,
            len: iv.len,
            completed: iv.hist.len(),
            errors: 0,
        })
        .collect();
    Ok(Input {
        file: file.to_string(),
        span: Span {
            start,
            end,
            buckets,
        },
        latency,
        uncorrected: None,
        connect: None,
        handshake: None,
        report: None,
        intervals: log.intervals,
    })
}

/// Adds `b` into `a` exactly: both must record with the same precision.
pub fn add(a: &mut Histogram<u64>, b: &Histogram<u64>) -> Result<(), String> {
    if a.sigfig() != b.sigfig() {
        return Err(format!(
            "histograms of {} and {} significant digits cannot be merged exactly",
            a.sigfig(),
            b.sigfig()
        ));
    }
    a.add(b)
        .map_err(|e| format!("histograms cannot be merged ({e:?})"))
}
