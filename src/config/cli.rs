//! The command line: clap derive arguments, turned into a checked [`Config`] before anything
//! starts. Sizes parse as `4KiB`, `1MB`, `512`; durations as `10s`, `500ms`, `1m`.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::Parser;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

use super::{allowed_cpus, Config, EngineChoice, EngineKind, Service, TestFault, UringTuning};
use crate::access_log::{AccessLogSpec, Format, Target};
use crate::config::ListenOptions;
use crate::protocol::{ProtocolKind, ProtocolSpec, DEFAULT_BODY, DEFAULT_GREETING};
use crate::proxy::sni::Fallback;
use crate::proxy::upstream::{MAX_UPSTREAMS, MAX_WEIGHT};
use crate::proxy::{
    Balance, HealthCheck, ProxyConfig, SendProxy, SniRoutes, UpstreamSpec, Upstreams,
};
use crate::tls::{CertPair, ServerTls};
use ringd_common::units::{parse_bytes, parse_duration};

/// `--protocol`: speak a protocol, or proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceArg {
    /// Send back every byte received, in order.
    Echo,
    /// Read one message, reply the greeting, close: the origin server.
    Hello,
    /// HTTP/1.1 plaintext with keep-alive and pipelining.
    Http,
    /// Forward each connection to an upstream (L4 proxy).
    Proxy,
}

const AFTER_HELP: &str = "\
Examples:
  ringd                                   # echo on 127.0.0.1:8080, all CPUs
  ringd --protocol http --engine epoll    # HTTP/1.1 on the tokio/epoll baseline
  ringd --protocol hello --threads 1      # the origin server: greet and close
  ringd --protocol proxy --listen 127.0.0.1:8000 --upstream 127.0.0.1:9001,127.0.0.1:9002
  ringd --protocol proxy --upstream 127.0.0.1:9001,weight=3 --upstream 127.0.0.1:9002,backup
  ringd --protocol proxy --route-sni a.example.com=127.0.0.1:9001,*.example.org=127.0.0.1:9002 \
        --upstream 127.0.0.1:9003        # by TLS name (SNI), TLS untouched; others to 9003
  ringd --protocol proxy --upstream 127.0.0.1:9001 --tls-cert site.pem --tls-key site.key
                                         # TLS from clients, plaintext to the upstream
  ringd --config /etc/ringd/ringd.toml    # every option from a file; flags override it
  ringd check-config ringd.toml           # OK (exit 0), or one line per problem (exit 2)

Signals:
  SIGTERM, SIGINT  drain: stop accepting, finish the connections, exit 0 (--shutdown-timeout)
  SIGHUP           reload --config: upstreams, SNI routes, balancing, health checks, timeouts
                   and limits apply to new connections; what needs new sockets or threads is
                   refused (SIGUSR2 applies it)
  SIGUSR2          live upgrade: start the executable at the path ringd was started from, with
                   the same arguments, on the same listening sockets; once it is ready, this
                   process stops accepting, drains and exits 0 (on failure it keeps serving)

A host name (--listen, --metrics, --upstream, --route-sni) is resolved once, at start (and --upstream at
each reload), to its first IPv4 address, else to its first IPv6 one.

Sockets passed by a service manager (systemd socket activation: LISTEN_FDS, LISTEN_PID) are
served instead of --listen. Logs go to stderr; RUST_LOG, a filter such as ringd=debug, overrides
--log-level unless empty; a level or filter that does not parse is refused.";

/// What `--version` prints after the name: the package version and the git commit built
/// (`unknown` without git; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RINGD_COMMIT"),
    ")"
);

/// `ringd check-config FILE`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Subcommand {
    /// Check a configuration file and exit: 0 and `OK`, or 2 and one line per problem.
    CheckConfig {
        /// The file to check.
        file: std::path::PathBuf,
    },
}

/// ringd: a per-core io_uring TCP server (echo, hello, HTTP/1.1) with an epoll baseline.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringd",
    version = VERSION,
    after_help = AFTER_HELP,
    disable_help_subcommand = true
)]
pub struct Args {
    /// Read the options from this TOML file (a key per option, named after its flag);
    /// flags given here override it. SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Subcommand>,

