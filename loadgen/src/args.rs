//! The command line as clap parses it. [`Args::into_plan`](crate::plan) checks it into a
//! [`Plan`](crate::plan::Plan) before any socket opens.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ringd_common::units::{parse_bytes, parse_duration};
use ringd_common::{ProtocolKind, DEFAULT_GREETING};

use crate::client::tls::TlsVersion;

/// How requests are issued.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Request/response on persistent connections.
    Rr,
    /// Connect, request, response, close: one connection per transaction.
    Crr,
    /// One-way bulk send to echo, verified on return; throughput in bytes/s.
    Stream,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Rr => "rr",
            Mode::Crr => "crr",
            Mode::Stream => "stream",
        }
    }
}

/// The event loop that drives the connections.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// io_uring: multishot receives into provided buffers, one submit-and-wait per turn.
    Uring,
    /// epoll (mio): readiness, then read(2) and write(2). Reports from before the choice
    /// existed were made with it.
    #[default]
    Epoll,
}

impl Engine {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Uring => "uring",
            Engine::Epoll => "epoll",
        }
    }
}

/// loadgen: closed- and open-loop TCP load with HdrHistogram latency (coordinated omission
/// corrected), for ringd and any echo or HTTP/1.1 server.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    // The package version and the git commit built (`unknown` without git; see build.rs).
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("RINGD_COMMIT"), ")"),
    after_help = "Examples:\n  loadgen 127.0.0.1:8080 --connections 100 --duration 10s          # echo rr, closed loop\n  loadgen http://127.0.0.1:8080/ -c 10 --json r.json                 # HTTP GET\n  loadgen http://127.0.0.1:8080/api -X POST --body '{}' -H 'Content-Type: application/json'\n  loadgen 127.0.0.1:8080 --rate 50000 --hgrm out.hgrm --plot out.svg  # open loop\n  loadgen 127.0.0.1:8080 --protocol hello                            # crr (the default for hello)\n  loadgen https://127.0.0.1:8443/ --cacert ca.pem --mode crr        # a full TLS handshake each\n  loadgen 127.0.0.1:8080 -c 50000 --source 127.0.0.2-127.0.0.4       # past one source's ports\n  loadgen merge --json all.json host1.json host2.json                # one report from several hosts\n\nExit status: 0 the run measured requests within --max-error-rate; 1 it could not run,\nmeasured nothing, a thread gave up or a file could not be written; 2 bad arguments;\n3 failed requests above --max-error-rate; 4 loadgen was the limit (--require-headroom)."
)]
pub struct Args {
    /// Targets, HOST:PORT or http[s]://HOST[:PORT]/PATH; connections are spread over them
    /// round-robin. `https://` speaks TLS (see --tls).
    #[arg(default_value = "127.0.0.1:8080")]
    pub targets: Vec<String>,

    /// Source addresses to connect from, as a pool: `127.0.0.2-127.0.0.9`, `127.0.0.0/29`
    /// or `127.0.0.2,127.0.0.3` (repeatable). Connections take them round-robin and keep
    /// theirs when they reconnect; each source has its own ephemeral ports per target
    /// [default: the kernel's choice].
    #[arg(long = "source", value_name = "POOL")]
    pub sources: Vec<String>,

    /// Protocol the server speaks [default: http for URL targets, echo otherwise].
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolKind>,

    /// rr, crr or stream [default: crr for hello, rr otherwise].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,

    /// Concurrent connections (in crr: concurrent transactions).
    #[arg(long, short = 'c', default_value_t = 100)]
    pub connections: usize,

    /// Event-loop threads [default: CPUs available, at most --connections].
    #[arg(long, short = 't')]
    pub threads: Option<usize>,

    /// Pin thread i to the i-th CPU of this list, e.g. `1` or `2-3` or `1,3`.
    #[arg(long, value_parser = parse_cpu_list)]
    pub pin: Option<CpuList>,

