//! The command line checked into a [`Plan`] before any socket opens: every bad value, absurd
//! duration or rate, combination that makes no sense, CPU this process cannot use and
//! request set that would not fit in memory is one line that says what to change.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ringd_common::ProtocolKind;

use crate::args::{parse_status_set, Args, Engine, Mode, StatusSet};
use crate::client::http::{build_request, is_token, parse_header, RequestSpec};
use crate::client::{Spec, TlsClient};
use crate::source;
use crate::target::{parse_target, without_fragment, Target};

mod json;
pub mod start;
mod tls;

pub use tls::TlsPlan;

/// Longest measured duration.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Longest warm-up, and longest request timeout.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Highest open-loop rate, requests per second.
pub const MAX_RATE: f64 = 100e6;
/// Longest time between two requests of one connection in open loop.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Largest echo request or stream chunk.
pub const MAX_SIZE: usize = 1 << 30;
/// Most connections, requests in flight per connection, and threads.
const MAX_CONNECTIONS: usize = 1_000_000;
const MAX_PIPELINE: usize = 65_536;
const MAX_THREADS: usize = 1024;

/// A checked run plan. It is also the `config` of the JSON report, read back by `merge`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// The targets' addresses, resolved once before the run; connection `i` goes to target
    /// `i % targets.len()`.
    pub targets: Vec<SocketAddr>,
    /// The targets as given (HOST:PORT or URL).
    pub target_names: Vec<String>,
    /// Source addresses connections are bound to (empty: the kernel chooses).
    #[serde(default)]
    pub sources: Vec<IpAddr>,
    /// `--protocol`, or HTTP for URL targets.
    #[serde(
        serialize_with = "json::ser_display",
        deserialize_with = "json::de_protocol"
    )]
    pub protocol: ProtocolKind,
    /// `--mode`, or crr for hello and rr otherwise.
    pub mode: Mode,
    /// Over every thread; thread `t` of `n` owns connections `t`, `t + n`, ….
    pub connections: usize,
    /// Event-loop threads: one per CPU unless given, never more than connections.
    pub threads: usize,
    /// CPUs to pin threads to (empty: no pinning).
    pub pin: Vec<usize>,
    /// Measured duration, unless `requests` is set.
    #[serde(serialize_with = "json::ser_secs", deserialize_with = "json::de_secs")]
    pub duration: Duration,
    /// Measured request count, if bounded by count.
    pub requests: Option<u64>,
    /// Before the measured window: its completions are counted apart, in no figure.
    #[serde(serialize_with = "json::ser_secs", deserialize_with = "json::de_secs")]
    pub warmup: Duration,
    /// Echo request / stream chunk size.
    pub size: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Open-loop total rate, requests per second.
    pub rate: Option<f64>,
    /// `--verify`: every echoed byte, the greeting, or (HTTP) a 2xx status and the body
    /// length are checked.
    pub verify: bool,
    /// Per-request timeout, and how long the end of the run waits for responses.
    #[serde(serialize_with = "json::ser_secs", deserialize_with = "json::de_secs")]
    pub timeout: Duration,
    /// Failed requests, as a fraction of those that ended, above which the run fails.
    pub max_error_rate: f64,
    /// HTTP method (http only).
    pub method: Option<String>,
    /// HTTP path of the first target (http only).
    pub path: Option<String>,
    /// Statuses that count as success (http: `--expect-status`, or 2xx with --verify).
    #[serde(
        serialize_with = "json::ser_opt_display",
        deserialize_with = "json::de_status"
    )]
    pub expect_status: Option<StatusSet>,
    /// The request bytes for each target (http), or the hello message.
    #[serde(skip)]
    pub payloads: Vec<Vec<u8>>,
    /// HTTP `HEAD`: responses carry no body.
    #[serde(skip)]
    pub head_request: bool,
    /// Expected hello greeting.
    #[serde(skip)]
    pub greeting: Vec<u8>,
    /// When the run begins, warm-up first (seconds since the Unix epoch; null: at once).
    #[serde(default)]
    pub start_at_unix_s: Option<f64>,
    /// A client-bound run fails with exit status 4.
    #[serde(default)]
    pub require_headroom: bool,
    /// The event loop that ran.
    #[serde(default)]
    pub engine: Engine,
    /// TLS on every connection (`https://` targets or `--tls`); null: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsPlan>,
    /// What every TLS socket's handshake is made from, built from `tls`.
    #[serde(skip)]
    pub tls_client: Option<Arc<TlsClient>>,
    /// Open loop on io_uring: the event loop wakes at most once per this window.
    #[serde(
        default,
        serialize_with = "json::ser_secs",
        deserialize_with = "json::de_secs"
    )]
    pub batch_window: Duration,
}