    /// Address to listen on, HOST:PORT (every worker binds it with SO_REUSEPORT; port 0
    /// picks one; `[::]:PORT` takes IPv4 connections too) [default: 127.0.0.1:8080]. Not with
    /// sockets passed by a service manager.
    #[arg(long, value_name = "HOST:PORT", value_parser = resolve)]
    pub listen: Option<SocketAddr>,

    /// Protocol to speak; `proxy` forwards each connection to an upstream (--upstream).
    #[arg(long, value_enum, default_value_t = ServiceArg::Echo)]
    pub protocol: ServiceArg,

    /// proxy: upstream servers, HOST:PORT[,OPTION…][,HOST:PORT…] (each name resolved once,
    /// at start or reload); options apply to the address before them: weight=N (1-256, a
    /// share of new connections), backup (used only while every other upstream is down),
    /// max-conns=N (most open at once; beyond, the next upstream or a refusal).
    #[arg(long, value_delimiter = ',')]
    pub upstream: Vec<String>,

    /// proxy: route TLS clients by the name their ClientHello asks for (SNI), without
    /// terminating TLS: NAME=HOST:PORT[,NAME=HOST:PORT…]; NAME may be *.example.com (any
    /// name under it; an exact name wins, then the longest). The ClientHello is read (up to
    /// 16 KiB, or --max-pending-output if smaller, within --header-timeout) and forwarded
    /// untouched. A name without a route
    /// goes to --upstream (which may then be left out: such clients are closed).
    #[arg(long, value_delimiter = ',', value_name = "NAME=HOST:PORT")]
    pub route_sni: Vec<String>,

    /// proxy with --route-sni: where a client goes whose first bytes are not a TLS
    /// ClientHello, or whose ClientHello has no name [default: default].
    #[arg(long, value_enum)]
    pub route_sni_fallback: Option<Fallback>,

    /// proxy: how an upstream is chosen for each connection.
    #[arg(long, value_enum, default_value_t = Balance::RoundRobin)]
    pub balance: Balance,

    /// proxy: how long a connect to an upstream may take before the next one is tried.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// proxy: how long an upstream that refused or timed out is skipped.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub upstream_down_for: Duration,

    /// proxy: check every upstream this often, off the workers (0: no active checks); an
    /// upstream that fails --check-fall checks in a row gets no new connection until it
    /// passes --check-rise in a row.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub check_interval: Duration,

    /// proxy: how long one health check may take (connect, send, reply).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub check_timeout: Duration,

    /// proxy: checks passed in a row that bring an upstream back up.
    #[arg(long, default_value_t = 2)]
    pub check_rise: u32,

    /// proxy: checks failed in a row that take an upstream down.
    #[arg(long, default_value_t = 3)]
    pub check_fall: u32,

    /// proxy: send this text once a check has connected (default: connect only).
    #[arg(long, value_name = "TEXT")]
    pub check_send: Option<String>,

    /// proxy: a check passes only if the reply begins with this text.
    #[arg(long, value_name = "TEXT")]
    pub check_expect: Option<String>,

    /// proxy: send the PROXY protocol header (v1 or v2) to the upstream first, so that it
    /// sees the client's address.
    #[arg(long, value_enum)]
    pub send_proxy: Option<SendProxy>,

    /// I/O engine: uring (native io_uring, Linux 6.1+), tokio-uring, epoll (the baseline), or
    /// auto (uring where the kernel allows it, else tokio-uring, else epoll, with a warning).
    #[arg(long, value_enum, default_value_t = EngineChoice::from(EngineKind::default()))]
    pub engine: EngineChoice,

    /// Worker threads, one runtime and one listener each [default: CPUs this process may use].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Pin worker i to the i-th allowed CPU (the default).
    #[arg(long, overrides_with = "no_pin")]
    pub pin: bool,

    /// Do not pin workers to CPUs.
    #[arg(long, overrides_with = "pin")]
    pub no_pin: bool,

    /// Listen backlog per worker socket (capped by net.core.somaxconn) [default: 4096; an
    /// inherited socket keeps its own unless this is given].
    #[arg(long)]
    pub backlog: Option<u32>,

    /// Socket send buffer of every connection (SO_SNDBUF on the listeners, inherited), e.g.
    /// 16KiB as on a real network link [default: the kernel's, autotuned].
    #[arg(long, value_parser = parse_bytes)]
    pub send_buffer: Option<usize>,

