//! The table printed at the end of a run: what ran, what it measured, how connections and
//! statuses went, what the end of the run left unanswered, latency in the unit that fits,
//! errors, CPU, and why the run failed if it did.

use std::fmt::Write as _;

use super::{Latency, MergeInfo, Report};
use crate::args::Mode;
use crate::human::{fmt_ns, percent};

/// Width of one latency column.
const COL: usize = 10;

impl Latency {
    /// The header of the latency rows.
    pub(crate) fn header() -> String {
        let mut head = format!("  {:<12}", "Latency");
        for h in ["min", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"] {
            let _ = write!(head, "{h:>COL$}");
        }
        head
    }

    /// One latency row.
    pub(crate) fn row(&self, label: &str) -> String {
        let mut s = format!("  {label:<12}");
        if self.count == 0 {
            // Zeros would read as measured: a keep-alive run's handshakes, say, all end in
            // the warm-up.
            s.push_str("none in the measured window");
            return s;
        }
        for v in [
            self.min,
            self.mean as u64,
            self.p50,
            self.p90,
            self.p99,
            self.p99_9,
            self.p99_99,
            self.max,
        ] {
            let _ = write!(s, "{:>COL$}", fmt_ns(v));
        }
        s
    }
}

impl Report {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        self.heading(&mut s);
        let _ = writeln!(s);
        self.traffic(&mut s);
        self.end_of_run_line(&mut s);
        let _ = writeln!(s);
        self.latency_rows(&mut s);
        let _ = writeln!(s);
        self.errors(&mut s);
        self.cost(&mut s);
        for e in &self.thread_errors {
            let _ = writeln!(s, "  Warning     a thread stopped early: {e}");
        }
        if let Some(why) = &self.exit_reason {
            let _ = writeln!(s, "  FAILED      {why}");
        }
        s
    }

    /// What ran, against what, for how long (and which runs, merged).
    fn heading(&self, s: &mut String) {
        let p = &self.config;
        let shape = match p.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".into(),
        };
        let what = match (p.protocol, &p.method) {
            (ringd_common::ProtocolKind::Echo, _) => format!(", {} B requests", p.size),
            (_, Some(m)) => format!(", {m} {}", p.path.as_deref().unwrap_or("/")),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "loadgen {} ({}) | {} {} {shape} | {} connections on {} thread(s){what}, pipeline {}{}",
            self.version,
            p.engine.name(),
            p.protocol,
            p.mode.name(),
            p.connections,
            p.threads,
            p.pipeline,
            if p.verify { ", verified" } else { "" },
        );
        let stopped = match self.interrupted {
            true => " (stopped by a signal)",
            false => "",
        };
        let _ = writeln!(
            s,
            "target {} | warm-up {:.2} s ({} requests), measured {:.2} s{stopped}",
            p.target_names.join(", "),
            p.warmup.as_secs_f64(),
            self.warmup_requests,
            self.duration_s,
        );
        if let Some(m) = &self.merged {
            let _ = writeln!(s, "{}", m.describe());
        }
    }

    /// Requests, statuses, connections, bytes and the open-loop schedule.
    fn traffic(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "  Requests    {} ({:.1} req/s)   sent {}, failed {}, unfinished {}",
            self.requests, self.throughput_rps, self.sent, self.failed, self.unfinished
        );
        self.status_line(s);
        if self.config.mode == Mode::Crr {
            let _ = writeln!(
                s,
                "  Connects    {:.1} connections/s",
                self.connections_per_s.unwrap_or(0.0)
            );
        } else {
            let _ = writeln!(
                s,
                "  Connections {} opened, {} reopened after the server closed them ({} requests sent again)",
                self.connects, self.reconnects, self.retried
            );
        }
        if let Some(t) = &self.tls {
            let _ = writeln!(
                s,
                "  TLS         {} handshakes, {} resumed a session",
                t.handshakes, t.resumed
            );
        }
        let _ = writeln!(
            s,
            "  Bytes/s     out {:.2} MiB/s, in {:.2} MiB/s",
            self.throughput_out_mib_s, self.throughput_in_mib_s
        );
        if let Some(r) = &self.rate {
            let kept = match r.kept {
                true => "",
                false => "  (NOT KEPT: the server or loadgen could not keep up)",
            };
            let _ = writeln!(
                s,
                "  Schedule    asked {:.1} req/s, achieved {:.1} req/s, {} fell due{kept}",
                r.target, r.achieved, r.due,
            );
        }
    }

    /// What the end of the run left unanswered, if anything.
    fn end_of_run_line(&self, s: &mut String) {
        let e = &self.end_of_run;
        let mut parts = Vec::new();
        if e.unfinished > 0 {
            parts.push(format!(
                "{} sent and unanswered (oldest {})",
                e.unfinished,
                fmt_ns(e.unfinished_oldest_ns)
            ));
        }
        if e.unsent > 0 {
            parts.push(format!(
                "{} due and never sent (oldest {})",
                e.unsent,
                fmt_ns(e.unsent_oldest_ns)
            ));
        }
        if !parts.is_empty() {
            let _ = writeln!(
                s,
                "  At the end  {}: in the latency below with their age, as lower bounds",
                parts.join(", ")
            );
        }
    }

    /// Corrected and uncorrected latency in open loop, request latency in closed loop,
    /// connect latency in crr, and TLS handshake latency.
    fn latency_rows(&self, s: &mut String) {
        let _ = writeln!(s, "{}", Latency::header());
        if self.config.rate.is_some() {
            let _ = writeln!(s, "{}", self.latency_ns.row("corrected"));
            let _ = writeln!(s, "{}", self.latency_uncorrected_ns.row("uncorrected"));
        } else {
            let _ = writeln!(s, "{}", self.latency_ns.row("request"));
        }
        if let Some(c) = &self.connect_latency_ns {
            let _ = writeln!(s, "{}", c.row("connect"));
        }
        if let Some(h) = &self.handshake_latency_ns {
            let _ = writeln!(s, "{}", h.row("handshake"));
        }
    }

    /// Error events by kind (the ones that happened) and mismatched bytes.
    fn errors(&self, s: &mut String) {
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let line = if errors.is_empty() {
            "none".into()
        } else {
            format!(
                "{} (failed requests {} of those that ended)",
                errors.join(", "),
                percent(self.error_rate)
            )
        };
        let _ = writeln!(s, "  Errors      {line}");
        if self.mismatched_bytes > 0 {
            let _ = writeln!(s, "  Mismatched  {} bytes", self.mismatched_bytes);
        }
    }

    /// CPU of loadgen and the server, and how busy loadgen's threads were.
    fn cost(&self, s: &mut String) {
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
        if let Some(c) = &self.client_bound {
            let busy: Vec<String> = c
                .threads
                .iter()
                .map(|t| format!("{:.0}%", t.busy * 100.0))
                .collect();
            let _ = writeln!(s, "  Busy        loadgen threads {}", busy.join(" "));
            if let Some(line) = c.line() {
                let _ = writeln!(s, "  {line}");
            }
        }
    }

    /// HTTP: responses by status class, and the codes when there is more than one.
    fn status_line(&self, s: &mut String) {
        let (Some(st), Some(codes)) = (&self.status, &self.status_codes) else {
            return;
        };
        let classes: Vec<String> = [
            ("1xx", st.informational),
            ("2xx", st.success),
            ("3xx", st.redirection),
            ("4xx", st.client_error),
            ("5xx", st.server_error),
            ("other", st.other),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
        let mut line = if classes.is_empty() {
            "none".to_string()
        } else {
            classes.join(", ")
        };
        if codes.len() > 1 || codes.keys().any(|c| !c.starts_with('2')) {
            let list: Vec<String> = codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            let _ = write!(line, "  ({})", list.join(", "));
        }
        let _ = writeln!(s, "  Status      {line}");
    }
}

