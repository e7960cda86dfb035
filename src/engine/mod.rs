//! Engines: how bytes move between sockets and connections. Each engine runs one worker's
//! event loop on its own thread: accept on the worker's listener, drive each connection's
//! [`crate::connection::Conn`], and drain on shutdown. They share everything above and below.

pub mod epoll;
pub mod tokio_uring;
pub mod uring;

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::config::Config;
use crate::connection::{CloseReason, WorkerStats};
use crate::error::Error;
use crate::protocol::{error_response, ErrorStatus};

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
    /// Says when to stop accepting, and whether the listeners must be left to a successor.
    pub drain: crate::shutdown::Watch,
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
    /// The process-wide connection limit.
    pub limit: Arc<Limit>,
    /// Other workers accept on the same socket (one inherited socket served by all): an
    /// engine must then accept so that the kernel spreads connections over them.
    pub shared_listener: bool,
}

/// `--max-connections`, shared by all workers: one counter for the whole process, so the
/// limit holds however the kernel spreads connections over the workers.
#[derive(Debug, Default)]
pub struct Limit {
    /// The limit (0: none).
    max: usize,
    /// Connections admitted and not yet closed.
    live: AtomicUsize,
}

impl Limit {
    /// A limit of `max` connections (0: none).
    pub fn new(max: usize) -> Self {
        Limit {
            max,
            live: AtomicUsize::new(0),
        }
    }

    /// Takes a place for a new connection; false when the limit is reached.
    pub fn try_admit(&self) -> bool {
        if self.max == 0 {
            return true;
        }
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back the place of a closed connection.
    pub fn release(&self) {
        if self.max != 0 {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Turns away a connection over the limit: HTTP gets a `503` first. The caller closes it.
pub(crate) fn reject(fd: RawFd, http: bool, stats: &WorkerStats) {
    WorkerStats::inc(&stats.rejected);
    if http {
        send_status(fd, ErrorStatus::Unavailable);
    }
}

/// Ends a connection the sweeper found past a timeout (see `Registry::sweep`): a `408`
/// first for a header timeout, then a shutdown so that its pending read completes. The
/// connection is waiting to read then, so nothing else is writing to it.
pub(crate) fn end_timed_out(fd: RawFd, reason: CloseReason) {
    if reason == CloseReason::HeaderTimeout {
        send_status(fd, ErrorStatus::RequestTimeout);
    }
    shut(fd);
}

/// Sends a small error response without blocking.
fn send_status(fd: RawFd, status: ErrorStatus) {
    let resp = error_response(status);
    // SAFETY: a send from a valid buffer on an open socket; never blocks (MSG_DONTWAIT),
    // and the few bytes fit in the socket's (fresh or idle) send buffer.
    unsafe {
        libc::send(
            fd,
            resp.as_ptr().cast(),
            resp.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// Shuts a socket down both ways so that an operation waiting on it completes: a read with
/// EOF, an accept with EINVAL. A connection's data already queued to send still goes out
/// before the FIN.
pub(crate) fn shut(fd: RawFd) {
    // SAFETY: shutdown(2) on an fd the caller keeps open.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Accept errors: resource exhaustion pauses accepting with a growing backoff; the log says
/// so at most once every five seconds, with a count.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// Resource errors in a row.
    in_a_row: u32,
    /// When the last line was logged.
    last_log: Option<Instant>,
    /// Errors since then.
    unlogged: u64,
}

impl AcceptBackoff {
    /// How long to pause after `err`, if at all; counts it.
    pub(crate) fn on_error(&mut self, err: &io::Error, stats: &WorkerStats) -> Option<Duration> {
        WorkerStats::inc(&stats.accept_errors);
        let Some(pause) = accept_pause(err, self.in_a_row) else {
            debug!("accept failed: {err}");
            return None;
        };
        self.in_a_row += 1;
        self.unlogged += 1;
        WorkerStats::inc(&stats.accept_backoffs);
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            warn!(
                "accept failed: {err} ({} time(s) since the last report); pausing accepts, now for {pause:?}",
                self.unlogged
            );
            self.last_log = Some(Instant::now());
            self.unlogged = 0;
        }
        Some(pause)
    }

    /// An accept succeeded: the next error starts from the shortest pause.
    pub(crate) fn on_success(&mut self) {
        self.in_a_row = 0;
    }
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
