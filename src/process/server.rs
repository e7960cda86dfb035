//! The server: takes its listening sockets (bound here, or inherited from a service manager
//! or a predecessor, see [`crate::process::activation`]), starts one pinned worker thread per
//! listener, and drains them on request. `main` and the tests both go through [`start`] or
//! [`start_with`]; the tests bind `127.0.0.1:0` and read the port from
//! [`ServerHandle::local_addr`].
//!
//! The server keeps a descriptor of every listening socket for itself: these are what a
//! live upgrade hands to the successor ([`DrainTrigger::sockets_for_successor`]). A listening
//! socket another process may hold (inherited, or handed on) is never shut down, only closed:
//! `shutdown(2)` on a listening socket stops it for every process that holds it.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use crate::access_log::AccessLog;
use crate::config::live::{Live, LiveView};
use crate::config::{Config, Service};
use crate::connection::WorkerStats;
use crate::engine::admission::Limit;
use crate::engine::availability;
use crate::engine::control::{Bell, Lifecycle, Watch};
use crate::engine::WorkerCtx;
use crate::error::Error;
use crate::metrics::{MetricsServer, Series};
use crate::process::activation::{InheritedSockets, LISTEN_NAME, METRICS_NAME};
use crate::process::listener::bind_workers;
use crate::process::worker::{self, Done};

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// The address the workers actually listen on (the first socket's, if several).
    local_addr: SocketAddr,
    /// What every worker follows, and the sockets a successor would be given.
    control: Arc<Control>,
    /// Each worker sends its id and result when it stops.
    done: mpsc::Receiver<Done>,
    /// The worker threads, in worker order.
    threads: Vec<JoinHandle<()>>,
    /// Per-worker counters.
    stats: Vec<Arc<WorkerStats>>,
    /// The configuration the server runs with.
    config: Arc<Config>,
    /// Where the metrics endpoint listens, if it runs.
    metrics_addr: Option<SocketAddr>,
    /// `--access-log`.
    access_log: Option<Arc<AccessLog>>,
    /// Applies reloads.
    reloader: Reloader,
}

/// What the server shares with its triggers.
#[derive(Debug)]
struct Control {
    /// Published to every worker.
    lifecycle: watch::Sender<Lifecycle>,
    /// The listening sockets came from another process (which may still hold them).
    inherited: bool,
    /// A successor process holds (or is about to hold) the listening sockets.
    successor: AtomicBool,
    /// This process's own descriptors of its listening sockets, with their names
    /// ([`LISTEN_NAME`] or [`METRICS_NAME`]); closed by a drain that ends them.
    sockets: Mutex<Vec<(OwnedFd, &'static str)>>,
    /// The metrics endpoint; stopped on a handover (the successor answers from then on).
    metrics: Mutex<Option<MetricsServer>>,
    /// Every worker's doorbell, rung when the lifecycle changes.
    bells: Mutex<Vec<Arc<Bell>>>,
    /// Workers that have stopped accepting.
    stopped: Arc<AtomicUsize>,
}

impl Control {
    /// True when another process may hold the listening sockets.
    fn shared(&self) -> bool {
        self.inherited || self.successor.load(Ordering::SeqCst)
    }

    fn stop(&self, how: Lifecycle) {
        // The first request wins: a drain in progress is not turned into another kind.
        let changed = self.lifecycle.send_if_modified(|s| {
            let change = !s.is_stopping();
            if change {
                *s = how;
            }
            change
        });
        if changed {
            for bell in lock(&self.bells).iter() {
                bell.ring();
            }
        }
    }

