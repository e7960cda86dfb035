//! The checked server configuration: what every layer of the data path reads, built from the
//! command line (`crate::config::cli`) or directly by tests and benches.

pub mod cli;
pub mod file;
pub mod live;
pub use ringd_common::units;

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::access_log::AccessLogSpec;
use crate::connection::Limits;
use crate::protocol::{ProtocolKind, ProtocolSpec};
use crate::proxy::ProxyConfig;

/// Smallest receive buffer accepted: below this a request line would not fit.
pub const MIN_BUFFER_SIZE: usize = 64;

/// Most workers: each holds a thread, a listening socket and a ring, so a number far above
/// any CPU count is a typo that would end in a descriptor limit.
pub const MAX_THREADS: usize = 1024;

/// The I/O engine a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum EngineKind {
    /// tokio-uring runtime per worker: completion-based accept, recv and send with owned
    /// buffers.
    #[value(name = "tokio-uring")]
    TokioUring,
    /// Native io_uring: multishot accept and recv, provided buffer ring, DEFER_TASKRUN. The
    /// default: the least CPU per request of the three in every measured scenario.
    #[default]
    Uring,
    /// tokio current-thread runtime per worker (epoll readiness): the baseline.
    Epoll,
}

impl EngineKind {
    /// Every engine, for tests and comparisons.
    pub const ALL: [EngineKind; 3] = [EngineKind::Uring, EngineKind::TokioUring, EngineKind::Epoll];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::TokioUring => "tokio-uring",
            EngineKind::Uring => "uring",
            EngineKind::Epoll => "epoll",
        }
    }

    /// True for engines that need io_uring.
    pub fn uses_io_uring(self) -> bool {
        matches!(self, EngineKind::TokioUring | EngineKind::Uring)
    }
}

/// The `--engine` argument: an engine, or `auto` for the best one this kernel allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// Native io_uring: multishot accept and recv, provided buffer ring, DEFER_TASKRUN
    /// (Linux 6.1+).
    Uring,
    /// tokio-uring runtime per worker: completion-based accept, recv and send with owned
    /// buffers.
    #[value(name = "tokio-uring")]
    TokioUring,
    /// tokio current-thread runtime per worker (epoll readiness): the baseline.
    Epoll,
    /// uring where the kernel allows it, else tokio-uring, else epoll; one warning line at
    /// start names what was refused and why.
    Auto,
}

impl From<EngineKind> for EngineChoice {
    fn from(kind: EngineKind) -> Self {
        match kind {
            EngineKind::Uring => EngineChoice::Uring,
            EngineKind::TokioUring => EngineChoice::TokioUring,
            EngineKind::Epoll => EngineChoice::Epoll,
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the `uring` loop waits; the defaults are what measured best (see docs/engines.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringTuning {
    /// Completions to wait for at once (1: wake for each).
    pub wait_batch: u32,
    /// With `wait_batch` > 1: once one completion is there, wait at most this long (µs)
    /// for the rest of the batch.
    pub min_wait_us: u32,
    /// A kernel thread polls the submission queue (`IORING_SETUP_SQPOLL`).
    pub sqpoll: bool,
}

impl Default for UringTuning {
    fn default() -> Self {
        UringTuning {
            wait_batch: 1,
            min_wait_us: 50,
            sqpoll: false,
        }
    }
}

/// How listening sockets are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// Accept queue length per socket (capped by `net.core.somaxconn`).
    pub backlog: u32,
    /// SO_SNDBUF for every connection (set on the listener, inherited); `None`: the kernel's
    /// default with autotuning.
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF likewise; set before `listen` so that the window scale offered in the
    /// handshake fits it.
    pub recv_buffer: Option<usize>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 4096,
            send_buffer: None,
            recv_buffer: None,
        }
    }
}

/// Largest `--send-buffer` / `--recv-buffer` (the kernel caps them lower anyway, at
/// `net.core.wmem_max` / `rmem_max`).
const MAX_SOCKET_BUFFER: usize = 1 << 30;

/// What the server does with each connection it accepts.
#[derive(Debug, Clone)]
pub enum Service {
    /// Speak a protocol to it.
    Protocol(ProtocolSpec),
    /// Forward it to an upstream (L4 proxy).
    Proxy(ProxyConfig),
}

impl Service {
    /// The name on the command line and in logs and metrics: the protocol's, or `proxy`.
    pub fn name(&self) -> &'static str {
        match self {
            Service::Protocol(spec) => spec.kind.name(),
            Service::Proxy(_) => "proxy",
        }
    }

