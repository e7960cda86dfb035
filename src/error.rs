//! Errors that stop the server from starting or running. Each message says what happened and
//! what to do about it; `main` prints it on one line (`{:#}`) and exits non-zero.

use std::io;
use std::net::SocketAddr;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address is taken by another socket.
    #[error("{addr} is already in use: stop the process holding it or choose another port with --listen")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The listen address cannot be bound for another reason.
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The system error.
        err: io::Error,
    },
    /// io_uring cannot be used on this host.
    #[error("io_uring is unavailable: {reason}; use --engine epoll")]
    IoUringUnavailable {
        /// What the probe found.
        reason: String,
    },
    /// The kernel lacks something the `uring` engine needs.
    #[error("the uring engine needs {missing}, which this kernel ({kernel}) lacks: use --engine tokio-uring or --engine epoll")]
    UringFeature {
        /// What is missing.
        missing: String,
        /// The kernel release.
        kernel: String,
    },
    /// A worker's runtime could not be created.
    #[error("worker {worker} could not start its {engine} runtime: {err}")]
    Runtime {
        /// The worker index.
        worker: usize,
        /// The engine name.
        engine: &'static str,
        /// The system error.
        err: io::Error,
    },
    /// A worker thread could not be spawned.
    #[error("cannot spawn worker thread: {0}")]
    Spawn(io::Error),
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// Command-line arguments that cannot be used: the binary exits with code 2, as for
    /// arguments clap refuses.
    #[error("{0}")]
    Usage(String),
    /// Inherited sockets (socket activation, a live upgrade) that cannot be used.
    #[error("{0}")]
    Inherited(String),
    /// A worker failed or panicked; the others were drained.
    #[error("worker {worker} {cause}")]
    Worker {
        /// The worker index.
        worker: usize,
        /// What happened, e.g. `panicked at src/x.rs:1:2: message`.
        cause: String,
    },
    /// The pid file cannot be written.
    #[error("cannot write the pid file {path}: {err}")]
    PidFile {
        /// The path asked for.
        path: std::path::PathBuf,
        /// The system error.
        err: io::Error,
    },
    /// The signal handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}