    /// Waits (at most `limit`) until every worker has stopped accepting.
    fn wait_stopped(&self, limit: Duration) {
        let workers = lock(&self.bells).len();
        let deadline = Instant::now() + limit;
        while self.stopped.load(Ordering::Acquire) < workers && Instant::now() < deadline {
            thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops accepting and drains. The listening sockets are shut down only when no other
    /// process may hold them.
    fn drain(&self) {
        if self.shared() {
            self.stop(Lifecycle::HandingOver);
        } else {
            self.stop(Lifecycle::Draining);
            lock(&self.sockets).clear();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a drain or a handover from any thread (a signal handler, a test).
#[derive(Debug, Clone)]
pub struct DrainTrigger(Arc<Control>);

impl DrainTrigger {
    /// Asks every worker to stop accepting and finish its connections. The listeners are
    /// shut down and closed when this process alone holds them; when another process may
    /// hold them too (inherited sockets, a successor), they are left listening for it.
    pub fn fire(&self) {
        self.0.drain();
    }

    /// Asks every worker to stop accepting and finish, leaving the listening sockets open
    /// and untouched for a successor process that accepts on them now; stops the metrics
    /// endpoint, whose socket the successor serves too.
    pub fn hand_over(&self) {
        self.0.successor.store(true, Ordering::SeqCst);
        self.0.stop(Lifecycle::HandingOver);
        drop(lock(&self.0.metrics).take());
        // Returns once no worker accepts any more (a worker notices within microseconds: its
        // doorbell wakes it), so that from then on the successor alone takes connections
        // and every connection here knows it is draining.
        self.0.wait_stopped(Duration::from_secs(1));
    }

    /// Says whether a successor holds (or is about to hold) the listening sockets: from then
    /// on no drain shuts them down. Set before a successor is started; cleared once a failed
    /// one is gone.
    pub fn expect_successor(&self, yes: bool) {
        self.0.successor.store(yes, Ordering::SeqCst);
    }

    /// True once the workers have been told to stop accepting.
    pub fn is_stopping(&self) -> bool {
        self.0.lifecycle.borrow().is_stopping()
    }

    /// New descriptors (close-on-exec) of every listening socket, with their names, for a
    /// successor; empty once a drain has closed them.
    pub fn sockets_for_successor(&self) -> std::io::Result<Vec<(OwnedFd, &'static str)>> {
        lock(&self.0.sockets)
            .iter()
            .map(|(fd, name)| Ok((fd.try_clone()?, *name)))
            .collect()
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
    start_with(config, None)
}

/// Starts the workers on `inherited` sockets if given (the caller has checked and
/// configured them), otherwise on listeners bound to `config.listen`; returns once every
/// worker is accepting. A single socket is served by every worker (each gets its own
/// descriptor of it); with more inherited sockets than `config.threads`, one worker runs per
/// socket, so that none is left without a worker.
pub fn start_with(
    mut config: Config,
    inherited: Option<InheritedSockets>,
) -> Result<ServerHandle, Error> {
    check_engine(&config)?;
    let threads_asked = config.threads;
    let is_inherited = inherited.is_some();
    let mut sockets = take_sockets(&mut config, inherited)?;
    let local_addr = sockets.listeners[0]
        .local_addr()
        .map_err(|err| Error::Bind {
            addr: config.listen,
            err,
        })?;
    let reach = reach(&sockets.listeners[0], local_addr);
    let own = std::mem::take(&mut sockets.own);
    let control = Arc::new(control_of(own, &sockets, is_inherited)?);
    let access_log = open_access_log(&config)?;
    let config = Arc::new(config);
    let live = Live::new(config.clone());
    let limit = Arc::new(Limit::new(config.max_connections));
    let (done_tx, done) = mpsc::channel();
    let spawned = spawn_workers(
        sockets.listeners,
        sockets.shared,
        &config,
        &control,
        (&live, &limit),
        done_tx,
        access_log.as_ref(),
    );
    let mut server = ServerHandle {
        local_addr,
        control,
        done,
        threads: spawned.threads,
        stats: spawned.stats,
        config: config.clone(),
        metrics_addr: None,
        access_log,
        reloader: Reloader {
            live,
            limit,
            threads_asked,
        },
    };
    let mut failure = spawned.failure;
    if failure.is_none() {
        failure = server.await_ready(spawned.readies);
    }
    if failure.is_none() {
        failure = sockets.metrics.and_then(|m| server.serve_metrics(m).err());
    }
    if let Some(e) = failure {
        // A start that fails halfway leaves nothing running: the workers that did start are
        // drained and joined, so none keeps holding the port.
        server.control.drain();
        let stopped = server.wait();
        // A worker that died while starting says why in its own report.
        return Err(match (e, stopped) {
            (Error::Worker { .. }, Err(reported @ Error::Worker { .. })) => reported,
            (e, _) => e,
        });
    }
    if config.service.proxy().is_some() {
        server.check_upstreams()?;
    }
    log_start(&config, local_addr, is_inherited, reach);
    Ok(server)
}

/// Opens `--access-log`, so that a path that cannot be written stops the start.
fn open_access_log(config: &Config) -> Result<Option<Arc<AccessLog>>, Error> {
    let Some(spec) = &config.access_log else {
        return Ok(None);
    };
    let log = AccessLog::open(spec.target.clone(), spec.format, spec.queue)
        .map_err(|e| Error::Config(format!("--access-log {}: {e}", spec.target)))?;
    Ok(Some(Arc::new(log)))
}

/// Checks the configuration and that the kernel has what its engine needs.
fn check_engine(config: &Config) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    if config.engine.uses_io_uring() {
        availability::check_io_uring()?;
    }
    if config.engine == crate::engine::EngineKind::Uring {
        crate::engine::uring::check_features(&config.uring)?;
    }
    Ok(())
}

/// The control of a server on `sockets`, keeping `own`, this process's own descriptors of
/// its listening sockets.
fn control_of(own: Vec<OwnedFd>, sockets: &Sockets, inherited: bool) -> Result<Control, Error> {
    let mut own: Vec<(OwnedFd, &'static str)> =
        own.into_iter().map(|fd| (fd, LISTEN_NAME)).collect();
    if let Some(m) = &sockets.metrics {
        let fd = m.try_clone().map_err(Error::Spawn)?;
        own.push((OwnedFd::from(fd), METRICS_NAME));
    }
    let (lifecycle, _) = watch::channel(Lifecycle::Serving);
    let bells = (0..sockets.listeners.len())
        .map(|_| Bell::new().map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Spawn)?;
    Ok(Control {
        lifecycle,
        inherited,
        successor: AtomicBool::new(false),
        sockets: Mutex::new(own),
        metrics: Mutex::new(None),
        bells: Mutex::new(bells),
        stopped: Arc::default(),
    })
}

/// Applies a reload to a running server: the configuration in force, and what the workers
/// share outside it (the connection limit).
#[derive(Debug, Clone)]
pub struct Reloader {
    /// The configuration in force.
    live: Arc<Live>,
    /// `--max-connections`, shared by the workers.
    limit: Arc<Limit>,
    /// `--threads` as configured (inherited sockets may have raised the count that runs).
    threads_asked: usize,
}

impl Reloader {
    /// Puts `next` in force for new connections; refuses, saying why in one line, a change
    /// that needs new sockets, threads or rings (a live upgrade applies those).
    pub fn apply(&self, mut next: Config) -> Result<Arc<Config>, String> {
        let running = self.live.current();
        if next.threads == self.threads_asked {
            next.threads = running.threads;
        }
        let keys = crate::config::live::needs_upgrade(&running, &next);
        if !keys.is_empty() {
            return Err(format!(
                "{} cannot change on a reload: a live upgrade (SIGUSR2) applies it",
                keys.join(", ")
            ));
        }
        if let (Some(old), Service::Proxy(p)) = (running.service.proxy(), &mut next.service) {
            p.succeed(old)?;
        }
        next.engine_refusal = None;
        next.test_fault = running.test_fault;
        let next = Arc::new(next);
        self.limit.set_max(next.max_connections);
        self.live.replace(next.clone());
        Ok(next)
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Config> {
        self.live.current()
    }
}

/// The listening sockets a server starts with.
struct Sockets {
    /// One per worker (an inherited socket serves several workers when there are fewer
    /// sockets than workers).
    listeners: Vec<TcpListener>,
    /// The listening sockets this process holds for a successor.
    own: Vec<OwnedFd>,
    /// Where metrics are served, if anywhere.
    metrics: Option<TcpListener>,
    /// Workers share a listening socket.
    shared: bool,
}

/// Binds the sockets `config` asks for, or takes the inherited ones (one worker per socket
/// at least, which may raise `config.threads`).
fn take_sockets(
    config: &mut Config,
    inherited: Option<InheritedSockets>,
) -> Result<Sockets, Error> {
    let Some(sockets) = inherited else {
        let listeners = bind_workers(config.listen, config.threads, &config.listen_options)?;
        return Ok(Sockets {
            own: dup_all(&listeners)?,
            listeners,
            metrics: config.metrics.map(crate::metrics::bind).transpose()?,
            shared: false,
        });
    };
    if sockets.listeners.len() > config.threads {
        info!(
            "{} inherited listening sockets: running one worker per socket instead of {}",
            sockets.listeners.len(),
            config.threads
        );
        config.threads = sockets.listeners.len();
    }
    let metrics = match (sockets.metrics, config.metrics) {
        (Some(m), asked) => {
            check_metrics_addr(&m, asked)?;
            Some(m)
        }
        (None, Some(addr)) => Some(crate::metrics::bind(addr)?),
        (None, None) => None,
    };
    let listeners = (0..config.threads)
        .map(|i| sockets.listeners[i % sockets.listeners.len()].try_clone())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Inherited(format!("cannot duplicate a socket: {e}")))?;
    Ok(Sockets {
        shared: config.threads > sockets.listeners.len(),
        own: sockets.listeners.into_iter().map(OwnedFd::from).collect(),
        listeners,
        metrics,
    })
}

/// What spawning the workers left.
struct Spawned {
    /// Each worker's counters.
    stats: Vec<Arc<WorkerStats>>,
    /// Their threads.
    threads: Vec<JoinHandle<()>>,
    /// Where each says that it serves (or why it cannot).
    readies: Vec<mpsc::Receiver<Result<(), Error>>>,
    /// Why spawning stopped before the last worker, if it did.
    failure: Option<Error>,
}

/// Spawns one pinned worker thread per listener; each reports its end on `done_tx`.
fn spawn_workers(
    listeners: Vec<TcpListener>,
    shared_listener: bool,
    config: &Arc<Config>,
    control: &Control,
    (live, limit): (&Arc<Live>, &Arc<Limit>),
    done_tx: mpsc::Sender<Done>,
    access_log: Option<&Arc<AccessLog>>,
) -> Spawned {
    worker::install_panic_hook();
    let drain_rx = control.lifecycle.subscribe();
    let mut spawned = Spawned {
        stats: Vec::with_capacity(listeners.len()),
        threads: Vec::with_capacity(listeners.len()),
        readies: Vec::with_capacity(listeners.len()),
        failure: None,
    };
    for (id, listener) in listeners.into_iter().enumerate() {
        let worker_stats = Arc::new(WorkerStats::default());
        let ctx = WorkerCtx {
            id,
            listener,
            config: config.clone(),
            live: LiveView::new(live.clone()),
            drain: Watch::new(
                drain_rx.clone(),
                lock(&control.bells)[id].clone(),
                control.stopped.clone(),
            ),
            stats: worker_stats.clone(),
            limit: limit.clone(),
            shared_listener,
            access_log: access_log.cloned(),
        };
        let cpu = (!config.cpus.is_empty()).then(|| config.cpus[id % config.cpus.len()]);
        let fault = config.test_fault.filter(|f| f.worker() == id);
        let (ready_tx, ready_rx) = mpsc::channel();
        let done_tx = done_tx.clone();
        let thread = thread::Builder::new()
            .name(format!("{}{id}", worker::THREAD_PREFIX))
            .spawn(move || worker::main(ctx, cpu, ready_tx, fault, done_tx));
        match thread {
            Ok(t) => {
                spawned.stats.push(worker_stats);
                spawned.threads.push(t);
                spawned.readies.push(ready_rx);
            }
            Err(e) => {
                spawned.failure = Some(Error::Spawn(e));
                break;
            }
        }
    }
    spawned
}

/// The start-up line: what the server does, with the settings that apply to it (a field
/// that is `None` is left out).
fn log_start(config: &Config, local_addr: SocketAddr, inherited: bool, reach: &str) {
    use tracing::field::{debug, display};
    let proxy = config.service.proxy();
    let protocol = config.service.name();
    let upstreams = proxy.map(|p| {
        let addrs: Vec<String> = p
            .upstreams
            .list()
            .iter()
            .map(|u| u.addr.to_string())
            .collect();
        display(addrs.join(","))
    });
    let header_timeout = config
        .service
        .is_http()
        .then(|| debug(config.header_timeout));
    info!(
        addr = %local_addr,
        engine = %config.engine,
        protocol = %protocol,
        upstreams,
        connect_timeout = proxy.map(|p| debug(p.connect_timeout)),
        send_proxy = proxy.and_then(|p| p.send_proxy).map(debug),
        threads = config.threads,
        pinned = !config.cpus.is_empty(),
        inherited,
        buffer_size = config.buffer_size,
        max_connections = config.max_connections,
        idle_timeout = ?config.idle_timeout,
        header_timeout,
        "listening on {local_addr}{reach}"
    );
}

/// What the start-up line adds to an IPv6 wildcard address: whether IPv4 clients reach it.
/// A socket bound here is dual-stack; an inherited one is as its creator set it.
fn reach(listener: &TcpListener, addr: SocketAddr) -> &'static str {
    if !(addr.is_ipv6() && addr.ip().is_unspecified()) {
        return "";
    }
    match socket2::SockRef::from(listener).only_v6() {
        Ok(false) => " (IPv4 too)",
        Ok(true) => " (IPv6 only)",
        Err(_) => "",
    }
}

/// Descriptors of the listeners this process bound, kept for a successor.
fn dup_all(listeners: &[TcpListener]) -> Result<Vec<OwnedFd>, Error> {
    listeners
        .iter()
        .map(|l| l.try_clone().map(OwnedFd::from).map_err(Error::Spawn))
        .collect()
}

/// An inherited metrics socket must be where `--metrics` says, if it says (port 0: any).
fn check_metrics_addr(listener: &TcpListener, asked: Option<SocketAddr>) -> Result<(), Error> {
    let got = listener
        .local_addr()
        .map_err(|e| Error::Inherited(format!("cannot read the metrics socket's address: {e}")))?;
    match asked {
        Some(a) if a.ip() != got.ip() || (a.port() != 0 && a.port() != got.port()) => {
            Err(Error::Inherited(format!(
                "the inherited metrics socket listens on {got}, not on --metrics {a}"
            )))
        }
        _ => Ok(()),
    }
}

impl ServerHandle {
    /// Waits for every worker's ready report; the first failure, if any.
    fn await_ready(&self, readies: Vec<mpsc::Receiver<Result<(), Error>>>) -> Option<Error> {
        for (id, ready) in readies.into_iter().enumerate() {
            match ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Some(e),
                Err(_) => {
                    return Some(Error::Worker {
                        worker: id,
                        cause: "stopped while starting".into(),
                    })
                }
            }
        }
        None
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Per-worker counters, in worker order.
    pub fn stats(&self) -> &[Arc<WorkerStats>] {
        &self.stats
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Where the metrics endpoint listens, if it runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The counters of the process's parts beside its workers (the access log), for the
    /// metrics endpoint and a successor.
    pub fn series(&self) -> Vec<Arc<dyn Series>> {
        let mut v: Vec<Arc<dyn Series>> = Vec::new();
        if let Some(log) = &self.access_log {
            v.push(log.clone());
        }
        v
    }

    /// `--access-log`, if it is written.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.as_ref()
    }

    /// What applies a reload to this server, from any thread.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves the metrics endpoint on `listener`.
    fn serve_metrics(&mut self, listener: TcpListener) -> Result<(), Error> {
        let m = MetricsServer::start_on(
            listener,
            self.stats.clone(),
            self.config.clone(),
            self.series(),
        )?;
        self.metrics_addr = Some(m.local_addr());
        *lock(&self.control.metrics) = Some(m);
        Ok(())
    }

    /// Starts the thread of the upstreams' active health checks; it runs the checks of the
    /// configuration in force, if any, until the server stops.
    fn check_upstreams(&self) -> Result<(), Error> {
        let live = self.reloader.live.clone();
        let control = self.control.clone();
        let current = move || {
            let c = live.current();
            let p = c.service.proxy()?;
            Some((p.upstreams.clone(), p.check.clone()))
        };
        let stopped = move || control.lifecycle.borrow().is_stopping();
        thread::Builder::new()
            .name("ringd-health".into())
            .spawn(move || crate::proxy::health::run(current, stopped))
            .map(drop)
            .map_err(Error::Spawn)
    }

    /// A handle that starts the drain from another thread.
    pub fn drain_trigger(&self) -> DrainTrigger {
        DrainTrigger(self.control.clone())
    }

    /// Starts the drain and waits for it (up to the shutdown timeout).
    pub fn shutdown(self) -> Result<ShutdownReport, Error> {
        self.drain_trigger().fire();
        self.wait()
    }

    /// Waits until the server has been drained (by [`DrainTrigger::fire`] or
    /// [`DrainTrigger::hand_over`]) and every worker has stopped, or the shutdown timeout has
    /// passed since the drain began. A worker that stops on its own before any drain (an
    /// error, a panic) makes the others drain, and is the error returned.
    pub fn wait(mut self) -> Result<ShutdownReport, Error> {
        let mut running = self.threads.len();
        let mut deadline: Option<Instant> = None;
        let mut failure = None;
        let mut finished = Vec::with_capacity(running);
        let mut timed_out = false;
        while running > 0 {
            if deadline.is_none() && self.control.lifecycle.borrow().is_stopping() {
                let grace = self.reloader.current().shutdown_timeout;
                deadline = Some(Instant::now() + grace);
            }
            let tick = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left.min(Duration::from_millis(100)),
                    None => {
                        timed_out = true;
                        break;
                    }
                },
                None => Duration::from_millis(100),
            };
            match self.done.recv_timeout(tick) {
                Ok((id, result)) => {
                    running -= 1;
                    finished.push(id);
                    let stopping = self.control.lifecycle.borrow().is_stopping();
                    match result {
                        Err(cause) if failure.is_none() => {
                            failure = Some(Error::Worker { worker: id, cause });
                        }
                        Ok(()) if !stopping && failure.is_none() => {
                            failure = Some(Error::Worker {
                                worker: id,
                                cause: "stopped unexpectedly".into(),
                            });
                        }
                        _ => {}
                    }
                    if failure.is_some() {
                        // A worker stopped without being asked: stop the rest too.
                        self.control.drain();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Threads that reported are on their way out; one stuck past the deadline is left to
        // the process's exit.
        let threads = std::mem::take(&mut self.threads);
        for (id, t) in threads.into_iter().enumerate() {
            if finished.contains(&id) {
                let _ = t.join();
            }
        }
        drop(lock(&self.control.metrics).take());
        self.report(failure, timed_out)
    }

    /// The end of [`ServerHandle::wait`]: the counts, logged, or the failure.
    fn report(&self, failure: Option<Error>, timed_out: bool) -> Result<ShutdownReport, Error> {
        let cut: u64 = self.stats.iter().map(|s| s.active()).sum();
        let accepted = self
            .stats
            .iter()
            .map(|s| s.accepted.load(Ordering::Relaxed))
            .sum();
        if cut > 0 && timed_out {
            tracing::warn!(
                "shutdown timeout ({:?}) passed: cutting {cut} connection(s)",
                self.reloader.current().shutdown_timeout
            );
        } else if cut > 0 {
            tracing::warn!("{cut} connection(s) ended with the worker that failed");
        }
        let rejected: u64 = self
            .stats
            .iter()
            .map(|s| s.rejected.load(Ordering::Relaxed))
            .sum();
        info!(accepted, rejected, cut, "stopped");
        match failure {
            Some(e) => Err(e),
            None => Ok(ShutdownReport { cut, accepted }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};

    /// A listening socket on `addr` with IPV6_V6ONLY as given, as a socket unit may pass it.
    fn listening(addr: &str, only_v6: Option<bool>) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        if let Some(v) = only_v6 {
            s.set_only_v6(v).unwrap();
        }
        s.bind(&addr.into()).unwrap();
        s.listen(1).unwrap();
        s.into()
    }

    #[test]
    fn the_start_up_line_says_whether_ipv4_reaches_an_ipv6_wildcard() {
        let v4 = listening("127.0.0.1:0", None);
        assert_eq!(reach(&v4, v4.local_addr().unwrap()), "");
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            println!("skipped: this host has no IPv6 on loopback");
            return;
        }
        for (only_v6, says) in [(true, " (IPv6 only)"), (false, " (IPv4 too)")] {
            let l = listening("[::]:0", Some(only_v6));
            assert_eq!(reach(&l, l.local_addr().unwrap()), says);
        }
    }
}
