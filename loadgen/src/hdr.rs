//! Standard latency files: the `.hgrm` percentile distribution as HdrHistogram and wrk2 print
//! it (readable by hdr-plot), and the `.hlog` interval log (V2 compressed histograms, base64,
//! one per second) that HdrHistogram's log readers take — written, and read back for
//! `merge`, with the same encoding the JSON report carries its histograms in.

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry,
};
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
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

/// The comment that gives a loadgen interval log's measured window, which the intervals
/// alone overstate (the last one holds the responses that came after the window closed).
const WINDOW_COMMENT: &str = "loadgen measured window: ";

/// Writes an interval log: one histogram per entry of `intervals`, each `interval` long,
/// the first at `base` (wall clock of the end of the warm-up); the measured window starts
/// at `start` and lasts `measured` (a merge's window can start later than its first
/// interval).
pub fn write_hlog(
    path: &Path,
    base: SystemTime,
    start: SystemTime,
    measured: Duration,
    interval: Duration,
    intervals: &[Histogram<u64>],
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("loadgen interval log: latency in nanoseconds, one histogram per second")
            .add_comment(&format!("{WINDOW_COMMENT}{:.6} s", measured.as_secs_f64()))
            .with_start_time(start)
            .with_base_time(base)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut buf, &mut serializer)?;
        for (i, h) in intervals.iter().enumerate() {
            w.write_histogram(h, interval * i as u32, interval, None)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
    std::fs::write(path, buf)
}

/// One histogram of an interval log, placed in wall-clock time.
#[derive(Debug, Clone)]
pub struct LogInterval {
    /// Start, seconds since the Unix epoch.
    pub start: f64,
    /// Length in seconds.
    pub len: f64,
    /// What it recorded.
    pub hist: Histogram<u64>,
}

/// An interval log read back.
#[derive(Debug, Clone)]
pub struct IntervalLog {
    /// Its StartTime (seconds since the Unix epoch), if it has one.
    pub start_time: Option<f64>,
    /// The measured window a loadgen log states, in seconds.
    pub measured: Option<f64>,
    /// The histograms, in file order.
    pub intervals: Vec<LogInterval>,
}

/// Reads an interval log, placing each interval in wall-clock time as HdrHistogram's own
/// reader does: after BaseTime when there is one; with only a StartTime, after it when the
/// timestamps are too small to be dates (more than a year before it); else as dates.
pub fn read_hlog(bytes: &[u8]) -> Result<IntervalLog, String> {
    const YEAR_S: f64 = 365.0 * 24.0 * 3600.0;
    let measured = String::from_utf8_lossy(bytes).lines().find_map(|l| {
        l.strip_prefix('#')?
            .strip_prefix(WINDOW_COMMENT)?
            .trim_end_matches(" s")
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
    });
    let mut start_time = None;
    let mut base_time = None;
    let mut raw = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|e| {
            let hdrhistogram::serialization::interval_log::LogIteratorError::ParseError { offset } =
                e;
            format!("not an HdrHistogram interval log (cannot parse it at byte {offset})")
        })?;
        match entry {
            LogEntry::StartTime(t) => start_time = Some(t.as_secs_f64()),
            LogEntry::BaseTime(t) => base_time = Some(t.as_secs_f64()),
            LogEntry::Interval(iv) => {
                let hist = decode_with(&mut deserializer, iv.encoded_histogram())?;
                raw.push((
                    iv.start_timestamp().as_secs_f64(),
                    iv.duration().as_secs_f64(),
                    hist,
                ));
            }
        }
    }
    let offset = match (base_time, start_time) {
        (Some(base), _) => base,
        (None, Some(start)) if raw.first().is_some_and(|r| r.0 < start - YEAR_S) => start,
        _ => 0.0,
    };
    let intervals = raw
        .into_iter()
        .map(|(ts, len, hist)| LogInterval {
            start: offset + ts,
            len,
            hist,
        })
        .collect();
    Ok(IntervalLog {
        start_time,
        measured,
        intervals,
    })
}

/// Encodes a histogram in HdrHistogram's V2 format, deflate-compressed, in base64: as
/// `.hlog` lines carry histograms.
pub fn encode(h: &Histogram<u64>) -> Result<String, String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| format!("{e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decodes a histogram [`encode`] wrote (or any V2 histogram, compressed or not).
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    decode_with(&mut Deserializer::new(), text)
}

fn decode_with(d: &mut Deserializer, text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("a histogram is not valid base64 ({e})"))?;
    d.deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("a histogram does not decode ({e:?})"))
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

    #[test]
    fn histograms_and_interval_logs_round_trip() {
        let mut h = histogram();
        for v in [1u64, 999, 12_345, 7_000_000_000] {
            h.record_n(v, v % 7 + 1).unwrap();
        }
        assert_eq!(decode(&encode(&h).unwrap()).unwrap(), h);
        assert!(decode("not base64!").unwrap_err().contains("base64"));
        assert!(decode("AAAA").unwrap_err().contains("decode"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.hlog");
        let base = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let start = base + Duration::from_millis(500);
        let intervals = [h.clone(), histogram(), h.clone()];
        let second = Duration::from_secs(1);
        write_hlog(
            &path,
            base,
            start,
            Duration::from_millis(2500),
            second,
            &intervals,
        )
        .unwrap();
        let log = read_hlog(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(log.measured, Some(2.5));
        assert!((log.start_time.unwrap() - 1_700_000_000.75).abs() < 1e-6);
        assert_eq!(log.intervals.len(), 3);
        for (i, iv) in log.intervals.iter().enumerate() {
            assert!((iv.start - (1_700_000_000.25 + i as f64)).abs() < 1e-6);
            assert_eq!(iv.len, 1.0);
            assert_eq!(iv.hist, intervals[i]);
        }
        assert!(read_hlog(b"garbage\n").is_err());
    }
}
