//! The results: a [`Report`] with a stable JSON schema (`loadgen/1`, see docs/loadgen.md), the
//! verdict and exit status, and (in `table`) the table people paste, all built from the
//! same numbers.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::args::Mode;
use crate::hdr;
use crate::headroom::ClientBound;
use crate::plan::Plan;
use crate::run::RunResult;
use crate::stats::ErrorKind;

mod table;

/// JSON schema identifier; bump on incompatible changes.
pub const SCHEMA: &str = "loadgen/1";

/// Latency summary in nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Minimum.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// 99.99th percentile.
    pub p99_99: u64,
    /// Maximum.
    pub max: u64,
}

impl Latency {
    /// Summarises a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        let q = |q: f64| h.highest_equivalent(h.value_at_quantile(q));
        Latency {
            count: h.len(),
            min: if h.is_empty() { 0 } else { h.min() },
            mean: h.mean(),
            stdev: h.stdev(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: if h.is_empty() {
                0
            } else {
                h.highest_equivalent(h.max())
            },
        }
    }
}

/// Open-loop schedule: asked versus achieved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateReport {
    /// Requests per second asked for.
    pub target: f64,
    /// Requests per second completed.
    pub achieved: f64,
    /// Requests that fell due over the whole run, warm-up included (sent + unsent).
    pub due: u64,
    /// Achieved within 1% of the target, and nothing due left unsent.
    pub kept: bool,
}

/// CPU time of a process over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cpu {
    /// Process id (the server's), if another process.
    pub pid: Option<u32>,
    /// CPU seconds (user + system).
    pub cpu_s: f64,
    /// CPU microseconds per measured request.
    pub us_per_request: f64,
}

/// What the run left unanswered when it ended. Each of these entered the corrected latency
/// (`latency_ns`) aged from its intended send time to the end of the run: a lower bound,
/// so that a server that stops answering at the end cannot hide behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndOfRun {
    /// Requests sent and not answered.
    pub unfinished: u64,
    /// Age of the oldest of them (ns).
    pub unfinished_oldest_ns: u64,
    /// Open loop: requests that fell due and were never sent.
    pub unsent: u64,
    /// Age of the oldest of them (ns).
    pub unsent_oldest_ns: u64,
}

/// Measured HTTP responses by status class.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusClasses {
    /// 1xx (only 101: other interim responses are skipped).
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirection: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// Anything else.
    pub other: u64,
}

/// One second of the measured window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Second {
    /// Seconds since the end of the warm-up (merged: since the earliest run's).
    pub second: u64,
    /// Measured requests completed in it.
    pub completed: u64,
    /// Error events in it.
    pub errors: u64,
    /// Corrected latency median of what completed in it (ns; 0 if nothing did; null in a
    /// merge of JSON reports, which carry no per-second histograms).
    pub p50_ns: Option<u64>,
    /// Corrected latency 99th percentile (ns; as `p50_ns`).
    pub p99_ns: Option<u64>,
}

/// How [`Histograms`] are encoded: HdrHistogram's V2 format, deflate-compressed, in
/// base64, as each line of a `.hlog` carries one.
pub const HISTOGRAM_ENCODING: &str = "hdrhistogram-v2-deflate-base64";

/// The whole run's histograms (values in ns), so that reports can be merged exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Histograms {
    /// [`HISTOGRAM_ENCODING`].
    pub encoding: String,
    /// Corrected latency (`latency_ns`).
    pub latency_ns: String,
    /// Service time (`latency_uncorrected_ns`; null in a merge of interval logs).
    pub latency_uncorrected_ns: Option<String>,
    /// Connect latency (crr; else null).
    pub connect_latency_ns: Option<String>,
}

impl Histograms {
    /// Encodes a run's histograms; `None` if one cannot be encoded.
    pub fn encode(
        latency: &Histogram<u64>,
        uncorrected: Option<&Histogram<u64>>,
        connect: Option<&Histogram<u64>>,
    ) -> Option<Self> {
        Some(Histograms {
            encoding: HISTOGRAM_ENCODING.into(),
            latency_ns: hdr::encode(latency).ok()?,
            latency_uncorrected_ns: uncorrected.map(hdr::encode).transpose().ok()?,
            connect_latency_ns: connect.map(hdr::encode).transpose().ok()?,
        })
    }
}