    /// The proxy configuration, in proxy mode.
    pub fn proxy(&self) -> Option<&ProxyConfig> {
        match self {
            Service::Proxy(p) => Some(p),
            Service::Protocol(_) => None,
        }
    }

    /// How a connection over `--max-connections` is turned away: with the protocol's words
    /// (`http`: a `503`); a proxied client is closed without a word, as echo does.
    pub fn rejection(&self) -> ProtocolSpec {
        match self {
            Service::Protocol(spec) => spec.clone(),
            Service::Proxy(_) => ProtocolSpec::with_defaults(ProtocolKind::Echo),
        }
    }

    /// True for `--protocol http`.
    pub fn is_http(&self) -> bool {
        matches!(self, Service::Protocol(s) if s.kind == ProtocolKind::Http)
    }
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every worker listens on (port 0: worker 0 picks one).
    pub listen: SocketAddr,
    /// What is done with each connection: a protocol and its responses, or the proxy.
    pub service: Service,
    /// How bytes move (with `--engine auto`, the engine it chose).
    pub engine: EngineKind,
    /// `--engine auto` only: the better engine this kernel refused and why, for the one
    /// warning line at start; `None` when nothing was refused.
    pub engine_refusal: Option<String>,
    /// Number of workers.
    pub threads: usize,
    /// CPUs the workers are pinned to, worker `i` on `cpus[i % len]`; empty: not pinned.
    pub cpus: Vec<usize>,
    /// Listening socket setup: backlog, and the socket buffer sizes connections inherit.
    pub listen_options: ListenOptions,
    /// Receive buffer size per read.
    pub buffer_size: usize,
    /// Provided receive buffers per worker (`uring`; a power of two).
    pub buffers: usize,
    /// How long a graceful shutdown may take before connections are cut.
    pub shutdown_timeout: Duration,
    /// Most connections open at once, across all workers (0: no limit).
    pub max_connections: usize,
    /// Close a connection after this long with no bytes either way (zero: never).
    pub idle_timeout: Duration,
    /// `http`: answer 408 and close if a request header takes longer than this (zero: never).
    pub header_timeout: Duration,
    /// Stop reading from a connection while more than this much of its output is unsent.
    pub max_pending_output: usize,
    /// `uring`: accept connections as direct descriptors (the ring's own file table).
    pub direct_descriptors: bool,
    /// `uring`: how the loop waits for completions.
    pub uring: UringTuning,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Where and how to write the access log, if at all.
    pub access_log: Option<AccessLogSpec>,
    /// A fault injected for tests of the worker lifecycle (`RINGD_TEST_FAULT`); `None` in
    /// normal operation.
    #[doc(hidden)]
    pub test_fault: Option<TestFault>,
}

/// A fault injected into one worker, so that tests can prove that a failing worker is seen:
/// set from the `RINGD_TEST_FAULT` environment variable (`panic-worker=N[@DELAY]`,
/// `fail-worker=N`). Not an operating option.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFault {
    /// Worker `worker` reports ready, then panics after `after` instead of serving.
    Panic {
        /// The worker index.
        worker: usize,
        /// How long after reporting ready.
        after: Duration,
    },
    /// Worker `worker` fails to start (its runtime "cannot be built").
    FailStart {
        /// The worker index.
        worker: usize,
    },
}

impl TestFault {
    /// The environment variable that sets it.
    pub const VAR: &'static str = "RINGD_TEST_FAULT";