impl MergeInfo {
    /// One line: how many runs, the window they measured together, how far apart they
    /// started.
    pub fn describe(&self) -> String {
        let starts = self.runs.iter().map(|r| r.started_unix_s);
        let (first, last) = starts.fold((f64::MAX, f64::MIN), |(a, b), t| (a.min(t), b.max(t)));
        let lens = self.runs.iter().map(|r| r.duration_s);
        let (short, long) = lens.fold((f64::MAX, f64::MIN), |(a, b), d| (a.min(d), b.max(d)));
        let each = if long - short < 0.005 {
            format!("{long:.2} s")
        } else {
            format!("{short:.2}-{long:.2} s")
        };
        format!(
            "merged {} run(s): measured together {:.2} s (each measured {each}, starting up to {:.3} s apart); rates over that window",
            self.runs.len(),
            self.window_s,
            last - first
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_rows_stay_aligned_from_nanoseconds_to_an_hour() {
        let row = |v: u64| {
            Latency {
                count: 1,
                min: v,
                mean: v as f64,
                stdev: 0.0,
                p50: v,
                p90: v,
                p99: v,
                p99_9: v,
                p99_99: v,
                max: v,
            }
            .row("request")
        };
        let width = 2 + 12 + 8 * COL;
        for v in [
            1,
            999,
            105_500,
            12_345_678,
            1_500_000_000,
            3_600_000_000_000,
        ] {
            let r = row(v);
            assert_eq!(r.chars().count(), width, "{r:?}");
            // Every column keeps a space before it.
            assert!(r[14..].split_whitespace().count() == 8, "{r:?}");
        }
    }

    #[test]
    fn a_row_with_nothing_measured_says_so_instead_of_zeros() {
        let r = Latency {
            count: 0,
            min: 0,
            mean: 0.0,
            stdev: 0.0,
            p50: 0,
            p90: 0,
            p99: 0,
            p99_9: 0,
            p99_99: 0,
            max: 0,
        }
        .row("handshake");
        assert_eq!(r, "  handshake   none in the measured window");
    }
}
