//! Engines: how bytes move between sockets and connections. Each engine runs one worker's
//! event loop on its own thread: accept on the worker's listener, drive each connection's
//! [`crate::connection::Conn`], and drain on shutdown. They share everything above and below.

pub mod epoll;
pub mod tokio_uring;
pub mod uring;

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::connection::WorkerStats;
use crate::error::Error;

/// The I/O engine a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum EngineKind {
    /// tokio-uring runtime per worker: completion-based accept, recv and send with owned
    /// buffers.
    #[default]
    #[value(name = "tokio-uring")]
    TokioUring,
    /// Native io_uring: multishot accept and recv, provided buffer ring, DEFER_TASKRUN.
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

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a worker's event loop is given.
#[derive(Debug)]
pub struct WorkerCtx {
    /// Worker index.
    pub id: usize,
    /// This worker's SO_REUSEPORT listener.
    pub listener: std::net::TcpListener,
    /// The server configuration.
    pub config: Arc<Config>,
    /// Becomes true when the server should drain and stop.
    pub drain: tokio::sync::watch::Receiver<bool>,
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
}

/// Runs a worker's event loop until it has drained. `ready` is told once whether the runtime
/// could be built, before any connection is accepted.
pub fn run(ctx: WorkerCtx, ready: mpsc::Sender<Result<(), Error>>) -> io::Result<()> {
    match ctx.config.engine {
        EngineKind::TokioUring => tokio_uring::run(ctx, ready),
        EngineKind::Uring => uring::run(ctx, ready),
        EngineKind::Epoll => epoll::run(ctx, ready),
    }
}

/// Reports a runtime build result to the starter; returns the runtime if it was built.
fn report_ready<T>(
    ready: &mpsc::Sender<Result<(), Error>>,
    id: usize,
    engine: EngineKind,
    built: io::Result<T>,
) -> Option<T> {
    match built {
        Ok(rt) => {
            let _ = ready.send(Ok(()));
            Some(rt)
        }
        Err(source) => {
            let err = if engine.uses_io_uring() {
                crate::probe::explain(source)
            } else {
                Error::Runtime {
                    worker: id,
                    engine: engine.name(),
                    err: source,
                }
            };
            let _ = ready.send(Err(err));
            None
        }
    }
}

/// How long to stop accepting after an accept error; `None` for errors that concern only
/// the one connection being accepted (it is skipped).
pub(crate) fn accept_pause(err: &io::Error, consecutive: u32) -> Option<Duration> {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            let ms = 10u64.saturating_mul(1 << consecutive.min(6)).min(500);
            Some(Duration::from_millis(ms))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_pause_grows_and_caps() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(accept_pause(&emfile, 0), Some(Duration::from_millis(10)));
        assert_eq!(accept_pause(&emfile, 2), Some(Duration::from_millis(40)));
        assert_eq!(accept_pause(&emfile, 30), Some(Duration::from_millis(500)));
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(accept_pause(&aborted, 5), None);
    }
}