    /// Socket receive buffer of every connection (SO_RCVBUF on the listeners, inherited)
    /// [default: the kernel's, autotuned].
    #[arg(long, value_parser = parse_bytes)]
    pub recv_buffer: Option<usize>,

    /// Receive buffer size per read [default: 4KiB; 16KiB for --protocol proxy on the uring
    /// engine, where bulk transfers then take a quarter of the operations for the same CPU
    /// per small request].
    #[arg(long, value_parser = parse_bytes)]
    pub buffer_size: Option<usize>,

    /// Provided receive buffers per worker for the uring engine (a power of two); each is
    /// --buffer-size bytes and is held only while its bytes are in use.
    #[arg(long, default_value_t = 1024)]
    pub buffers: usize,

    /// Reply of the `hello` protocol.
    #[arg(long, default_value = DEFAULT_GREETING)]
    pub greeting: String,

    /// Body of `http` 200 responses.
    #[arg(long, default_value = DEFAULT_BODY)]
    pub http_body: String,

    /// Most connections open at once, across all workers (0: no limit); one more is
    /// accepted and closed at once (http: after a 503).
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,

    /// Close a connection after this long with no bytes either way (0: never).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// http: answer 408 and close when a request header takes longer than this to arrive,
    /// however slowly it trickles in; the first one's clock runs from the accept, and a
    /// connection that sends nothing by then is closed without a word (0: never).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Stop reading from a connection while more than this much of its output is unsent.
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes)]
    pub max_pending_output: usize,

    /// Terminate TLS with this PEM certificate chain (echo, hello, http; proxy: TLS from
    /// clients, plaintext to upstreams). Repeat with one --tls-key each: the certificate
    /// valid for the name a client asks for (SNI) serves it; the first one serves clients
    /// without SNI or with another name.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Vec<std::path::PathBuf>,

    /// The PEM private key of the --tls-cert in the same position.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Vec<std::path::PathBuf>,

    /// Close a TLS connection whose handshake is not done within this (0: never).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,

    /// uring: keep connections in the process's descriptor table instead of the ring's own
    /// (direct descriptors are the default; this is for comparison and debugging).
    #[arg(long)]
    pub no_direct_descriptors: bool,

    /// uring: wait for up to this many completions at once (Linux 6.12; 1: wake for each).
    #[arg(long, default_value_t = 1)]
    pub uring_wait_batch: u32,

    /// uring: with --uring-wait-batch above 1, how long to wait for the rest of a batch once
    /// one completion is there.
    #[arg(long, default_value = "50us", value_parser = parse_duration)]
    pub uring_min_wait: Duration,

    /// uring: a kernel thread polls the submission queue (IORING_SETUP_SQPOLL; it needs a
    /// CPU of its own to pay off).
    #[arg(long)]
    pub uring_sqpoll: bool,

    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "HOST:PORT", value_parser = resolve)]
    pub metrics: Option<SocketAddr>,

    /// Write one line per connection at its close to this file, or to standard output with
    /// `-` (client, listener, upstream, bytes each way, duration, close reason). Off by
    /// default; written by its own thread and reopened on SIGHUP (logrotate); when the
    /// writer falls behind, lines are dropped and counted, never waited for.
    #[arg(long, value_name = "FILE|-")]
    pub access_log: Option<String>,

    /// The access log's line format.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Json)]
    pub access_log_format: LogFormatArg,

    /// Access log records waiting for the writer, at most; when it falls further behind
    /// (a slow disk), records are dropped and counted
    /// (`ringd_access_log_lines_total{result="dropped"}`).
    #[arg(long, value_name = "RECORDS", default_value_t = crate::access_log::QUEUE)]
    pub access_log_queue: usize,

    /// How long SIGINT/SIGTERM waits for connections to finish before cutting them.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Write the pid of the process that serves to this file (replaced atomically; rewritten
    /// with the new pid on a live upgrade; removed at a final exit).
    #[arg(long)]
    pub pid_file: Option<std::path::PathBuf>,

    /// How long a live upgrade (SIGUSR2) waits for the new process to report ready before
    /// giving up and serving on.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub upgrade_timeout: Duration,

    /// Log level (off, error, warn, info, debug, trace), or levels by target such as
    /// warn,ringd::process::server=info; RUST_LOG takes precedence.
    #[arg(long, default_value = "info", value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: String,
}

