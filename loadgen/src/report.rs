//! The results: a [`Report`] with a stable JSON schema (`loadgen/1`, see docs/loadgen.md), the
//! verdict and exit status, and (in `table`) the table people paste, all built from the
//! same numbers.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::args::Mode;
use crate::hdr;
use crate::headroom::ClientBound;
use crate::human::percent;
use crate::plan::Plan;
use crate::run::RunResult;
use crate::stats::{Counters, ErrorKind};

mod table;

/// JSON schema identifier; bump on incompatible changes.
pub const SCHEMA: &str = "loadgen/1";

/// A latency histogram summed up, in nanoseconds. Percentiles and the maximum are the
/// highest value the histogram cannot tell apart from them (3 significant digits), so they
/// never read low; an empty histogram reads all zeros.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Values recorded: answered requests, and in a corrected latency the unanswered ones as
    /// lower bounds.
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
}

impl Latency {
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

impl RateReport {
    /// An open-loop schedule at `target` requests/s that achieved `achieved`, with `sent`
    /// requests written and `unsent` left due.
    pub fn judge(target: f64, achieved: f64, sent: u64, unsent: u64) -> Self {
        RateReport {
            target,
            achieved,
            due: sent + unsent,
            kept: achieved >= target * 0.99 && unsent == 0,
        }
    }
}

/// CPU time of a process over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cpu {
    /// Process id (the server's); null for loadgen itself.
    pub pid: Option<u32>,
    /// CPU seconds (user + system).
    pub cpu_s: f64,
    /// CPU microseconds per measured request (0 when nothing was measured).
    pub us_per_request: f64,
}

impl Cpu {
    /// `cpu_s` seconds of process `pid`, spread over `requests` measured requests.
    pub fn over(pid: Option<u32>, cpu_s: f64, requests: u64) -> Self {
        let us_per_request = if requests > 0 {
            cpu_s * 1e6 / requests as f64
        } else {
            0.0
        };
        Cpu {
            pid,
            cpu_s,
            us_per_request,
        }
    }
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
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirection: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
    /// A status whose first digit is not 1 to 5.
    pub other: u64,
}

impl StatusClasses {
    /// From counts indexed by the status's first digit, 0 holding anything outside 1-5
    /// ([`Counters::status_classes`]).
    pub fn of(classes: &[u64; 6]) -> Self {
        StatusClasses {
            informational: classes[1],
            success: classes[2],
            redirection: classes[3],
            client_error: classes[4],
            server_error: classes[5],
            other: classes[0],
        }
    }

    /// The counts as [`StatusClasses::of`] takes them.
    pub fn counts(&self) -> [u64; 6] {
        [
            self.other,
            self.informational,
            self.success,
            self.redirection,
            self.client_error,
            self.server_error,
        ]
    }
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
    /// [`HISTOGRAM_ENCODING`]; `loadgen merge` refuses any other.
    pub encoding: String,
    /// Corrected latency (`latency_ns`).
    pub latency_ns: String,
    /// Service time (`latency_uncorrected_ns`; null in a merge of interval logs).
    pub latency_uncorrected_ns: Option<String>,
    /// Connect latency (crr; else null).
    pub connect_latency_ns: Option<String>,
    /// TLS handshake latency (TLS runs; else null).
    #[serde(default)]
    pub handshake_latency_ns: Option<String>,
}

impl Histograms {
    /// Encodes a run's histograms; `None` if one cannot be encoded.
    pub fn encode(
        latency: &Histogram<u64>,
        uncorrected: Option<&Histogram<u64>>,
        connect: Option<&Histogram<u64>>,
        handshake: Option<&Histogram<u64>>,
    ) -> Option<Self> {
        Some(Histograms {
            encoding: HISTOGRAM_ENCODING.into(),
            latency_ns: hdr::encode(latency).ok()?,
            latency_uncorrected_ns: uncorrected.map(hdr::encode).transpose().ok()?,
            connect_latency_ns: connect.map(hdr::encode).transpose().ok()?,
            handshake_latency_ns: handshake.map(hdr::encode).transpose().ok()?,
        })
    }
}

