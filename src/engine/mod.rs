//! Engines: how bytes move between sockets and connections. Each engine runs one worker's
//! event loop on its own thread: accept on the worker's listener, move bytes for each
//! [`crate::connection::Connection`], wake it when its deadline passes, and drain on
//! shutdown. What the bytes and the time mean is the connection's business, not theirs.

pub mod admission;
pub mod auto;
pub mod availability;
pub mod control;
pub mod epoll;
pub mod socket;
mod tokio_tasks;
pub mod tokio_uring;
pub mod uring;

use std::io;
use std::sync::mpsc;
use std::sync::Arc;

use crate::access_log::AccessLog;
use crate::config::Config;
pub use crate::config::EngineKind;
use crate::connection::WorkerStats;
use crate::engine::admission::Limit;
use crate::error::Error;

/// What a worker's event loop is given.
#[derive(Debug)]
pub struct WorkerCtx {
    /// Worker index.
    pub id: usize,
    /// This worker's SO_REUSEPORT listener.
    pub listener: std::net::TcpListener,
    /// The server configuration.
    pub config: Arc<Config>,
    /// The configuration in force after reloads (limits, timeouts, upstreams).
    pub live: crate::config::live::LiveView,
    /// Says when to stop accepting, and whether the listeners must be left to a successor.
    pub drain: crate::engine::control::Watch,
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
    /// The process-wide connection limit.
    pub limit: Arc<Limit>,
    /// Other workers accept on the same socket (one inherited socket served by all): an
    /// engine must then accept so that the kernel spreads connections over them.
    pub shared_listener: bool,
    /// Where each connection is logged at its close, if anywhere.
    pub access_log: Option<Arc<AccessLog>>,
}

/// A worker's context without its listener, once the engine has taken that.
#[derive(Debug)]
pub(crate) struct WorkerEnv {
    /// Worker index.
    pub id: usize,
    /// The server configuration.
    pub config: Arc<Config>,
    /// The configuration in force after reloads (limits, timeouts, upstreams).
    pub live: crate::config::live::LiveView,
    /// Says when to stop accepting, and whether the listeners must be left to a successor.
    pub drain: crate::engine::control::Watch,
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
    /// The process-wide connection limit.
    pub limit: Arc<Limit>,
    /// Other workers accept on the same socket (see [`WorkerCtx::shared_listener`]).
    pub shared_listener: bool,
    /// Where each connection is logged at its close, if anywhere.
    pub access_log: Option<Arc<AccessLog>>,
}

impl WorkerCtx {
    /// Separates the listener from the rest.
    pub(crate) fn into_parts(self) -> (std::net::TcpListener, WorkerEnv) {
        let WorkerCtx {
            id,
            listener,
            config,
            live,
            drain,
            stats,
            limit,
            shared_listener,
            access_log,
        } = self;
        let env = WorkerEnv {
            id,
            config,
            live,
            drain,
            stats,
            limit,
            shared_listener,
            access_log,
        };
        (listener, env)
    }
}

/// Runs a worker's event loop until it has drained. `ready` is told once whether the worker
/// could be set up, before any connection is accepted.
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
                crate::engine::availability::explain(source)
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