/// One run in a merged report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedRun {
    /// The file it was read from.
    pub file: String,
    /// Wall-clock start of its measured window (seconds since the Unix epoch).
    pub started_unix_s: f64,
    /// Length of its measured window.
    pub duration_s: f64,
    /// Its measured requests (from an interval log: its histogram entries).
    pub requests: u64,
}

/// What a merged report combines: the runs, and the window all of them were measuring,
/// over which its rates are counted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergeInfo {
    /// The runs, in the order given.
    pub runs: Vec<MergedRun>,
    /// Start of the common window (seconds since the Unix epoch).
    pub window_start_unix_s: f64,
    /// Length of the common window.
    pub window_s: f64,
    /// Where `timeseries` seconds count from: the earliest run's start (seconds since the
    /// Unix epoch).
    pub timeseries_start_unix_s: f64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Schema identifier.
    pub schema: String,
    /// loadgen's version.
    pub version: String,
    /// The plan that ran.
    pub config: Plan,
    /// Wall-clock start of the measured window, seconds since the Unix epoch (merged: of
    /// the window common to every run).
    #[serde(default)]
    pub started_unix_s: Option<f64>,
    /// Completions of requests meant for the warm-up (not in any figure below).
    pub warmup_requests: u64,
    /// Measured window in seconds.
    pub duration_s: f64,
    /// Measured requests (crr: transactions) completed.
    pub requests: u64,
    /// Requests written, warm-up included.
    pub sent: u64,
    /// Requests lost to errors or failed checks.
    pub failed: u64,
    /// Requests in flight when the run ended.
    pub unfinished: u64,
    /// Open loop: requests due but never sent when the run ended.
    pub unsent: u64,
    /// What the end of the run left unanswered.
    pub end_of_run: EndOfRun,
    /// Failed requests over requests that ended (answered or failed), warm-up included.
    pub error_rate: f64,
    /// Completed requests per second.
    pub throughput_rps: f64,
    /// MiB/s written.
    pub throughput_out_mib_s: f64,
    /// MiB/s read.
    pub throughput_in_mib_s: f64,
    /// Connections opened per second (crr).
    pub connections_per_s: Option<f64>,
    /// Connections opened (crr: transactions started).
    pub connects: u64,
    /// Connections the server closed and loadgen reopened (not errors).
    pub reconnects: u64,
    /// Requests sent again on a new connection after the server closed theirs.
    pub retried: u64,
    /// Measured HTTP responses by status class (http only).
    pub status: Option<StatusClasses>,
    /// Measured HTTP responses by status code (http only).
    pub status_codes: Option<serde_json::Map<String, serde_json::Value>>,
    /// Latency: from intended send time in open loop (coordinated omission corrected),
    /// with what was never answered as lower bounds.
    pub latency_ns: Latency,
    /// Latency from the actual send time (service time) of answered requests.
    pub latency_uncorrected_ns: Latency,
    /// Connect latency (crr).
    pub connect_latency_ns: Option<Latency>,
    /// Error events by kind.
    pub errors: serde_json::Map<String, serde_json::Value>,
    /// Bytes that did not match (echo --verify).
    pub mismatched_bytes: u64,
    /// Open-loop schedule.
    pub rate: Option<RateReport>,
    /// Per second of the measured window.
    pub timeseries: Vec<Second>,
    /// loadgen's own CPU.
    pub loadgen_cpu: Cpu,
    /// Whether loadgen itself was the limit (null in reports from before it was measured).
    #[serde(default)]
    pub client_bound: Option<ClientBound>,
    /// The server's CPU (with --server-pid).
    pub server_cpu: Option<Cpu>,
    /// Threads that gave up, and why.
    pub thread_errors: Vec<String>,
    /// Stopped early by SIGINT or SIGTERM.
    pub interrupted: bool,
    /// The exit status, and why it is not 0.
    pub exit_code: u8,
    /// Why the run counts as failed (null when it did not).
    pub exit_reason: Option<String>,
    /// The whole run's histograms, for `loadgen merge`.
    #[serde(default)]
    pub histograms: Option<Histograms>,
    /// Set by `loadgen merge`: the runs it combines (null for a single run).
    #[serde(default)]
    pub merged: Option<MergeInfo>,
}