    /// Measured duration (ignored with --requests).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Stop after this many measured requests instead of after --duration.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Warm-up before measuring: requests meant to be sent in it are not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Request size for echo (rr, crr) and chunk size for stream.
    #[arg(long, default_value = "64", value_parser = parse_bytes)]
    pub size: usize,

    /// Requests in flight per connection [default: 1; 16 in stream mode].
    #[arg(long)]
    pub pipeline: Option<usize>,

    /// Open loop: total requests (crr: transactions) per second on a fixed schedule; latency
    /// is measured from each request's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Check every echoed byte (echo), a 2xx status (or --expect-status) and the same body
    /// length (http), the greeting (hello); what fails counts as failed.
    #[arg(long)]
    pub verify: bool,

    /// A request with no response for this long counts as a timeout and its connection is
    /// reopened; also how long the end of the run waits for responses still due.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Most failed requests, as a fraction of those sent (`0.01` or `1%`), before the exit
    /// status says the run failed (3).
    #[arg(long, default_value = "1%", value_parser = parse_fraction)]
    pub max_error_rate: f64,

    /// HTTP request path [default: the URL's path, or /].
    #[arg(long)]
    pub path: Option<String>,

    /// HTTP method.
    #[arg(long = "method", short = 'X')]
    pub method: Option<String>,

    /// Extra HTTP request header, `Name: value` (repeatable); `Host:` replaces the default.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,

    /// HTTP request body (sent with Content-Length).
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,

    /// HTTP request body read from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,

    /// HTTP statuses that count as success, e.g. `200`, `2xx,304` or `200-299`; others
    /// count as failed. Without it every status is a response (counted by class), and
    /// --verify wants a 2xx.
    #[arg(long)]
    pub expect_status: Option<String>,

    /// The greeting a `hello` server sends, checked with --verify.
    #[arg(long, default_value = DEFAULT_GREETING)]
    pub greeting: String,

    /// Write the results as JSON (schema in docs/loadgen.md); `-` for stdout (the table then
    /// goes to stderr).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write the latency percentile distribution (.hgrm, values in microseconds).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,

    /// Write an HdrHistogram interval log, one histogram per second (.hlog, nanoseconds).
    #[arg(long)]
    pub hlog: Option<PathBuf>,

    /// Write an SVG with the percentile curve and latency over time.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Report this server process's CPU time per request over the measured window.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Begin (warm-up first) at this wall-clock instant: seconds since the Unix epoch
    /// (`date +%s`) or `+DURATION` from now, within a day ahead, so that runs on several
    /// hosts measure the same window.
    #[arg(long, value_name = "UNIX_TIME|+DUR")]
    pub start_at: Option<String>,

    /// Fail (exit status 4) when loadgen itself was the limit: a thread busy ≥ 90% of the
    /// measured window (open loop: and the schedule slipping by ≥ 1 ms at p99, or requests
    /// left unsent).
    #[arg(long)]
    pub require_headroom: bool,

    /// TLS on every connection, for HOST:PORT targets of any protocol (echo, hello, and
    /// http); `https://` URLs need no --tls. The certificate is checked against --cacert,
    /// or not at all with --insecure: one of the two is required.
    #[arg(long, help_heading = "TLS")]
    pub tls: bool,

    /// TLS: trust only the CA certificates in this PEM file (loadgen carries no system or
    /// bundled roots).
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub cacert: Option<PathBuf>,

    /// TLS: accept any certificate for any name, unchecked (handshake signatures are still
    /// verified). For self-signed test servers only: nothing proves who answers.
    #[arg(long, help_heading = "TLS")]
    pub insecure: bool,

    /// TLS: the server name sent (SNI) and that the certificate must hold [default: the
    /// target's host].
    #[arg(long, value_name = "NAME", help_heading = "TLS")]
    pub tls_sni: Option<String>,

    /// TLS: resume sessions with tickets from earlier handshakes. Off by default, so that
    /// every connection (crr: every transaction) measures a full handshake.
    #[arg(long, help_heading = "TLS")]
    pub tls_resume: bool,