/// How `--engine auto` becomes an engine: the best one this kernel allows, and the better
/// ones it refused and why. The process layer passes `engine::auto::pick`, which
/// probes the kernel; the configuration itself knows nothing of kernels.
pub type PickEngine = fn(&UringTuning) -> (EngineKind, Option<String>);

/// `--access-log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// One JSON object per line.
    Json,
    /// `key=value` pairs.
    Logfmt,
}

impl Args {
    /// Checks the arguments and builds the configuration.
    pub fn into_config(&self, pick: PickEngine) -> Result<Config, String> {
        let cpus = allowed_cpus();
        let threads = self.threads.unwrap_or(cpus.len());
        let pin = !self.no_pin;
        let mut service = self.service()?;
        self.add_tls(&mut service)?;
        let uring = UringTuning {
            wait_batch: self.uring_wait_batch.max(1),
            min_wait_us: u32::try_from(self.uring_min_wait.as_micros()).unwrap_or(u32::MAX),
            sqpoll: self.uring_sqpoll,
        };
        let (engine, engine_refusal) = match self.engine {
            EngineChoice::Uring => (EngineKind::Uring, None),
            EngineChoice::TokioUring => (EngineKind::TokioUring, None),
            EngineChoice::Epoll => (EngineKind::Epoll, None),
            EngineChoice::Auto => pick(&uring),
        };
        let proxy = matches!(service, Service::Proxy(_));
        if !proxy && !self.upstream.is_empty() {
            return Err("--upstream is for --protocol proxy".into());
        }
        if !proxy && !self.route_sni.is_empty() {
            return Err("--route-sni is for --protocol proxy".into());
        }
        if self.upgrade_timeout.is_zero() {
            // No successor is ready at once: every SIGUSR2 would fail.
            return Err("--upgrade-timeout must be above 0".into());
        }
        // The uring proxy receives into a shared pool, so larger buffers cost no memory per
        // idle pair and take a quarter of the operations on bulk transfers; the tokio pumps
        // hold one buffer per direction per pair, and keep 4 KiB.
        let large = proxy && engine == EngineKind::Uring && self.max_pending_output >= 16 * 1024;
        let buffer_size = self
            .buffer_size
            .unwrap_or(if large { 16 * 1024 } else { 4 * 1024 });
        let config = Config {
            listen: self.listen.unwrap_or(DEFAULT_LISTEN),
            service,
            engine,
            engine_refusal,
            threads,
            cpus: if pin { cpus } else { Vec::new() },
            listen_options: ListenOptions {
                backlog: self.backlog.unwrap_or(ListenOptions::default().backlog),
                send_buffer: self.send_buffer,
                recv_buffer: self.recv_buffer,
            },
            buffer_size,
            buffers: self.buffers,
            shutdown_timeout: self.shutdown_timeout,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            max_pending_output: self.max_pending_output,
            direct_descriptors: !self.no_direct_descriptors,
            uring,
            metrics: self.metrics,
            access_log: self.access_log_spec(),
            test_fault: match std::env::var(TestFault::VAR) {
                Ok(v) if !v.is_empty() => Some(TestFault::parse(&v)?),
                _ => None,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

impl Args {
    /// What is done with each connection.
    fn service(&self) -> Result<Service, String> {
        let protocol = |kind| {
            Service::Protocol(ProtocolSpec::new(
                kind,
                self.greeting.as_bytes(),
                self.http_body.as_bytes(),
            ))
        };
        Ok(match self.protocol {
            ServiceArg::Echo => protocol(ProtocolKind::Echo),
            ServiceArg::Hello => protocol(ProtocolKind::Hello),
            ServiceArg::Http => protocol(ProtocolKind::Http),
            ServiceArg::Proxy => Service::Proxy(self.proxy_config()?),
        })
    }

    /// `--access-log` and its options, if it is written.
    fn access_log_spec(&self) -> Option<AccessLogSpec> {
        self.access_log.as_deref().map(|t| AccessLogSpec {
            target: Target::parse(t),
            format: match self.access_log_format {
                LogFormatArg::Json => Format::Json,
                LogFormatArg::Logfmt => Format::Logfmt,
            },
            queue: self.access_log_queue.max(1),
        })
    }

    /// The proxy configuration: the upstreams resolved, once.
    /// `--tls-cert`/`--tls-key`: the files are read and checked here, before anything
    /// starts.
    fn add_tls(&self, service: &mut Service) -> Result<(), String> {
        if self.tls_cert.is_empty() && self.tls_key.is_empty() {
            return Ok(());
        }
        if self.tls_cert.len() != self.tls_key.len() {
            return Err(format!(
                "{} --tls-cert but {} --tls-key: give them in pairs",
                self.tls_cert.len(),
                self.tls_key.len()
            ));
        }
        let pairs: Vec<CertPair> = self
            .tls_cert
            .iter()
            .zip(&self.tls_key)
            .map(|(cert, key)| CertPair {
                cert: cert.clone(),
                key: key.clone(),
            })
            .collect();
        // ALPN `http/1.1` for http only: a proxy does not know what its upstream speaks.
        let http = matches!(service, Service::Protocol(s) if s.kind == ProtocolKind::Http);
        let tls =
            ServerTls::load(&pairs, http, self.tls_handshake_timeout).map_err(|e| e.to_string())?;
        match service {
            Service::Protocol(spec) => spec.tls = Some(tls),
            Service::Proxy(proxy) => proxy.tls = Some(tls),
        }
        Ok(())
    }

    fn proxy_config(&self) -> Result<ProxyConfig, String> {
        if self.upstream.is_empty() && self.route_sni.is_empty() {
            return Err("--protocol proxy needs --upstream HOST:PORT[,HOST:PORT…]".into());
        }
        let specs = upstream_specs(&self.upstream)?;
        if specs.len() > MAX_UPSTREAMS {
            return Err(format!("at most {MAX_UPSTREAMS} upstreams"));
        }
        if self.connect_timeout.is_zero() {
            return Err("--connect-timeout must be above 0".into());
        }
        let upstreams = Upstreams::with_specs(specs, self.balance, self.upstream_down_for);
        let sni = match self.route_sni.is_empty() {
            // The default said again is harmless; `close` would be a promise not kept.
            true if self.route_sni_fallback == Some(Fallback::Close) => {
                return Err("--route-sni-fallback close applies with --route-sni only".into())
            }
            true => None,
            false => Some(std::sync::Arc::new(SniRoutes::parse(
                &self.route_sni,
                self.route_sni_fallback.unwrap_or_default(),
                &upstreams,
                resolve,
            )?)),
        };
        Ok(ProxyConfig {
            upstreams: std::sync::Arc::new(upstreams),
            connect_timeout: self.connect_timeout,
            send_proxy: self.send_proxy,
            check: self.health_check()?,
            sni,
            tls: None,
        })
    }

    /// The active health checks, if `--check-interval` asks for them.
    fn health_check(&self) -> Result<Option<HealthCheck>, String> {
        if self.check_interval.is_zero() {
            return Ok(None);
        }
        if self.check_timeout.is_zero() || self.check_rise == 0 || self.check_fall == 0 {
            return Err("--check-timeout, --check-rise and --check-fall must be above 0".into());
        }
        // Each round checks every upstream at once, a thread and a connect each: rounds
        // closer than this are a load on the upstreams, not a faster verdict.
        if self.check_interval < std::time::Duration::from_millis(10) {
            return Err(format!(
                "--check-interval {:?} is below 10ms (0 turns the checks off)",
                self.check_interval
            ));
        }
        Ok(Some(HealthCheck {
            interval: self.check_interval,
            timeout: self.check_timeout,
            rise: self.check_rise,
            fall: self.check_fall,
            send: self.check_send.as_ref().map(|s| s.as_bytes().to_vec()),
            expect: self.check_expect.as_ref().map(|s| s.as_bytes().to_vec()),
        }))
    }
}

/// The upstreams of `--upstream`'s items (split at commas): each address followed by its
/// options (`weight=N`, `backup`, `max-conns=N`).
pub fn upstream_specs(items: &[String]) -> Result<Vec<UpstreamSpec>, String> {
    let mut specs: Vec<(UpstreamSpec, &str)> = Vec::new();
    for item in items.iter().map(|i| i.trim()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        let option = matches!(key, "weight" | "backup" | "max-conns" | "max_connections");
        if !option {
            specs.push((UpstreamSpec::plain(upstream_addr(item, &specs)?), item));
            continue;
        }
        let Some((last, given)) = specs.last_mut() else {
            return Err(format!(
                "--upstream {item}: an option comes after its HOST:PORT"
            ));
        };
        let number = |max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("--upstream {given},{item}: expected 1 to {max}"))
        };
        match key {
            "weight" => last.weight = number(u64::from(MAX_WEIGHT))? as u32,
            "backup" if value.is_empty() => last.backup = true,
            "backup" => return Err(format!("--upstream {given},{item}: backup takes no value")),
            _ => last.max_connections = number(u64::MAX)?,
        }
    }
    Ok(specs.into_iter().map(|(s, _)| s).collect())
}

/// The address of upstream `item`, checked against those listed before it.
fn upstream_addr(item: &str, before: &[(UpstreamSpec, &str)]) -> Result<SocketAddr, String> {
    let addr = resolve(item).map_err(|e| format!("--upstream {item}: {e}"))?;
    if addr.port() == 0 {
        return Err(format!(
            "--upstream {item}: port 0 cannot be connected to: give the upstream's port"
        ));
    }
    if addr.ip().is_unspecified() {
        return Err(format!(
            "--upstream {item}: {} means any address when listening, none to connect to: give the upstream's address",
            addr.ip()
        ));
    }
    // Each upstream is a set of metric series and a share of the balancing: a second entry
    // for one address would double both.
    if let Some((_, first)) = before.iter().find(|(s, _)| s.addr == addr) {
        return Err(format!(
            "--upstream {item}: {addr} is already listed as {first}: list each upstream once"
        ));
    }
    Ok(addr)
}

// The pure layers know nothing of clap: their choices become command-line values here.

impl clap::ValueEnum for Balance {
    fn value_variants<'a>() -> &'a [Self] {
        &[Balance::RoundRobin, Balance::LeastConn]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Balance::RoundRobin => {
                PossibleValue::new("round-robin").help("Each worker takes the upstreams in turn")
            }
            Balance::LeastConn => PossibleValue::new("least-conn")
                .help("The upstream with the fewest active connections (over all workers)"),
        })
    }
}