impl Plan {
    /// What every connection's [`Session`](crate::client::Session) sends and checks.
    pub fn client_spec(&self) -> Spec<'_> {
        Spec {
            protocol: self.protocol,
            crr: self.mode == Mode::Crr,
            size: self.size as u64,
            verify: self.verify,
            payloads: &self.payloads,
            greeting: &self.greeting,
            expect_status: self.expect_status.as_ref(),
            tls: self.tls_client.as_deref(),
        }
    }

    /// Open loop: nanoseconds between two requests of one connection.
    pub fn interval_ns(&self) -> Option<u64> {
        self.rate
            .map(|rate| ((self.connections as f64 / rate) * 1e9).max(1.0) as u64)
    }
}

/// `--engine`, or io_uring when this kernel lets a ring be set up (else epoll, with one line
/// on stderr saying why). io_uring asked for and refused is an error.
fn checked_engine(asked: Option<Engine>) -> Result<Engine, String> {
    if asked == Some(Engine::Epoll) {
        return Ok(Engine::Epoll);
    }
    let why = match ringd_ring::setup::check(false) {
        Ok(()) => return Ok(Engine::Uring),
        Err(ringd_ring::SetupError::Missing(what)) => format!("the kernel lacks {what}"),
        Err(ringd_ring::SetupError::Os(e)) => format!("setting up a ring failed: {e}"),
    };
    match asked {
        None => {
            eprintln!("loadgen: io_uring unavailable ({why}); using epoll");
            Ok(Engine::Epoll)
        }
        Some(_) => Err(format!("--engine uring: {why}")),
    }
}