    /// Parses `panic-worker=N[@DELAY]` or `fail-worker=N`.
    pub fn parse(s: &str) -> Result<TestFault, String> {
        let bad = || {
            format!(
                "{}={s}: expected panic-worker=N[@DELAY] or fail-worker=N",
                Self::VAR
            )
        };
        let (kind, arg) = s.split_once('=').ok_or_else(bad)?;
        let (worker, after) = arg.split_once('@').unwrap_or((arg, "0"));
        let worker = worker.parse().map_err(|_| bad())?;
        match kind {
            "panic-worker" => Ok(TestFault::Panic {
                worker,
                after: units::parse_duration(after).map_err(|_| bad())?,
            }),
            "fail-worker" if after == "0" => Ok(TestFault::FailStart { worker }),
            _ => Err(bad()),
        }
    }

    /// The worker it concerns.
    pub fn worker(self) -> usize {
        match self {
            TestFault::Panic { worker, .. } | TestFault::FailStart { worker } => worker,
        }
    }
}

impl Config {
    /// A configuration with the defaults, listening on `listen`, for tests and benches.
    pub fn new(listen: SocketAddr, protocol: ProtocolKind, engine: EngineKind) -> Self {
        Config {
            listen,
            service: Service::Protocol(ProtocolSpec::with_defaults(protocol)),
            engine,
            engine_refusal: None,
            threads: 1,
            cpus: Vec::new(),
            listen_options: ListenOptions::default(),
            buffer_size: 4096,
            buffers: 1024,
            shutdown_timeout: Duration::from_secs(5),
            max_connections: 0,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            max_pending_output: 64 * 1024,
            direct_descriptors: true,
            uring: UringTuning::default(),
            metrics: None,
            access_log: None,
            test_fault: None,
        }
    }

    /// The timeouts and the output bound every connection lives by.
    pub fn limits(&self) -> Limits {
        Limits::new(
            self.idle_timeout,
            self.header_timeout,
            self.shutdown_timeout,
            self.max_pending_output,
        )
    }

    /// Checks the values that the type does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 || self.threads > MAX_THREADS {
            return Err(format!("--threads must be from 1 to {MAX_THREADS}"));
        }
        if self.buffer_size < MIN_BUFFER_SIZE {
            return Err(format!(
                "--buffer-size must be at least {MIN_BUFFER_SIZE} bytes"
            ));
        }
        if self.buffer_size > u32::MAX as usize / 2 {
            return Err("--buffer-size must be below 2 GiB".into());
        }
        if !self.buffers.is_power_of_two() || self.buffers > 32768 {
            return Err("--buffers must be a power of two from 1 to 32768".into());
        }
        if self.max_pending_output < self.buffer_size {
            return Err("--max-pending-output must be at least --buffer-size".into());
        }
        for (name, size) in [
            ("--send-buffer", self.listen_options.send_buffer),
            ("--recv-buffer", self.listen_options.recv_buffer),
        ] {
            if size.is_some_and(|n| n == 0 || n > MAX_SOCKET_BUFFER) {
                return Err(format!("{name} must be from 1 byte to 1 GiB"));
            }
        }
        if self.uring.wait_batch > 1 && self.uring.min_wait_us == 0 {
            return Err(
                "--uring-min-wait must be above 0 with --uring-wait-batch above 1 (else every \
                 completion waits for a whole batch)"
                    .into(),
            );
        }
        if self.listen_options.backlog == 0 {
            return Err("--backlog must be at least 1".into());
        }
        Ok(())
    }
}

/// The CPUs this process may run on, in order (from its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_faults_parse() {
        assert_eq!(
            TestFault::parse("panic-worker=1@500ms"),
            Ok(TestFault::Panic {
                worker: 1,
                after: Duration::from_millis(500)
            })
        );
        assert_eq!(
            TestFault::parse("panic-worker=0"),
            Ok(TestFault::Panic {
                worker: 0,
                after: Duration::ZERO
            })
        );
        assert_eq!(
            TestFault::parse("fail-worker=2"),
            Ok(TestFault::FailStart { worker: 2 })
        );
        for bad in ["", "panic", "panic-worker=x", "fail-worker=1@1s", "oops=1"] {
            assert!(TestFault::parse(bad).is_err(), "{bad}");
        }
    }
}