/// Exit status: the run could not run, measured nothing, or a thread gave up.
pub const EXIT_FAILED: u8 = 1;

/// The exit status once the report is out and the files are written: each write error and
/// the report's own reason (if any) on stderr, prefixed with `prog`; the report's status
/// when it has a reason, else 0, or [`EXIT_FAILED`] when a file could not be written.
pub fn finish(prog: &str, write_errors: &[String], report: Option<&Report>) -> u8 {
    for e in write_errors {
        eprintln!("{prog}: error: {e}");
    }
    if let Some(r) = report {
        if let Some(why) = &r.exit_reason {
            eprintln!("{prog}: {why}");
            return r.exit_code;
        }
    }
    match write_errors.is_empty() {
        true => 0,
        false => EXIT_FAILED,
    }
}
/// Exit status: bad arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: more failed requests than `--max-error-rate` allows.
pub const EXIT_ERRORS: u8 = 3;
/// Exit status: with `--require-headroom`, loadgen itself was the limit.
pub const EXIT_CLIENT_BOUND: u8 = 4;

impl Report {
    /// Builds the report of a run.
    pub fn new(r: &RunResult) -> Self {
        let c = &r.stats.counters;
        let secs = r.measured.as_secs_f64();
        let requests = c.completed;
        let per_req = |cpu: f64| {
            if requests > 0 {
                cpu * 1e6 / requests as f64
            } else {
                0.0
            }
        };
        let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        let throughput = per_s(requests as f64);
        let mut errors = serde_json::Map::new();
        for k in ErrorKind::ALL {
            errors.insert(k.name().into(), c.errors_of(k).into());
        }
        let http = r.plan.protocol == ringd_common::ProtocolKind::Http;
        let ended = c.warmup_completed + c.completed + c.failed;
        let error_rate = if ended > 0 {
            c.failed as f64 / ended as f64
        } else {
            0.0
        };
        let status_codes = http.then(|| {
            c.status_codes
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(code, &n)| (code.to_string(), n.into()))
                .collect()
        });
        let s = &c.status_classes;
        let timeseries = r
            .intervals
            .iter()
            .zip(&r.per_second)
            .enumerate()
            .map(|(i, (h, &(completed, errors)))| Second {
                second: i as u64,
                completed,
                errors,
                p50_ns: Some(quantile(h, 0.5)),
                p99_ns: Some(quantile(h, 0.99)),
            })
            .collect();
        let crr = r.plan.mode == Mode::Crr;
        let started_unix_s = r
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut report = Report {
            schema: SCHEMA.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: r.plan.clone(),
            started_unix_s: Some(started_unix_s),
            warmup_requests: c.warmup_completed,
            duration_s: secs,
            requests,
            sent: c.sent,
            failed: c.failed,
            unfinished: c.unfinished,
            unsent: c.unsent,
            end_of_run: EndOfRun {
                unfinished: c.unfinished,
                unfinished_oldest_ns: r.stats.oldest_unfinished_ns,
                unsent: c.unsent,
                unsent_oldest_ns: r.stats.oldest_unsent_ns,
            },
            error_rate,
            throughput_rps: throughput,
            throughput_out_mib_s: per_s(c.bytes_sent as f64) / (1 << 20) as f64,
            throughput_in_mib_s: per_s(c.bytes_received as f64) / (1 << 20) as f64,
            connections_per_s: (r.plan.mode == Mode::Crr).then_some(throughput),
            connects: c.connects,
            reconnects: c.reconnects,
            retried: c.retried,
            status: http.then(|| StatusClasses {
                informational: s[1],
                success: s[2],
                redirection: s[3],
                client_error: s[4],
                server_error: s[5],
                other: s[0],
            }),
            status_codes,
            latency_ns: Latency::of(&r.stats.latency),
            latency_uncorrected_ns: Latency::of(&r.stats.service),
            connect_latency_ns: (r.plan.mode == Mode::Crr).then(|| Latency::of(&r.stats.connect)),
            errors,
            mismatched_bytes: c.mismatched_bytes,
            rate: r.plan.rate.map(|target| RateReport {
                target,
                achieved: throughput,
                due: c.sent + c.unsent,
                kept: throughput >= target * 0.99 && c.unsent == 0,
            }),
            timeseries,
            loadgen_cpu: Cpu {
                pid: None,
                cpu_s: r.loadgen_cpu,
                us_per_request: per_req(r.loadgen_cpu),
            },
            client_bound: Some(ClientBound::judge(
                &r.stats.busy,
                r.plan.rate.map(|_| quantile(&r.stats.slip, 0.99)),
                c.unsent,
            )),
            server_cpu: r.server_cpu.map(|cpu| Cpu {
                pid: r.server_pid,
                cpu_s: cpu,
                us_per_request: per_req(cpu),
            }),
            thread_errors: r.thread_errors.clone(),
            interrupted: r.interrupted,
            exit_code: 0,
            exit_reason: None,
            histograms: Histograms::encode(
                &r.stats.latency,
                Some(&r.stats.service),
                crr.then_some(&r.stats.connect),
            ),
            merged: None,
        };
        report.judge();
        report
    }

    /// Sets the exit status and its reason from the figures.
    pub fn judge(&mut self) {
        self.exit_code = 0;
        self.exit_reason = None;
        if let Some((code, why)) = self.verdict() {
            self.exit_code = code;
            self.exit_reason = Some(why);
        }
    }

    /// Why the run failed, with its exit status; `None` when it measured requests within
    /// the error budget and every thread ran to the end.
    fn verdict(&self) -> Option<(u8, String)> {
        let threads = self.config.threads;
        let gave_up = self.thread_errors.len();
        if self.requests == 0 {
            let why = if let Some(e) = self.thread_errors.first() {
                format!("nothing was measured: {e}")
            } else if self.failed > 0 {
                format!("nothing was measured: all {} requests failed", self.failed)
            } else if self.duration_s == 0.0 {
                "nothing was measured: the run stopped before the warm-up ended".into()
            } else {
                "nothing was measured: no response arrived".into()
            };
            return Some((EXIT_FAILED, why));
        }
        if gave_up > 0 {
            return Some((
                EXIT_FAILED,
                format!(
                    "{gave_up} of {threads} thread(s) gave up: {}",
                    self.thread_errors[0]
                ),
            ));
        }
        if self.error_rate > self.config.max_error_rate {
            return Some((
                EXIT_ERRORS,
                format!(
                    "{} of {} requests failed ({}), above --max-error-rate {}",
                    self.failed,
                    self.failed + self.requests + self.warmup_requests,
                    percent(self.error_rate),
                    percent(self.config.max_error_rate)
                ),
            ));
        }
        if self.config.require_headroom {
            if let Some(line) = self.client_bound.as_ref().and_then(ClientBound::line) {
                return Some((EXIT_CLIENT_BOUND, format!("{line} (--require-headroom)")));
            }
        }
        None
    }
}

/// A quantile of a histogram, 0 when it is empty.
fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.highest_equivalent(h.value_at_quantile(q))
    }
}

/// `1.5%`, `0.013%`, `0%`.
pub fn percent(f: f64) -> String {
    let p = f * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.3}%")
    }
}

/// A latency in the unit that fits: `850ns`, `105.5µs`, `12.34ms`, `1.50s`, up to an hour
/// (`3600.00s`) in at most 8 characters.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", v / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", v / 1e6)
    } else {
        format!("{:.2}s", v / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_the_unit_that_fits() {
        assert_eq!(fmt_ns(850), "850ns");
        assert_eq!(fmt_ns(105_500), "105.5µs");
        assert_eq!(fmt_ns(999_949), "999.9µs");
        assert_eq!(fmt_ns(12_345_678), "12.35ms");
        assert_eq!(fmt_ns(1_500_000_000), "1.50s");
        assert_eq!(fmt_ns(crate::stats::MAX_LATENCY_NS), "3600.00s");
        assert!(fmt_ns(crate::stats::MAX_LATENCY_NS).chars().count() <= 8);
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.25), "25.0%");
        assert_eq!(percent(0.00013), "0.013%");
    }
}
