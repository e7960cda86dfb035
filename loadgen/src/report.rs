//! The results: a [`Report`] with a stable JSON schema (`loadgen/1`, see the README) and the
//! table people paste, both built from the same numbers.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Mode, Plan};
use crate::run::RunResult;
use crate::stats::ErrorKind;

/// JSON schema identifier; bump on incompatible changes.
pub const SCHEMA: &str = "loadgen/1";

/// Latency summary in nanoseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
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

    fn row(&self, label: &str) -> String {
        let us = |v: f64| format!("{:.1}", v / 1e3);
        format!(
            "  {label:<12}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}",
            us(self.min as f64),
            us(self.mean),
            us(self.p50 as f64),
            us(self.p90 as f64),
            us(self.p99 as f64),
            us(self.p99_9 as f64),
            us(self.p99_99 as f64),
            us(self.max as f64),
        )
    }
}

/// Open-loop schedule: asked versus achieved.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RateReport {
    /// Requests per second asked for.
    pub target: f64,
    /// Requests per second completed.
    pub achieved: f64,
    /// Achieved within 1% of the target.
    pub kept: bool,
}

/// CPU time of a process over the measured window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cpu {
    /// Process id (the server's), if another process.
    pub pid: Option<u32>,
    /// CPU seconds (user + system).
    pub cpu_s: f64,
    /// CPU microseconds per measured request.
    pub us_per_request: f64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Schema identifier.
    pub schema: &'static str,
    /// loadgen's version.
    pub version: &'static str,
    /// The plan that ran.
    pub config: Plan,
    /// Warm-up completions (not in any figure below).
    pub warmup_requests: u64,
    /// Measured window in seconds.
    pub duration_s: f64,
    /// Measured requests (crr: transactions) completed.
    pub requests: u64,
    /// Requests written, warm-up included.
    pub sent: u64,
    /// Requests lost to errors.
    pub failed: u64,
    /// Requests in flight when the run ended.
    pub unfinished: u64,
    /// Completed requests per second.
    pub throughput_rps: f64,
    /// MiB/s written.
    pub throughput_out_mib_s: f64,
    /// MiB/s read.
    pub throughput_in_mib_s: f64,
    /// Connections opened per second (crr).
    pub connections_per_s: Option<f64>,
    /// Latency: from intended send time in open loop (coordinated omission corrected).
    pub latency_ns: Latency,
    /// Latency from the actual send time (service time).
    pub latency_uncorrected_ns: Latency,
    /// Connect latency (crr).
    pub connect_latency_ns: Option<Latency>,
    /// Error events by kind.
    pub errors: serde_json::Map<String, serde_json::Value>,
    /// Bytes that did not match (echo --verify).
    pub mismatched_bytes: u64,
    /// Open-loop schedule.
    pub rate: Option<RateReport>,
    /// loadgen's own CPU.
    pub loadgen_cpu: Cpu,
    /// The server's CPU (with --server-pid).
    pub server_cpu: Option<Cpu>,
    /// Threads that gave up.
    pub thread_errors: Vec<String>,
}

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
        let throughput = requests as f64 / secs;
        let mut errors = serde_json::Map::new();
        for k in ErrorKind::ALL {
            errors.insert(k.name().into(), c.errors_of(k).into());
        }
        Report {
            schema: SCHEMA,
            version: env!("CARGO_PKG_VERSION"),
            config: r.plan.clone(),
            warmup_requests: c.warmup_completed,
            duration_s: secs,
            requests,
            sent: c.sent,
            failed: c.failed,
            unfinished: c.unfinished,
            throughput_rps: throughput,
            throughput_out_mib_s: c.bytes_sent as f64 / secs / (1 << 20) as f64,
            throughput_in_mib_s: c.bytes_received as f64 / secs / (1 << 20) as f64,
            connections_per_s: (r.plan.mode == Mode::Crr).then(|| requests as f64 / secs),
            latency_ns: Latency::of(&r.stats.latency),
            latency_uncorrected_ns: Latency::of(&r.stats.service),
            connect_latency_ns: (r.plan.mode == Mode::Crr).then(|| Latency::of(&r.stats.connect)),
            errors,
            mismatched_bytes: c.mismatched_bytes,
            rate: r.plan.rate.map(|target| RateReport {
                target,
                achieved: throughput,
                kept: throughput >= target * 0.99,
            }),
            loadgen_cpu: Cpu {
                pid: None,
                cpu_s: r.loadgen_cpu,
                us_per_request: per_req(r.loadgen_cpu),
            },
            server_cpu: r.server_cpu.map(|cpu| Cpu {
                pid: r.server_pid,
                cpu_s: cpu,
                us_per_request: per_req(cpu),
            }),
            thread_errors: r.thread_errors.clone(),
        }
    }

    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let p = &self.config;
        let mut s = String::new();
        let targets: Vec<String> = p.targets.iter().map(|t| t.to_string()).collect();
        let shape = match p.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".into(),
        };
        let size = match p.protocol {
            ringd::ProtocolKind::Echo => format!(", {} B requests", p.size),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "loadgen {} | {} {} {shape} | {} connections on {} thread(s){size}, pipeline {}{}",
            self.version,
            p.protocol,
            p.mode.name(),
            p.connections,
            p.threads,
            p.pipeline,
            if p.verify { ", verified" } else { "" },
        );
        let _ = writeln!(
            s,
            "target {} | warm-up {:.2} s ({} requests), measured {:.2} s",
            targets.join(", "),
            p.warmup.as_secs_f64(),
            self.warmup_requests,
            self.duration_s
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  Requests    {} ({:.1} req/s)   sent {}, failed {}, unfinished {}",
            self.requests, self.throughput_rps, self.sent, self.failed, self.unfinished
        );
        let _ = writeln!(
            s,
            "  Bytes/s     out {:.2} MiB/s, in {:.2} MiB/s",
            self.throughput_out_mib_s, self.throughput_in_mib_s
        );
        if let Some(cps) = self.connections_per_s {
            let _ = writeln!(s, "  Connects    {cps:.1} connections/s");
        }
        if let Some(r) = &self.rate {
            let _ = writeln!(
                s,
                "  Schedule    asked {:.1} req/s, achieved {:.1} req/s{}",
                r.target,
                r.achieved,
                if r.kept {
                    ""
                } else {
                    "  (NOT KEPT: the server or loadgen could not keep up)"
                }
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  Latency µs       min     mean      p50      p90      p99    p99.9   p99.99       max"
        );
        if p.rate.is_some() {
            let _ = writeln!(s, "{}", self.latency_ns.row("corrected"));
            let _ = writeln!(s, "{}", self.latency_uncorrected_ns.row("uncorrected"));
        } else {
            let _ = writeln!(s, "{}", self.latency_ns.row("request"));
        }
        if let Some(c) = &self.connect_latency_ns {
            let _ = writeln!(s, "{}", c.row("connect"));
        }
        let _ = writeln!(s);
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "  Errors      {}",
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            }
        );
        if self.mismatched_bytes > 0 {
            let _ = writeln!(s, "  Mismatched  {} bytes", self.mismatched_bytes);
        }
        let mut cpu = format!(
            "loadgen {:.2} s ({:.2} µs/request)",
            self.loadgen_cpu.cpu_s, self.loadgen_cpu.us_per_request
        );
        if let Some(sc) = &self.server_cpu {
            let _ = write!(
                cpu,
                ", server pid {} {:.2} s ({:.2} µs/request)",
                sc.pid.unwrap_or(0),
                sc.cpu_s,
                sc.us_per_request
            );
        }
        let _ = writeln!(s, "  CPU         {cpu}");
        for e in &self.thread_errors {
            let _ = writeln!(s, "  Warning     a thread stopped early: {e}");
        }
        s
    }
}