impl Args {
    /// Checks the arguments and resolves the targets. The checks run in a fixed order, so
    /// that of several mistakes the same one is always reported.
    pub fn into_plan(self) -> Result<Plan, String> {
        let targets: Vec<Target> = self
            .targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<_, _>>()?;
        let sources = source::parse_pools(&self.sources)?;
        let addrs: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
        source::check(&sources, &addrs)?;
        let protocol = self.checked_protocol(&targets)?;
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!(
                "--connections must be between 1 and {MAX_CONNECTIONS} (got {})",
                self.connections
            ));
        }
        let mode = self.mode.unwrap_or(match protocol {
            ProtocolKind::Hello => Mode::Crr,
            _ => Mode::Rr,
        });
        check_mode(protocol, mode)?;
        self.check_http_only(protocol)?;
        self.check_times()?;
        self.check_sizes()?;
        let pipeline = self.checked_pipeline(mode)?;
        let threads = self.checked_threads()?;
        let pin = self.pin.clone().map(|l| l.0).unwrap_or_default();
        check_pin(&pin)?;
        let requests = self.checked_requests(protocol, &targets, mode)?;
        let expect_status = match &self.expect_status {
            Some(s) => Some(parse_status_set(s)?),
            None if self.verify && protocol == ProtocolKind::Http => Some(StatusSet::success()),
            None => None,
        };
        // Each request in flight holds its bookkeeping, and for HTTP and hello its bytes
        // until written (echo bytes come from a shared table).
        let per_request = requests.payloads.iter().map(Vec::len).max().unwrap_or(0) as u64 + 64;
        check_memory(per_request * pipeline as u64 * self.connections as u64)?;
        let (tls, tls_client) = self.checked_tls(&targets, protocol)?.unzip();
        let engine = checked_engine(self.engine)?;
        let start_at_unix_s = self
            .start_at
            .as_deref()
            .map(|s| start::resolve(s, std::time::SystemTime::now()))
            .transpose()?;
        Ok(Plan {
            targets: addrs,
            sources,
            target_names: targets.iter().map(|t| t.name.clone()).collect(),
            protocol,
            mode,
            connections: self.connections,
            threads,
            pin,
            duration: self.duration,
            requests: self.requests,
            warmup: self.warmup,
            size: self.size,
            pipeline,
            rate: self.rate,
            verify: self.verify,
            timeout: self.timeout,
            max_error_rate: self.max_error_rate,
            method: requests.method,
            path: requests.path,
            expect_status,
            payloads: requests.payloads,
            head_request: requests.head,
            greeting: self.greeting.into_bytes(),
            start_at_unix_s,
            require_headroom: self.require_headroom,
            engine,
            tls,
            tls_client,
            batch_window: self.batch_window,
        })
    }

    /// `--protocol`, or HTTP for URL targets and echo otherwise; a URL with another
    /// protocol is refused.
    fn checked_protocol(&self, targets: &[Target]) -> Result<ProtocolKind, String> {
        let has_url = targets.iter().any(Target::is_url);
        match (self.protocol, has_url) {
            (Some(p), true) if p != ProtocolKind::Http => Err(format!(
                "URL targets speak HTTP: drop --protocol {p} or give the target as HOST:PORT"
            )),
            (Some(p), _) => Ok(p),
            (None, true) => Ok(ProtocolKind::Http),
            (None, false) => Ok(ProtocolKind::Echo),
        }
    }

    /// The HTTP options are refused when the run does not speak HTTP.
    fn check_http_only(&self, protocol: ProtocolKind) -> Result<(), String> {
        let http_only = [
            ("--path", self.path.is_some()),
            ("--method", self.method.is_some()),
            ("--header", !self.headers.is_empty()),
            ("--body", self.body.is_some()),
            ("--body-file", self.body_file.is_some()),
            ("--expect-status", self.expect_status.is_some()),
        ];
        if protocol == ProtocolKind::Http {
            return Ok(());
        }
        match http_only.iter().find(|(_, given)| *given) {
            Some((name, _)) => Err(format!(
                "{name} applies to HTTP only (this run speaks {protocol}; add --protocol http)"
            )),
            None => Ok(()),
        }
    }

    /// `--requests` and `--size` within their bounds.
    fn check_sizes(&self) -> Result<(), String> {
        if self.requests == Some(0) {
            return Err("--requests must be at least 1".into());
        }
        if !(1..=MAX_SIZE).contains(&self.size) {
            return Err(format!(
                "--size must be between 1 byte and 1 GiB (got {})",
                self.size
            ));
        }
        Ok(())
    }

    /// `--pipeline`, by default 16 in stream mode and 1 otherwise; crr takes only 1.
    fn checked_pipeline(&self, mode: Mode) -> Result<usize, String> {
        let pipeline = self
            .pipeline
            .unwrap_or(if mode == Mode::Stream { 16 } else { 1 });
        if !(1..=MAX_PIPELINE).contains(&pipeline) {
            return Err(format!(
                "--pipeline must be between 1 and {MAX_PIPELINE} (got {pipeline})"
            ));
        }
        if mode == Mode::Crr && pipeline != 1 {
            return Err("--pipeline does not apply to crr (one request per connection)".into());
        }
        Ok(pipeline)
    }

    /// `--threads`, by default one per CPU; never more than there are connections.
    fn checked_threads(&self) -> Result<usize, String> {
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self
            .threads
            .unwrap_or(available.min(MAX_THREADS))
            .min(self.connections);
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(format!("--threads must be between 1 and {MAX_THREADS}"));
        }
        Ok(threads)
    }

    /// What each target is sent: HTTP requests, the hello message, or nothing fixed (echo
    /// bytes come from the pattern table).
    fn checked_requests(
        &self,
        protocol: ProtocolKind,
        targets: &[Target],
        mode: Mode,
    ) -> Result<Requests, String> {
        Ok(match protocol {
            ProtocolKind::Http => {
                let (payloads, method, path) = self.http_requests(targets, mode)?;
                Requests {
                    payloads,
                    head: method == "HEAD",
                    method: Some(method),
                    path: Some(path),
                }
            }
            ProtocolKind::Hello => Requests {
                payloads: vec![b"hello".to_vec(); targets.len()],
                method: None,
                path: None,
                head: false,
            },
            ProtocolKind::Echo => Requests {
                payloads: vec![Vec::new(); targets.len()],
                method: None,
                path: None,
                head: false,
            },
        })
    }

    fn check_times(&self) -> Result<(), String> {
        if self.requests.is_none() && (self.duration.is_zero() || self.duration > MAX_DURATION) {
            return Err(format!(
                "--duration must be above 0 and at most 24h (got {:?})",
                self.duration
            ));
        }
        if self.warmup > MAX_WAIT {
            return Err(format!(
                "--warmup must be at most 1h (got {:?})",
                self.warmup
            ));
        }
        if self.timeout.is_zero() || self.timeout > MAX_WAIT {
            return Err(format!(
                "--timeout must be above 0 and at most 1h (got {:?})",
                self.timeout
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
                return Err(format!(
                    "--rate must be a number of requests per second above 0 and at most 100M (got {rate}); omit it for closed-loop max throughput"
                ));
            }
            let interval = self.connections as f64 / rate;
            if interval > MAX_INTERVAL.as_secs_f64() {
                return Err(format!(
                    "--rate {rate} over {} connections is one request per connection every {interval:.0} s: raise --rate to at least {:.3} or lower --connections",
                    self.connections,
                    self.connections as f64 / MAX_INTERVAL.as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    /// The request for each target, the method and the first target's path.
    fn http_requests(
        &self,
        targets: &[Target],
        mode: Mode,
    ) -> Result<(Vec<Vec<u8>>, String, String), String> {
        let method = self.method.clone().unwrap_or_else(|| "GET".into());
        if !is_token(&method) {
            return Err(format!(
                "bad --method {method:?}: letters such as GET, POST or HEAD"
            ));
        }
        let user_path = self.path.as_deref().map(without_fragment);
        if let Some(p) = user_path {
            check_path(p)?;
        }
        let headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<_, _>>()?;
        let body = match (&self.body, &self.body_file) {
            (Some(b), _) => Some(b.clone().into_bytes()),
            (None, Some(f)) => {
                Some(std::fs::read(f).map_err(|e| format!("--body-file {}: {e}", f.display()))?)
            }
            (None, None) => None,
        };
        let payloads = targets
            .iter()
            .map(|t| {
                let path = user_path.or(t.path.as_deref()).unwrap_or("/");
                build_request(&RequestSpec {
                    method: &method,
                    path,
                    host: &t.host,
                    headers: &headers,
                    body: body.as_deref(),
                    close: mode == Mode::Crr,
                })
                .map_err(|e| format!("-H: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let path = user_path
            .or(targets[0].path.as_deref())
            .unwrap_or("/")
            .to_string();
        Ok((payloads, method, path))
    }
}

/// The requests of a plan, as [`Args::into_plan`] builds them.
struct Requests {
    /// One per target, in target order ([`Plan::payloads`]).
    payloads: Vec<Vec<u8>>,
    /// HTTP only.
    method: Option<String>,
    /// HTTP only: the first target's.
    path: Option<String>,
    /// A `HEAD` request: responses carry no body.
    head: bool,
}

/// Rejects the mode × protocol combinations that make no sense.
fn check_mode(protocol: ProtocolKind, mode: Mode) -> Result<(), String> {
    match (protocol, mode) {
        (ProtocolKind::Hello, Mode::Rr | Mode::Stream) => Err(format!(
            "--mode {} does not fit hello: the server closes after each reply; use --mode crr (the default for hello)",
            mode.name()
        )),
        (ProtocolKind::Http, Mode::Stream) => Err(
            "--mode stream is bulk echo: it needs --protocol echo (for HTTP use rr or crr)".into(),
        ),
        _ => Ok(()),
    }
}

fn check_path(p: &str) -> Result<(), String> {
    if !(p.starts_with('/') || p == "*") || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "bad --path {p:?}: it starts with / and has no spaces (encode them as %20)"
        ));
    }
    Ok(())
}

/// Every CPU in `--pin` must be one this process may run on.
fn check_pin(pin: &[usize]) -> Result<(), String> {
    if pin.is_empty() {
        return Ok(());
    }
    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if let Some(cpu) = pin.iter().find(|c| !allowed.contains(c)) {
        return Err(format!(
            "--pin: CPU {cpu} is not one this process can use (allowed: {})",
            cpu_ranges(&allowed)
        ));
    }
    Ok(())
}

/// `0-3,6` for a sorted list of CPUs.
fn cpu_ranges(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

/// The request bytes queued for sending must fit comfortably in the memory there is.
fn check_memory(need: u64) -> Result<(), String> {
    let Some(avail) = memory_available() else {
        return Ok(());
    };
    if need > avail / 2 {
        return Err(format!(
            "the requests in flight would need {} of memory ({} available): lower --connections, --pipeline or the body size",
            human_bytes(need),
            human_bytes(avail)
        ));
    }
    Ok(())
}

/// Memory this process can still use: the smaller of MemAvailable and RLIMIT_AS.
fn memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let avail = meminfo.as_deref().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let as_limit = (unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY)
        .then_some(lim.rlim_cur);
    match (avail, as_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `1.5 GiB` and the like.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        // clap's own errors end in a "For more information" hint; the line that says
        // what is wrong is the first.
        Args::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
            .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())?
            .into_plan()
    }

    #[test]
    fn defaults() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.protocol, ProtocolKind::Echo);
        assert_eq!(p.mode, Mode::Rr);
        assert_eq!(p.connections, 100);
        assert_eq!(p.pipeline, 1);
        assert_eq!(p.size, 64);
        assert_eq!(p.max_error_rate, 0.01);
        assert_eq!(p.targets, ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(plan(&["--protocol", "hello"]).unwrap().mode, Mode::Crr);
        assert_eq!(plan(&["--mode", "stream"]).unwrap().pipeline, 16);
        assert_eq!(plan(&["--pin", "0"]).unwrap().pin, [0]);
    }

    #[test]
    fn source_pools_add_up_without_repeats() {
        assert!(plan(&[]).unwrap().sources.is_empty());
        let p = plan(&[
            "--source",
            "127.0.0.2-127.0.0.3",
            "--source",
            "127.0.0.3,127.0.0.4",
        ])
        .unwrap();
        let want: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(p.sources, want);
    }

    #[test]
    fn urls_give_protocol_host_and_path() {
        let p = plan(&["http://127.0.0.1:9/x?y", "-H", "host: example.com"]).unwrap();
        assert_eq!(p.protocol, ProtocolKind::Http);
        assert_eq!(p.path.as_deref(), Some("/x?y"));
        let req = String::from_utf8(p.payloads[0].clone()).unwrap();
        assert_eq!(req, "GET /x?y HTTP/1.1\r\nhost: example.com\r\n\r\n");
        let p = plan(&[
            "http://127.0.0.1:9/",
            "--path",
            "/p",
            "-X",
            "HEAD",
            "--mode",
            "crr",
        ])
        .unwrap();
        let req = String::from_utf8(p.payloads[0].clone()).unwrap();
        assert_eq!(
            req,
            "HEAD /p HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n"
        );
        assert!(p.head_request);
        // A fragment is never sent, from a URL or from --path.
        for (args, path) in [
            (&["http://127.0.0.1:9/x?y#frag"][..], "/x?y"),
            (&["http://127.0.0.1:9#frag"], "/"),
            (&["http://127.0.0.1:9/x#f", "--path", "/p?q#f"], "/p?q"),
        ] {
            let p = plan(args).unwrap();
            let req = String::from_utf8(p.payloads[0].clone()).unwrap();
            assert_eq!(
                req,
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
            );
            assert_eq!(p.path.as_deref(), Some(path));
        }
        let p = plan(&["--protocol", "http", "-X", "POST", "--body", "hi"]).unwrap();
        assert!(String::from_utf8(p.payloads[0].clone())
            .unwrap()
            .ends_with("Content-Length: 2\r\n\r\nhi"));
        assert_eq!(
            plan(&["--protocol", "http", "--verify"])
                .unwrap()
                .expect_status,
            Some(StatusSet::success())
        );
        assert_eq!(plan(&["--protocol", "http"]).unwrap().expect_status, None);
    }

    #[test]
    fn bad_values_explain_themselves() {
        for (args, needle) in [
            (&["--rate", "0"][..], "--rate"),
            (&["--rate", "1e-300"], "--rate"),
            (&["--rate", "inf"], "--rate"),
            (&["--rate", "1e12"], "--rate"),
            (&["--connections", "0"], "--connections"),
            (&["--protocol", "hello", "--mode", "rr"], "crr"),
            (&["--protocol", "hello", "--mode", "stream"], "crr"),
            (&["--protocol", "http", "--mode", "stream"], "echo"),
            (&["--mode", "crr", "--pipeline", "2"], "crr"),
            (&["--pipeline", "0"], "--pipeline"),
            (&["--size", "0"], "--size"),
            (&["--size", "2GiB"], "--size"),
            (&["--duration", "0"], "--duration"),
            (&["--duration", "1000d"], "--duration"),
            (&["--timeout", "0"], "--timeout"),
            (&["--warmup", "2h"], "--warmup"),
            (&["--requests", "0"], "--requests"),
            (&["--pin", "4095"], "CPU 4095"),
            (&["--path", "/x"], "HTTP only"),
            (&["-H", "X: y"], "HTTP only"),
            (&["--protocol", "http", "-H", "nocolon"], "Name: value"),
            (&["--protocol", "http", "-X", "G T"], "--method"),
            (&["--protocol", "http", "--path", "x"], "--path"),
            (
                &["--protocol", "http", "--expect-status", "abc"],
                "--expect-status",
            ),
            (
                &["--protocol", "http", "--body-file", "/nonexistent/x"],
                "--body-file",
            ),
            (&["http://127.0.0.1:1/", "--protocol", "echo"], "URL"),
            (
                &["http://127.0.0.1:1/", "-H", "Host: a", "-H", "HOST: a"],
                "'Host: a' and 'HOST: a'",
            ),
            (
                &[
                    "http://127.0.0.1:1/",
                    "--body",
                    "hello",
                    "-H",
                    "content-length: 3",
                ],
                "'content-length: 3' disagrees with the body's length (5 bytes)",
            ),
            (
                &[
                    "http://127.0.0.1:1/",
                    "--body",
                    "",
                    "-H",
                    "Transfer-Encoding: chunked",
                ],
                "'Transfer-Encoding: chunked' with --body",
            ),
            (&["nowhere"], "nowhere"),
            (&["--source", "203.0.113.7"], "--source 203.0.113.7"),
            (&["--source", "::1"], "IPv6"),
            (&["--source", "127.0.0.2-x"], "--source"),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        }
        // --duration 0 is fine when a count bounds the run.
        assert!(plan(&["-d", "0", "-n", "10"]).is_ok());
    }

    #[test]
    fn requests_that_would_not_fit_in_memory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body");
        std::fs::write(&body, vec![b'x'; 1 << 20]).unwrap();
        let body = body.to_str().unwrap();
        let ok = ["--protocol", "http", "--body-file", body, "-c", "2"];
        assert!(plan(&ok).is_ok());
        let huge = [
            "--protocol",
            "http",
            "--body-file",
            body,
            "-c",
            "1000000",
            "--pipeline",
            "65536",
        ];
        let e = plan(&huge).unwrap_err();
        assert!(e.contains("memory"), "{e}");
    }

    #[test]
    fn cpu_ranges_read_well() {
        assert_eq!(cpu_ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(cpu_ranges(&[]), "none");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