    /// TLS: offer this protocol version alone (1.2 or 1.3) [default: both, 1.3 preferred].
    #[arg(long, value_name = "VERSION", value_parser = parse_tls_version, help_heading = "TLS")]
    pub tls_version: Option<TlsVersion>,

    /// Event loop: io_uring, or epoll [default: uring where the kernel allows it, else epoll
    /// with a line saying why].
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,

    /// Open loop on io_uring (rr, stream): wake at most once per window (at most a quarter
    /// of a connection's interval), handing the kernel the sends due in the next window,
    /// which it sends when due, and handling the responses that came in it together, each
    /// timed by its kernel receive stamp; 0 wakes for every send and response.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub batch_window: Duration,

    /// No live progress line, even on a terminal.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// A list of CPU numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses a CPU list such as `1`, `0,2` or `2-3`.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {s:?} (try 1 or 0,2 or 2-3)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b - a > 65_536 {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err(format!("empty CPU list {s:?}"));
    }
    Ok(CpuList(cpus))
}

/// Parses a fraction: `0.01` or `1%`, between 0 and 1.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("bad fraction {s:?} (try 0.01 or 1%)"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is not between 0 and 1 (0% and 100%)"));
    }
    Ok(v)
}

/// A set of HTTP statuses, as `--expect-status` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet {
    /// Inclusive ranges.
    ranges: Vec<(u16, u16)>,
    /// As typed.
    text: String,
}

impl StatusSet {
    /// Any 2xx.
    pub fn success() -> Self {
        StatusSet {
            ranges: vec![(200, 299)],
            text: "2xx".into(),
        }
    }

    /// True when `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&status))
    }
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses `200`, `2xx`, `200-299` or a comma-separated list of them.
pub fn parse_status_set(s: &str) -> Result<StatusSet, String> {
    let bad = || format!("bad --expect-status {s:?} (try 200, 2xx, 200-299 or 200,304)");
    let code = |t: &str| -> Result<u16, String> {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=999).contains(c))
            .ok_or_else(bad)
    };
    let mut ranges = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        if let Some(class) = lower.strip_suffix("xx") {
            let c = class.parse::<u16>().ok().filter(|c| (1..=9).contains(c));
            let c = c.ok_or_else(bad)?;
            ranges.push((c * 100, c * 100 + 99));
        } else if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (code(a)?, code(b)?);
            if a > b {
                return Err(bad());
            }
            ranges.push((a, b));
        } else {
            let c = code(part)?;
            ranges.push((c, c));
        }
    }
    if ranges.is_empty() {
        return Err(bad());
    }
    Ok(StatusSet {
        ranges,
        text: s.trim().to_string(),
    })
}

fn parse_tls_version(s: &str) -> Result<TlsVersion, String> {
    match s {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        _ => Err("1.2 or 1.3".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Ok(CpuList(vec![1])));
        assert_eq!(parse_cpu_list("0,2-3"), Ok(CpuList(vec![0, 2, 3])));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("0-99999999999").is_err());
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("0.05"), Ok(0.05));
        assert_eq!(parse_fraction("1%"), Ok(0.01));
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert!(parse_fraction("150%").is_err());
        assert!(parse_fraction("-1").is_err());
        assert!(parse_fraction("x").is_err());
    }

    #[test]
    fn status_sets() {
        let s = parse_status_set("2xx,304,400-404").unwrap();
        for (code, yes) in [
            (200, true),
            (299, true),
            (304, true),
            (404, true),
            (405, false),
        ] {
            assert_eq!(s.contains(code), yes, "{code}");
        }
        assert_eq!(s.to_string(), "2xx,304,400-404");
        assert!(StatusSet::success().contains(204));
        for bad in ["", "abc", "20", "0xx", "404-400", "1000"] {
            assert!(parse_status_set(bad).is_err(), "{bad}");
        }
    }
}
