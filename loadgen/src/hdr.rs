//! Standard latency files: the `.hgrm` percentile distribution as HdrHistogram and wrk2 print
//! it (readable by hdr-plot), and the `.hlog` interval log (V2 compressed histograms, base64,
//! one per second) that HdrHistogram's log readers take.

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// Nanoseconds per microsecond: `.hgrm` values are in microseconds.
pub const HGRM_UNIT_NS: f64 = 1000.0;

/// Renders the percentile distribution of `h` (values divided by `unit`).
pub fn hgrm(h: &Histogram<u64>, unit: f64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / unit;
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / unit,
        h.stdev() / unit
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / unit,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    );
    s
}

/// One row of a `.hgrm` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HgrmRow {
    /// Latency (in the file's unit).
    pub value: f64,
    /// Quantile, 0 to 1.
    pub quantile: f64,
    /// Cumulative count.
    pub total: u64,
}

/// Parses the rows and total count of a `.hgrm` text (for checks and scripts).
pub fn parse_hgrm(text: &str) -> Result<(Vec<HgrmRow>, u64), String> {
    let mut rows = Vec::new();
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("#[Max") {
            let count = rest
                .split("Total count")
                .nth(1)
                .and_then(|t| {
                    t.trim_start_matches([' ', '='])
                        .trim_end_matches(']')
                        .trim()
                        .parse()
                        .ok()
                })
                .ok_or_else(|| format!("bad footer: {line}"))?;
            total = Some(count);
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with("Value") {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            return Err(format!("bad row: {line}"));
        }
        let parse = |s: &str| s.parse::<f64>().map_err(|_| format!("bad row: {line}"));
        rows.push(HgrmRow {
            value: parse(f[0])?,
            quantile: parse(f[1])?,
            total: f[2].parse().map_err(|_| format!("bad row: {line}"))?,
        });
    }
    Ok((rows, total.ok_or("no '#[Max' footer")?))
}

/// Writes an interval log: one histogram per entry of `intervals`, each `INTERVAL` long,
/// starting at `start` (wall clock of the end of the warm-up).
pub fn write_hlog(
    path: &Path,
    start: SystemTime,
    interval: Duration,
    intervals: &[Histogram<u64>],
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("loadgen interval log: latency in nanoseconds, one histogram per second")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut buf, &mut serializer)?;
        for (i, h) in intervals.iter().enumerate() {
            w.write_histogram(h, interval * i as u32, interval, None)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
    std::fs::write(path, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::histogram;

    #[test]
    fn hgrm_rows_match_the_histogram() {
        let mut h = histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let text = hgrm(&h, HGRM_UNIT_NS);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
        let (rows, total) = parse_hgrm(&text).unwrap();
        assert_eq!(total, 10_000);
        assert_eq!(rows.last().unwrap().total, 10_000);
        assert_eq!(rows.last().unwrap().quantile, 1.0);
        let median = rows.iter().find(|r| r.quantile >= 0.5).unwrap();
        assert!((median.value - 5000.0).abs() < 10.0, "{median:?}");
    }
}