/// TLS handshakes of a run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsCounts {
    /// Handshakes done, warm-up included (without `--tls-resume`, every one full).
    pub handshakes: u64,
    /// Of those, the ones that resumed a session.
    pub resumed: u64,
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
    /// [`SCHEMA`]; `loadgen merge` refuses any other.
    pub schema: String,
    /// The version of the loadgen that wrote the report.
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
    /// Bytes written per second of the measured window, in MiB.
    pub throughput_out_mib_s: f64,
    /// Bytes read per second of the measured window, in MiB.
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
    /// crr: from starting a connect to the socket being connected; null otherwise.
    pub connect_latency_ns: Option<Latency>,
    /// TLS: from the socket being connected to the handshake done (measured window, every
    /// mode); null without TLS.
    #[serde(default)]
    pub handshake_latency_ns: Option<Latency>,
    /// TLS: handshakes done and resumed; null without TLS.
    #[serde(default)]
    pub tls: Option<TlsCounts>,
    /// Error events by kind.
    pub errors: serde_json::Map<String, serde_json::Value>,
    /// Bytes that did not match (echo --verify).
    pub mismatched_bytes: u64,
    /// Open loop: the schedule asked for and whether it was kept; null in closed loop.
    pub rate: Option<RateReport>,
    /// Per second of the measured window.
    pub timeseries: Vec<Second>,
    /// loadgen's own CPU, all its threads, over the measured window.
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
        let per_s = |n: f64| if secs > 0.0 { n / secs } else { 0.0 };
        let throughput = per_s(c.completed as f64);
        let http = r.plan.protocol == ringd_common::ProtocolKind::Http;
        let crr = r.plan.mode == Mode::Crr;
        let tls = r.plan.tls.is_some();
        let started_unix_s = r.started.duration_since(std::time::UNIX_EPOCH);
        let mut report = Report {
            schema: SCHEMA.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: r.plan.clone(),
            started_unix_s: Some(started_unix_s.map_or(0.0, |d| d.as_secs_f64())),
            warmup_requests: c.warmup_completed,
            duration_s: secs,
            requests: c.completed,
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
            error_rate: error_rate(c.failed, c.warmup_completed + c.completed + c.failed),
            throughput_rps: throughput,
            throughput_out_mib_s: per_s(c.bytes_sent as f64) / (1 << 20) as f64,
            throughput_in_mib_s: per_s(c.bytes_received as f64) / (1 << 20) as f64,
            connections_per_s: crr.then_some(throughput),
            connects: c.connects,
            reconnects: c.reconnects,
            retried: c.retried,
            status: http.then(|| StatusClasses::of(&c.status_classes)),
            status_codes: http.then(|| status_codes(&c.status_codes)),
            latency_ns: Latency::of(&r.stats.latency),
            latency_uncorrected_ns: Latency::of(&r.stats.service),
            connect_latency_ns: crr.then(|| Latency::of(&r.stats.connect)),
            handshake_latency_ns: tls.then(|| Latency::of(&r.stats.handshake)),
            tls: tls.then_some(TlsCounts {
                handshakes: c.tls_handshakes,
                resumed: c.tls_resumed,
            }),
            errors: error_counts(c),
            mismatched_bytes: c.mismatched_bytes,
            rate: (r.plan.rate).map(|t| RateReport::judge(t, throughput, c.sent, c.unsent)),
            timeseries: timeseries(&r.intervals, &r.per_second),
            loadgen_cpu: Cpu::over(None, r.loadgen_cpu, c.completed),
            client_bound: Some(ClientBound::judge(
                &r.stats.busy,
                r.plan.rate.map(|_| quantile(&r.stats.slip, 0.99)),
                c.unsent,
            )),
            server_cpu: (r.server_cpu).map(|cpu| Cpu::over(r.server_pid, cpu, c.completed)),
            thread_errors: r.thread_errors.clone(),
            interrupted: r.interrupted,
            exit_code: 0,
            exit_reason: None,
            histograms: Histograms::encode(
                &r.stats.latency,
                Some(&r.stats.service),
                crr.then_some(&r.stats.connect),
                tls.then_some(&r.stats.handshake),
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

/// Failed requests over those that ended (answered or failed); 0 when none did.
pub fn error_rate(failed: u64, ended: u64) -> f64 {
    if ended > 0 {
        failed as f64 / ended as f64
    } else {
        0.0
    }
}

/// Every error kind by its JSON name, zeros included, in report order.
fn error_counts(c: &Counters) -> serde_json::Map<String, serde_json::Value> {
    ErrorKind::ALL
        .into_iter()
        .map(|k| (k.name().into(), c.errors_of(k).into()))
        .collect()
}

/// The status codes that were seen, by code.
fn status_codes(counts: &[u64]) -> serde_json::Map<String, serde_json::Value> {
    counts
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(code, &n)| (code.to_string(), n.into()))
        .collect()
}

/// One [`Second`] per interval histogram, with its completions and error events.
fn timeseries(intervals: &[Histogram<u64>], per_second: &[(u64, u64)]) -> Vec<Second> {
    intervals
        .iter()
        .zip(per_second)
        .enumerate()
        .map(|(i, (h, &(completed, errors)))| Second {
            second: i as u64,
            completed,
            errors,
            p50_ns: Some(quantile(h, 0.5)),
            p99_ns: Some(quantile(h, 0.99)),
        })
        .collect()
}

/// A quantile of a histogram, 0 when it is empty.
fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.highest_equivalent(h.value_at_quantile(q))
    }
}
