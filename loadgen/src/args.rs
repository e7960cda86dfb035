//! The command line, checked into a [`Plan`] before any socket opens: every bad value is a
//! one-line error that says what to change.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::client::http_get;
use clap::Parser;
use ringd::cli::{parse_bytes, parse_duration};
use ringd::protocol::{ProtocolKind, DEFAULT_GREETING};

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
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

/// loadgen: closed- and open-loop TCP load with HdrHistogram latency (coordinated omission
/// corrected), for ringd and any echo or HTTP/1.1 server.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    after_help = "Examples:\n  loadgen 127.0.0.1:8080 --connections 100 --duration 10s          # echo rr, closed loop\n  loadgen 127.0.0.1:8080 --protocol http --pipeline 16 --json r.json\n  loadgen 127.0.0.1:8080 --rate 50000 --hgrm out.hgrm --plot out.svg  # open loop\n  loadgen 127.0.0.1:8080 --protocol hello                            # crr (the default for hello)"
)]
pub struct Args {
    /// Targets, HOST:PORT; connections are spread over them round-robin.
    #[arg(default_value = "127.0.0.1:8080")]
    pub targets: Vec<String>,

    /// Protocol the server speaks.
    #[arg(long, value_enum, default_value_t = ProtocolKind::Echo)]
    pub protocol: ProtocolKind,

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

    /// Warm-up before measuring (not counted; reported separately).
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

    /// Check every echoed byte (echo), the status and body length (http), the greeting (hello).
    #[arg(long)]
    pub verify: bool,

    /// A request with no response for this long counts as a timeout and its connection is
    /// reopened.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// HTTP request path.
    #[arg(long, default_value = "/")]
    pub path: String,

    /// Extra HTTP request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,

    /// The greeting a `hello` server sends, checked with --verify.
    #[arg(long, default_value = DEFAULT_GREETING)]
    pub greeting: String,

    /// Write the results as JSON (schema in the README).
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

    /// No live progress line, even on a terminal.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// A checked run plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// Resolved targets.
    pub targets: Vec<SocketAddr>,
    /// Protocol.
    #[serde(serialize_with = "ser_display")]
    pub protocol: ProtocolKind,
    /// Mode.
    pub mode: Mode,
    /// Connections in total.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// CPUs to pin threads to (empty: no pinning).
    pub pin: Vec<usize>,
    /// Measured duration, unless `requests` is set.
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Measured request count, if bounded by count.
    pub requests: Option<u64>,
    /// Warm-up.
    #[serde(serialize_with = "ser_secs")]
    pub warmup: Duration,
    /// Echo request / stream chunk size.
    pub size: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Open-loop total rate, requests per second.
    pub rate: Option<f64>,
    /// Verify responses.
    pub verify: bool,
    /// Per-request timeout.
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// The HTTP request bytes, or the hello message.
    #[serde(skip)]
    pub request: Vec<u8>,
    /// Expected hello greeting.
    #[serde(skip)]
    pub greeting: Vec<u8>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Args {
    /// Checks the arguments and resolves the targets.
    pub fn into_plan(self) -> Result<Plan, String> {
        let mut targets = Vec::new();
        for t in &self.targets {
            let addr = t
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve target {t:?}: {e} (expected HOST:PORT)"))?
                .next()
                .ok_or_else(|| format!("target {t:?} resolves to no address"))?;
            targets.push(addr);
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        let mode = self.mode.unwrap_or(match self.protocol {
            ProtocolKind::Hello => Mode::Crr,
            _ => Mode::Rr,
        });
        match (self.protocol, mode) {
            (ProtocolKind::Hello, Mode::Rr | Mode::Stream) => return Err(
                "the hello server closes after each reply: use --mode crr (the default for hello)"
                    .into(),
            ),
            (ProtocolKind::Http, Mode::Stream) => {
                return Err("stream mode needs --protocol echo".into())
            }
            _ => {}
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!(
                    "--rate must be a positive number of requests per second (got {rate}); omit it for closed-loop max throughput"
                ));
            }
        }
        if self.requests == Some(0) {
            return Err("--requests must be at least 1".into());
        }
        if self.size == 0 {
            return Err("--size must be at least 1 byte".into());
        }
        let pipeline = self
            .pipeline
            .unwrap_or(if mode == Mode::Stream { 16 } else { 1 });
        if pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if mode == Mode::Crr && pipeline != 1 {
            return Err("--pipeline does not apply to crr (one request per connection)".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be above 0".into());
        }
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.threads.unwrap_or(available).min(self.connections);
        if threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        let host = self.targets[0].clone();
        let request = match self.protocol {
            ProtocolKind::Http => {
                let mut headers = self.headers.clone();
                if mode == Mode::Crr {
                    headers.push("Connection: close".into());
                }
                http_get(&host, &self.path, &headers)
            }
            ProtocolKind::Hello => b"hello".to_vec(),
            ProtocolKind::Echo => Vec::new(),
        };
        Ok(Plan {
            targets,
            protocol: self.protocol,
            mode,
            connections: self.connections,
            threads,
            pin: self.pin.map(|l| l.0).unwrap_or_default(),
            duration: self.duration,
            requests: self.requests,
            warmup: self.warmup,
            size: self.size,
            pipeline,
            rate: self.rate,
            verify: self.verify,
            timeout: self.timeout,
            request,
            greeting: self.greeting.into_bytes(),
        })
    }
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
                if a > b {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        Args::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?
            .into_plan()
    }

    #[test]
    fn defaults() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.mode, Mode::Rr);
        assert_eq!(p.connections, 100);
        assert_eq!(p.pipeline, 1);
        assert_eq!(p.size, 64);
        assert_eq!(p.targets, ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(plan(&["--protocol", "hello"]).unwrap().mode, Mode::Crr);
        assert_eq!(plan(&["--mode", "stream"]).unwrap().pipeline, 16);
    }

    #[test]
    fn bad_values_explain_themselves() {
        for (args, needle) in [
            (&["--rate", "0"][..], "--rate"),
            (&["--connections", "0"], "--connections"),
            (&["--protocol", "hello", "--mode", "rr"], "crr"),
            (&["--protocol", "http", "--mode", "stream"], "echo"),
            (&["--pipeline", "0"], "--pipeline"),
            (&["nowhere"], "nowhere"),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Ok(CpuList(vec![1])));
        assert_eq!(parse_cpu_list("0,2-3"), Ok(CpuList(vec![0, 2, 3])));
        assert_eq!(plan(&["--pin", "1-2"]).unwrap().pin, [1, 2]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }
}