impl clap::ValueEnum for Fallback {
    fn value_variants<'a>() -> &'a [Self] {
        &[Fallback::Default, Fallback::Close]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Fallback::Default => {
                PossibleValue::new("default").help("To --upstream (closed if there is none)")
            }
            Fallback::Close => PossibleValue::new("close").help("Closed"),
        })
    }
}

impl clap::ValueEnum for SendProxy {
    fn value_variants<'a>() -> &'a [Self] {
        &[SendProxy::V1, SendProxy::V2]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            SendProxy::V1 => PossibleValue::new("v1").help("Version 1: one human-readable line"),
            SendProxy::V2 => PossibleValue::new("v2").help("Version 2: binary"),
        })
    }
}

/// Resolves `HOST:PORT`, a name or an IP address, to one address: the first IPv4 address
/// of a name, else its first one (the resolver may well list `::1` before `127.0.0.1` for
/// `localhost`, while most servers listen on IPv4 only).
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("{e} (expected HOST:PORT)"))?
        .collect();
    first_ipv4(&addrs).ok_or_else(|| "the name has no address".to_string())
}

/// The first IPv4 address of `addrs`, else the first.
fn first_ipv4(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
}

/// Checks `--log-level`: a filter in which every directive names a level, `LEVEL` or
/// `TARGET=LEVEL`. A filter also takes a bare target (all of its levels), which turns a
/// misspelt level such as `bogus` into a filter that logs nothing of ringd.
pub fn parse_log_level(s: &str) -> Result<String, String> {
    if s.split(',').all(|d| d.trim().is_empty()) {
        // An empty filter logs nothing, warnings included: `off` says so on purpose.
        return Err("an empty filter logs nothing: give a level, or off".into());
    }
    for directive in s.split(',').filter(|d| !d.is_empty()) {
        if !directive.contains('=') && directive.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "{directive} is not a level: use off, error, warn, info, debug or trace, \
                 or TARGET=LEVEL"
            ));
        }
    }
    EnvFilter::builder().parse(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// The log filter: `rust_log` (the value of `RUST_LOG`) unless it is unset or empty, else
/// `level`. A filter that does not parse is an error: tracing-subscriber's lossy parse would
/// drop it and log less than asked, or nothing.
pub fn log_filter(level: &str, rust_log: Option<&OsStr>) -> Result<EnvFilter, String> {
    match rust_log.filter(|v| !v.is_empty()) {
        Some(v) => {
            let v = v
                .to_str()
                .ok_or("RUST_LOG is not valid UTF-8: unset it or use --log-level")?;
            EnvFilter::builder().parse(v).map_err(|e| {
                format!("RUST_LOG={v}: {e} (try e.g. RUST_LOG=info or RUST_LOG=ringd=debug)")
            })
        }
        None => EnvFilter::builder()
            .parse(level)
            .map_err(|e| format!("--log-level {level}: {e}")),
    }
}

/// The address listened on when neither `--listen` nor inherited sockets say otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_closer_than_10ms_are_refused() {
        let config = |interval: &str| {
            Args::parse_from([
                "ringd",
                "--protocol",
                "proxy",
                "--upstream",
                "127.0.0.1:9",
                "--check-interval",
                interval,
            ])
            .into_config(crate::engine::auto::pick)
        };
        let err = config("1ms").unwrap_err();
        assert!(err.contains("below 10ms"), "{err}");
        assert!(config("10ms").is_ok());
        assert!(config("0").is_ok(), "0 turns them off");
    }

    #[test]
    fn defaults() {
        let c = Args::parse_from(["ringd"])
            .into_config(crate::engine::auto::pick)
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(matches!(&c.service, Service::Protocol(s) if s.kind == ProtocolKind::Echo));
        assert_eq!(c.buffer_size, 4096);
        let p = Args::parse_from(["ringd", "--protocol", "proxy", "--upstream", "127.0.0.1:1"])
            .into_config(crate::engine::auto::pick)
            .unwrap();
        assert_eq!(p.buffer_size, 16384);
        let small = ["ringd", "--protocol", "proxy", "--upstream", "127.0.0.1:1"];
        let e = Args::parse_from(small.iter().chain(&["--engine", "epoll"]))
            .into_config(crate::engine::auto::pick)
            .unwrap();
        assert_eq!(
            e.buffer_size, 4096,
            "a tokio pump holds its buffer per pair"
        );
        let m = Args::parse_from(small.iter().chain(&["--max-pending-output", "8KiB"]))
            .into_config(crate::engine::auto::pick)
            .unwrap();
        assert_eq!(m.buffer_size, 4096, "within a smaller --max-pending-output");
        assert_eq!(c.listen_options.backlog, 4096);
        assert_eq!(c.listen_options.send_buffer, None);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        assert!(c.threads >= 1);
        assert!(!c.cpus.is_empty());
    }

    #[test]
    fn names_resolve_to_their_first_ipv4_address() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(first_ipv4(&[v6, v4]), Some(v4));
        assert_eq!(first_ipv4(&[v6]), Some(v6));
        assert_eq!(first_ipv4(&[]), None);
        assert_eq!(resolve("localhost:80"), Ok(v4));
        assert_eq!(resolve("[::1]:80"), Ok(v6));
        assert!(resolve("localhost").is_err(), "no port");
        let args = [
            "ringd",
            "--listen",
            "localhost:1",
            "--metrics",
            "localhost:2",
        ];
        let c = Args::parse_from(args)
            .into_config(crate::engine::auto::pick)
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.metrics, Some("127.0.0.1:2".parse().unwrap()));
    }

    #[test]
    fn log_levels_and_filters() {
        let level = |s: &str| Args::try_parse_from(["ringd", "--log-level", s]);
        for ok in [
            "off",
            "trace",
            "DEBUG",
            "warn,ringd::process::server=info",
            "ringd=debug",
        ] {
            let args = level(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(log_filter(&args.log_level, None).is_ok(), "{ok}");
        }
        for bad in [
            "bogus",
            "warn,bogus",
            "ringd=bogus",
            "ringd=info=debug",
            "",
            ",",
        ] {
            assert!(level(bad).is_err(), "{bad}");
        }
        let env = |v: &str| log_filter("info", Some(OsStr::new(v)));
        assert!(env("").is_ok(), "an empty RUST_LOG is unset");
        assert!(env("ringd=debug,warn").is_ok());
        let e = env("ringd=bogus").unwrap_err();
        assert!(e.starts_with("RUST_LOG=ringd=bogus: "), "{e}");
    }

    #[test]
    fn no_pin_and_bad_values() {
        let c = Args::parse_from(["ringd", "--no-pin"])
            .into_config(crate::engine::auto::pick)
            .unwrap();
        assert!(c.cpus.is_empty());
        assert!(Args::parse_from(["ringd", "--threads", "0"])
            .into_config(crate::engine::auto::pick)
            .is_err());
        assert!(Args::parse_from(["ringd", "--buffer-size", "8"])
            .into_config(crate::engine::auto::pick)
            .is_err());
        assert!(Args::try_parse_from(["ringd", "--listen", "nope"]).is_err());
        let proxy = |args: &[&str]| {
            Args::parse_from([&["ringd"], args].concat()).into_config(crate::engine::auto::pick)
        };
        assert!(proxy(&["--protocol", "proxy"])
            .unwrap_err()
            .contains("--upstream"));
        assert!(proxy(&["--upstream", "127.0.0.1:1"])
            .unwrap_err()
            .contains("proxy"));
        assert!(proxy(&["--protocol", "proxy", "--upstream", "nowhere"]).is_err());
        let c = proxy(&[
            "--protocol",
            "proxy",
            "--upstream",
            "127.0.0.1:1,localhost:2",
        ])
        .unwrap();
        let p = c.service.proxy().expect("proxy mode");
        assert_eq!(p.upstreams.list().len(), 2);
        assert_eq!(p.upstreams.get(1).addr.port(), 2);
    }

    #[test]
    fn sni_routes() {
        let config = |args: &[&str]| {
            Args::try_parse_from([&["ringd"], args].concat())
                .map_err(|e| e.to_string())?
                .into_config(crate::engine::auto::pick)
        };
        let c = config(&[
            "--protocol",
            "proxy",
            "--route-sni",
            "a.test=127.0.0.1:1,*.b.test=localhost:2",
            "--route-sni",
            "c.test=127.0.0.1:1",
            "--route-sni-fallback",
            "close",
        ])
        .unwrap();
        let p = c.service.proxy().expect("proxy mode");
        assert!(p.sni.is_some());
        assert!(p.upstreams.is_empty(), "no --upstream: no default route");
        assert_eq!(
            p.upstreams.list().len(),
            2,
            "the routes' upstreams, once each"
        );
        let e = config(&["--route-sni", "a.test=127.0.0.1:1"]).unwrap_err();
        assert!(e.contains("--route-sni is for --protocol proxy"), "{e}");
        let e = config(&["--protocol", "proxy", "--route-sni", "a.test"]).unwrap_err();
        assert!(e.contains("NAME=HOST:PORT"), "{e}");
        let e = config(&["--protocol", "proxy", "--route-sni-fallback", "x"]).unwrap_err();
        assert!(e.contains("default") && e.contains("close"), "{e}");
        let alone = ["--protocol", "proxy", "--upstream", "127.0.0.1:1"];
        let e = config(&[&alone[..], &["--route-sni-fallback", "close"]].concat()).unwrap_err();
        assert!(e.contains("close applies with --route-sni only"), "{e}");
    }

    #[test]
    fn upstreams_are_checked() {
        let upstream = |list: &str| {
            Args::parse_from(["ringd", "--protocol", "proxy", "--upstream", list])
                .into_config(crate::engine::auto::pick)
        };
        for (list, says) in [
            ("127.0.0.1:1,127.0.0.1:1", "already listed as 127.0.0.1:1"),
            (
                "127.0.0.1:1,localhost:1",
                "--upstream localhost:1: 127.0.0.1:1 is already",
            ),
            ("[::1]:1,[::1]:1", "already listed"),
            ("127.0.0.1:0", "port 0"),
            ("0.0.0.0:1", "0.0.0.0 means any address"),
            ("[::]:1", ":: means any address"),
        ] {
            let e = upstream(list).unwrap_err();
            assert!(e.contains(says), "{list}: {e}");
        }
        assert!(upstream("127.0.0.1:1,127.0.0.1:2,[::1]:1").is_ok());
    }
}
