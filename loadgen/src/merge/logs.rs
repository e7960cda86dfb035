//! Merging interval logs: the histograms of every run added exactly, second by second on
//! one clock and in all, with the requests counted over the window every run was
//! measuring. An interval log holds latency only, so this report has the latency part of
//! the JSON schema and no counters, errors or configuration.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::input::{add, Input};
use super::reports::merge_info;
use super::window;
use crate::report::{Histograms, Latency, MergeInfo, Second, SCHEMA};

/// A merge of interval logs.
#[derive(Debug, Clone, Serialize)]
pub struct LogReport {
    /// Schema identifier (the fields are those of the same name in a run's report).
    pub schema: &'static str,
    /// The version of the loadgen that merged the logs.
    pub version: &'static str,
    /// Start of the common window (seconds since the Unix epoch).
    pub started_unix_s: f64,
    /// Length of the common window.
    pub duration_s: f64,
    /// Latency entries of every run (requests measured, with any left unanswered).
    pub requests: u64,
    /// Entries per second over the common window.
    pub throughput_rps: f64,
    /// Corrected latency of every run together.
    pub latency_ns: Latency,
    /// Every run's seconds on one clock, from the earliest run's start.
    pub timeseries: Vec<Second>,
    /// The merged latency histogram.
    pub histograms: Option<Histograms>,
    /// The runs and the window.
    pub merged: MergeInfo,
    /// The merged histogram per second of `timeseries` (written to `--hlog`).
    #[serde(skip)]
    pub intervals: Vec<Histogram<u64>>,
    /// The merged histogram.
    #[serde(skip)]
    pub latency: Histogram<u64>,
}

/// Merges the interval logs of `inputs` over the common window `(w0, w1)`.
pub fn merge(inputs: &[Input], (w0, w1): (f64, f64)) -> Result<LogReport, String> {
    let t0 = inputs.iter().map(|i| i.span.start).fold(f64::MAX, f64::min);
    let mut latency = inputs[0].latency.clone();
    latency.reset();
    let mut intervals: Vec<Histogram<u64>> = Vec::new();
    for input in inputs {
        add(&mut latency, &input.latency).map_err(|e| format!("{}: {e}", input.file))?;
        for iv in &input.intervals {
            let j = window::second_of(iv.start, t0);
            while intervals.len() <= j {
                let mut empty = latency.clone();
                empty.reset();
                intervals.push(empty);
            }
            add(&mut intervals[j], &iv.hist).map_err(|e| format!("{}: {e}", input.file))?;
        }
    }
    let completed: f64 = inputs
        .iter()
        .map(|i| window::completed_within(&i.span, w0, w1))
        .sum();
    let quantile = |h: &Histogram<u64>, q| {
        (!h.is_empty()).then(|| h.highest_equivalent(h.value_at_quantile(q)))
    };
    let timeseries = intervals
        .iter()
        .enumerate()
        .map(|(j, h)| Second {
            second: j as u64,
            completed: h.len(),
            errors: 0,
            p50_ns: Some(quantile(h, 0.5).unwrap_or(0)),
            p99_ns: Some(quantile(h, 0.99).unwrap_or(0)),
        })
        .collect();
    Ok(LogReport {
        schema: SCHEMA,
        version: env!("CARGO_PKG_VERSION"),
        started_unix_s: w0,
        duration_s: w1 - w0,
        requests: latency.len(),
        throughput_rps: completed / (w1 - w0),
        latency_ns: Latency::of(&latency),
        timeseries,
        histograms: Histograms::encode(&latency, None, None, None),
        merged: merge_info(inputs, (w0, w1), t0),
        intervals,
        latency,
    })
}

impl LogReport {
    /// The table: a run's table, down to what interval logs hold.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.merged;
        let files: Vec<&str> = m.runs.iter().map(|r| r.file.as_str()).collect();
        let _ = writeln!(
            s,
            "loadgen {} | merge of {} interval log(s): {}",
            self.version,
            m.runs.len(),
            files.join(", ")
        );
        let _ = writeln!(s, "{}", m.describe());
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  Requests    {} ({:.1} req/s)   latency entries of every run",
            self.requests, self.throughput_rps
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "{}", Latency::header());
        let _ = writeln!(s, "{}", self.latency_ns.row("request"));
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  Note        interval logs hold latency only: merge the runs' JSON reports for errors, statuses, bytes and CPU"
        );
        s
    }
}
