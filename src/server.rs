//! The server: binds the listeners, starts one pinned worker thread per listener, and drains
//! them on request. `main` and the tests both go through [`start`]; the tests bind
//! `127.0.0.1:0` and read the port from [`ServerHandle::local_addr`].

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info};

use crate::config::Config;
use crate::connection::WorkerStats;
use crate::engine::{self, WorkerCtx};
use crate::error::Error;
use crate::listener::bind_workers;
use crate::metrics::MetricsServer;
use crate::probe;
use crate::shutdown::Lifecycle;

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// The address the workers actually listen on.
    local_addr: SocketAddr,
    /// Set to true to drain.
    drain: Arc<watch::Sender<Lifecycle>>,
    /// Each worker sends its id and result when it stops.
    done: mpsc::Receiver<(usize, std::io::Result<()>)>,
    /// Per-worker counters.
    stats: Vec<Arc<WorkerStats>>,
    /// The configuration the server runs with.
    config: Arc<Config>,
    /// The metrics endpoint, if asked for.
    metrics: Option<MetricsServer>,
}

/// Starts a drain from any thread (a signal handler, a test).
#[derive(Debug, Clone)]
pub struct DrainTrigger(Arc<watch::Sender<Lifecycle>>);

impl DrainTrigger {
    /// Asks every worker to stop accepting, close its listener and finish.
    pub fn fire(&self) {
        self.stop(Lifecycle::Draining);
    }

    /// Asks every worker to stop accepting and finish, leaving the listening sockets open
    /// and untouched for a successor process that accepts on them now.
    pub fn hand_over(&self) {
        self.stop(Lifecycle::HandingOver);
    }

    fn stop(&self, how: Lifecycle) {
        // The first request wins: a drain in progress is not turned into another kind.
        self.0.send_if_modified(|s| {
            let change = !s.is_stopping();
            if change {
                *s = how;
            }
            change
        });
    }
}

/// How a server stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the shutdown deadline passed (0 for a clean drain).
    pub cut: u64,
    /// Connections accepted over the server's life.
    pub accepted: u64,
}

/// Binds the listeners and starts the workers; returns once every worker is accepting.
pub fn start(config: Config) -> Result<ServerHandle, Error> {
    config.validate().map_err(Error::Config)?;
    if config.engine.uses_io_uring() {
        probe::check_io_uring()?;
    }
    if config.engine == crate::engine::EngineKind::Uring {
        crate::engine::uring::check_features()?;
    }
    let listeners = bind_workers(config.listen, config.threads, &config.listen_options)?;
    let local_addr = listeners[0].local_addr().map_err(|err| Error::Bind {
        addr: config.listen,
        err,
    })?;
    let config = Arc::new(config);
    let (drain_tx, drain_rx) = watch::channel(Lifecycle::Serving);
    let drain = Arc::new(drain_tx);
    let (done_tx, done) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let limit = Arc::new(crate::accept::Limit::new(config.max_connections));
    let mut stats = Vec::with_capacity(listeners.len());
    for (id, listener) in listeners.into_iter().enumerate() {
        let worker_stats = Arc::new(WorkerStats::default());
        stats.push(worker_stats.clone());
        let ctx = WorkerCtx {
            id,
            listener,
            config: config.clone(),
            drain: drain_rx.clone(),
            stats: worker_stats,
            limit: limit.clone(),
        };
        let cpu = (!config.cpus.is_empty()).then(|| config.cpus[id % config.cpus.len()]);
        let ready = ready_tx.clone();
        let done = done_tx.clone();
        thread::Builder::new()
            .name(format!("ringd-w{id}"))
            .spawn(move || worker_main(ctx, cpu, ready, done))
            .map_err(Error::Spawn)?;
    }
    drop(ready_tx);
    for _ in 0..stats.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                drain.send_replace(Lifecycle::Draining);
                return Err(e);
            }
            Err(_) => {
                drain.send_replace(Lifecycle::Draining);
                return Err(Error::Config("a worker exited while starting".into()));
            }
        }
    }
    let metrics = match config.metrics {
        Some(addr) => match MetricsServer::start(addr, stats.clone(), config.clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                drain.send_replace(Lifecycle::Draining);
                return Err(e);
            }
        },
        None => None,
    };
    info!(
        addr = %local_addr,
        engine = %config.engine,
        protocol = %config.protocol.kind,
        threads = config.threads,
        pinned = !config.cpus.is_empty(),
        buffer_size = config.buffer_size,
        max_connections = config.max_connections,
        idle_timeout = ?config.idle_timeout,
        header_timeout = ?config.header_timeout,
        "listening on {local_addr}"
    );
    Ok(ServerHandle {
        local_addr,
        drain,
        done,
        stats,
        config,
        metrics,
    })
}

fn worker_main(
    ctx: WorkerCtx,
    cpu: Option<usize>,
    ready: mpsc::Sender<Result<(), Error>>,
    done: mpsc::Sender<(usize, std::io::Result<()>)>,
) {
    let id = ctx.id;
    let _span = tracing::info_span!("worker", id).entered();
    if let Some(cpu) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            tracing::warn!("could not pin to CPU {cpu}; running unpinned");
        }
    }
    let result = engine::run(ctx, ready);
    if let Err(e) = &result {
        error!("worker stopped: {e}");
    }
    let _ = done.send((id, result));
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Per-worker counters, in worker order.
    pub fn stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// Where the metrics endpoint listens, if it runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// A handle that starts the drain from another thread.
    pub fn drain_trigger(&self) -> DrainTrigger {
        DrainTrigger(self.drain.clone())
    }

    /// Starts the drain and waits for it (up to the shutdown timeout).
    pub fn shutdown(self) -> Result<ShutdownReport, Error> {
        self.drain_trigger().fire();
        self.wait()
    }

    /// Waits until the server has been drained (by [`DrainTrigger::fire`]) and every worker
    /// has stopped, or the shutdown timeout has passed since the drain began. A worker that
    /// stops on its own before any drain is an error.
    pub fn wait(self) -> Result<ShutdownReport, Error> {
        let mut running = self.stats.len();
        let mut deadline: Option<Instant> = None;
        let mut failure = None;
        while running > 0 {
            if deadline.is_none() && self.drain.borrow().is_stopping() {
                deadline = Some(Instant::now() + self.config.shutdown_timeout);
            }
            let tick = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left.min(Duration::from_millis(100)),
                    None => break,
                },
                None => Duration::from_millis(100),
            };
            match self.done.recv_timeout(tick) {
                Ok((id, result)) => {
                    running -= 1;
                    if deadline.is_none() && !self.drain.borrow().is_stopping() {
                        // A worker stopped without being asked: stop the rest too.
                        let reason = match result {
                            Err(e) => e.to_string(),
                            Ok(()) => "stopped unexpectedly".into(),
                        };
                        failure
                            .get_or_insert(Error::Config(format!("worker {id} failed: {reason}")));
                        self.drain.send_replace(Lifecycle::Draining);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let cut: u64 = self.stats.iter().map(|s| s.active()).sum();
        let accepted = self
            .stats
            .iter()
            .map(|s| s.accepted.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        if cut > 0 {
            tracing::warn!(
                "shutdown timeout ({:?}) passed: cutting {cut} connection(s)",
                self.config.shutdown_timeout
            );
        }
        let rejected: u64 = self
            .stats
            .iter()
            .map(|s| s.rejected.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        info!(accepted, rejected, cut, "stopped");
        match failure {
            Some(e) => Err(e),
            None => Ok(ShutdownReport { cut, accepted }),
        }
    }
}
