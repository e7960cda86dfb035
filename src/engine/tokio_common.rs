//! What the two tokio-based engines (`tokio-uring` and `epoll`) share: the accept loop, the
//! connection task and the ticker. Each connection is a task that moves bytes for its
//! [`Connection`] and sleeps on an [`Alarm`] besides its read or write; the worker's ticker
//! advances the clock and rings the alarms of connections whose deadline passed, and the
//! drain rings them all. The engines differ only in [`Listener`] and [`Stream`]: how a
//! socket accepts, reads and writes.
//!
//! Output is written in full before the next read, so a connection holds at most one read's
//! worth of output (`--max-pending-output` is met by construction).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use tracing::{debug, Instrument};

use super::registry::{Alarm, Entry, Registered, Registry};
use super::WorkerEnv;
use crate::config::live::LiveView;
use crate::config::{Config, Service};
use crate::connection::{Clock, CloseReason, Connection, Input, Limits, Phase, WorkerStats};
use crate::engine::admission::{AcceptBackoff, Limit};
use crate::engine::control::{self, Lifecycle};
use crate::protocol::ProtocolSpec;

/// A connected socket, with owned buffers handed back by each operation (what completion
/// based I/O needs, and what readiness based I/O can do as well).
pub(super) trait Stream: 'static {
    /// Reads once into `buf` (its capacity is the most read); the bytes are `buf[..n]`;
    /// 0 is EOF.
    fn read(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Writes some of `buf[range]`; returns how much the kernel took.
    fn write(
        &self,
        buf: Vec<u8>,
        range: Range<usize>,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Sends the FIN.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Makes operations still in flight on the socket complete (a dropped tokio-uring
    /// operation stays in the kernel, holding the descriptor, until it does).
    fn end_pending(&self);

    /// Makes the close a reset (`SO_LINGER` 0): what is unsent is dropped and the peer
    /// learns the connection was cut.
    fn reset(&self) {
        // SAFETY: the socket object keeps the descriptor open for the duration of the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.raw_fd()) };
        let _ = socket2::SockRef::from(&fd).set_linger(Some(std::time::Duration::ZERO));
    }

    /// The socket's descriptor.
    fn raw_fd(&self) -> std::os::fd::RawFd;

    /// The address the peer connected to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A worker's listening socket.
pub(super) trait Listener {
    /// What it accepts.
    type Stream: Stream;

    /// Accepts one connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;

    /// Takes over a connected socket (proxy mode's upstream connection).
    fn adopt(stream: std::net::TcpStream) -> io::Result<Self::Stream>;

    /// Stops accepting as `how` says, with an accept in flight. Resolves to true when that
    /// accept will complete because of it (and must be awaited: it may bring one more
    /// connection), false when it can simply be dropped.
    fn stop(&self, how: Lifecycle) -> impl Future<Output = bool>;
}

/// What every connection task of a worker reads.
#[derive(Debug)]
pub(super) struct Shared {
    /// What is done with each connection.
    pub(super) service: Service,
    /// How a connection over `--max-connections` is turned away.
    rejection: ProtocolSpec,
    /// This worker's round-robin position over the upstreams.
    pub(super) cursor: Cell<usize>,
    /// The worker's coarse clock (one for every generation of `Shared`).
    pub(super) clock: Rc<Clock>,
    /// Timeouts and the output bound.
    pub(super) limits: Limits,
    /// Bytes read at most per read.
    pub(super) buffer_size: usize,
    /// Live connections.
    registry: Rc<Registry>,
    /// Counters.
    pub(super) stats: Arc<WorkerStats>,
    /// `--max-connections`.
    limit: Arc<Limit>,
}

/// The accept loop, then the drain. Runs inside a `LocalSet` (tokio-uring's `block_on` is
/// one).
pub(super) async fn serve<L: Listener>(listener: L, env: WorkerEnv) -> io::Result<()> {
    let WorkerEnv {
        id,
        config,
        mut live,
        mut drain,
        stats,
        limit,
        ..
    } = env;
    let mut shared = Rc::new(Shared {
        service: config.service.clone(),
        rejection: config.service.rejection(),
        // Workers start their round-robin at different upstreams.
        cursor: Cell::new(id),
        clock: Rc::default(),
        limits: config.limits(),
        buffer_size: config.buffer_size,
        registry: Rc::default(),
        stats,
        limit,
    });
    let ticker = tokio::task::spawn_local({
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(shared.limits.tick());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = shared.clock.advance();
                shared.registry.ring_due(now);
            }
        }
    });
    accept_until_stopped(&listener, &mut shared, &mut drain, &mut live).await;
    drop(listener);
    shared.registry.drain();
    shared.registry.wait_empty().await;
    ticker.abort();
    Ok(())
}

/// Accepts connections until the server stops.
async fn accept_until_stopped<L: Listener>(
    listener: &L,
    shared: &mut Rc<Shared>,
    drain: &mut control::Watch,
    live: &mut LiveView,
) {
    let mut backoff = AcceptBackoff::default();
    let mut accept = pin!(listener.accept());
    loop {
        let accepted = tokio::select! {
            biased;
            how = control::stopping(drain) => {
                // Poll the accept once, so that it is in flight (or done) before the stop.
                let polled = std::future::poll_fn(|cx| Poll::Ready(accept.as_mut().poll(cx)));
                let raced = match polled.await {
                    Poll::Ready(r) => Some(r),
                    // One more connection may race the stop: serve it, never drop it.
                    Poll::Pending => {
                        let mut stop = pin!(listener.stop(how));
                        let mut stopping = true;
                        loop {
                            tokio::select! {
                                biased;
                                r = accept.as_mut() => break Some(r),
                                keep = stop.as_mut(), if stopping => {
                                    stopping = false;
                                    if !keep {
                                        break None;
                                    }
                                }
                            }
                        }
                    }
                };
                if let Some(Ok((stream, peer))) = raced {
                    admit::<L>(shared, stream, peer);
                }
                drain.acknowledge();
                return;
            }
            r = accept.as_mut() => r,
        };
        accept.set(listener.accept());
        if let Some(c) = live.changed() {
            *shared = Rc::new(shared.reloaded(&c));
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff.on_success();
                admit::<L>(shared, stream, peer);
            }
            Err(e) => {
                if let Some(pause) = backoff.on_error(&e, &shared.stats) {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

impl Shared {
    /// The same worker under configuration `c` (a reload): connections that start from now
    /// on read it; those already running keep the generation they started with.
    fn reloaded(&self, c: &Config) -> Shared {
        Shared {
            service: c.service.clone(),
            rejection: c.service.rejection(),
            cursor: Cell::new(self.cursor.get()),
            clock: self.clock.clone(),
            limits: c.limits(),
            buffer_size: self.buffer_size,
            registry: self.registry.clone(),
            stats: self.stats.clone(),
            limit: self.limit.clone(),
        }
    }
}

/// Starts the task of an accepted connection: served, or (over `--max-connections`) told so
/// and closed.
fn admit<L: Listener>(shared: &Rc<Shared>, stream: L::Stream, peer: SocketAddr) {
    // The ticker's clock may be a tick old: a deadline counted from it would come early.
    let now = shared.clock.advance();
    let conn = if shared.limit.try_admit() {
        WorkerStats::inc(&shared.stats.accepted);
        let spec = match &shared.service {
            Service::Protocol(spec) => spec,
            Service::Proxy(_) => {
                let registered = shared.registry.insert();
                let shared = shared.clone();
                tokio::task::spawn_local(
                    async move {
                        let end = Ending::new(&shared, true);
                        let reason =
                            super::tokio_proxy::relay::<L>(&stream, peer, &registered, &shared)
                                .await;
                        drop(registered);
                        drop(stream);
                        end.done(reason);
                    }
                    .instrument(tracing::debug_span!("proxy", %peer)),
                );
                return;
            }
        };
        Connection::new(spec, now)
    } else {
        WorkerStats::inc(&shared.stats.rejected);
        Connection::rejected(&shared.rejection, now)
    };
    let admitted = conn.close_reason() != CloseReason::Rejected;
    let registered = shared.registry.insert();
    let shared = shared.clone();
    tokio::task::spawn_local(
        async move {
            let end = Ending::new(&shared, admitted);
            let reason = connection(&stream, conn, &registered, &shared).await;
            drop(registered);
            drop(stream);
            end.done(reason);
        }
        .instrument(tracing::debug_span!("conn", %peer)),
    );
}

/// A connection task's end, counted exactly once: its close reason, and its place under
/// `--max-connections` given back if it held one, even when the task panics.
struct Ending<'a> {
    /// The worker.
    shared: &'a Shared,
    /// It holds a place.
    admitted: bool,
    /// Counted already.
    done: bool,
}

impl<'a> Ending<'a> {
    fn new(shared: &'a Shared, admitted: bool) -> Self {
        Ending {
            shared,
            admitted,
            done: false,
        }
    }

    /// The connection ended for `reason`.
    fn done(mut self, reason: CloseReason) {
        self.count(reason);
    }

    fn count(&mut self, reason: CloseReason) {
        if !self.done {
            self.done = true;
            if self.admitted {
                self.shared.stats.close(reason);
                self.shared.limit.release();
            }
        }
    }
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        // Only reached without `done` when the task panicked.
        self.count(CloseReason::Error);
    }
}

/// Serves one connection until it is closed; returns why.
async fn connection<S: Stream>(
    sock: &S,
    mut conn: Connection,
    registered: &Registered,
    shared: &Shared,
) -> CloseReason {
    let entry = registered.entry();
    let (clock, limits, stats) = (&shared.clock, &shared.limits, &*shared.stats);
    let mut buf: Option<Vec<u8>> = None;
    // An operation was left in flight (a read abandoned when the connection stopped reading).
    let mut abandoned = false;
    loop {
        wake(&mut conn, entry, clock, limits);
        if let Some(out) = conn.take_output() {
            WorkerStats::add(&stats.requests, conn.take_answered());
            let len = out.len();
            match send(sock, out, 0..len, &mut conn, entry, shared).await {
                Some(out) => conn.recycle(out),
                None => abandoned = true,
            }
            continue;
        }
        if conn.wants_fin() {
            // Without a lingering close, the close right after sends the FIN.
            let fin = match conn.lingers() {
                true => sock.shutdown_write(),
                false => Ok(()),
            };
            match fin {
                Ok(()) => conn.on_fin(clock.now(), limits),
                Err(e) => {
                    debug!("shutdown failed: {e}");
                    conn.on_error();
                }
            }
            continue;
        }
        if conn.phase() == Phase::Closed {
            break;
        }
        if !conn.reading() {
            // Nothing to read or send until the time or the drain changes something.
            entry.alarm.wait().await;
            continue;
        }
        let phase = conn.phase();
        let b = buf
            .take()
            .unwrap_or_else(|| Vec::with_capacity(shared.buffer_size));
        let read = until_woken(sock.read(b), &entry.alarm, || {
            wake(&mut conn, entry, clock, limits);
            // Stop waiting once there is something else to do; the read may be abandoned
            // then only because no input is wanted any more.
            conn.phase() != phase || conn.queued() > 0
        });
        let Some((res, b)) = read.await else {
            abandoned = true;
            continue;
        };
        let n = match res {
            Ok(0) => {
                conn.on_eof();
                buf = Some(b);
                continue;
            }
            Ok(n) => n,
            Err(e) => {
                debug!("read failed: {e}");
                conn.on_error();
                continue;
            }
        };
        WorkerStats::add(&stats.bytes_in, n as u64);
        match conn.on_input(clock.now(), &b[..n], limits) {
            Input::Echo => match send(sock, b, 0..n, &mut conn, entry, shared).await {
                Some(b) => buf = Some(b),
                None => abandoned = true,
            },
            Input::Consumed | Input::Dropped => buf = Some(b),
        }
    }
    if conn.was_cut() {
        sock.reset();
    }
    if abandoned {
        sock.end_pending();
    }
    conn.close_reason()
}

/// Writes `buf[range]` in full, waking the connection when its alarm rings; `None` when the
/// connection was aborted meanwhile (the buffer stays with the abandoned write).
async fn send<S: Stream>(
    sock: &S,
    mut buf: Vec<u8>,
    range: Range<usize>,
    conn: &mut Connection,
    entry: &Entry,
    shared: &Shared,
) -> Option<Vec<u8>> {
    let (clock, limits) = (&shared.clock, &shared.limits);
    let mut pos = range.start;
    while pos < range.end {
        publish(conn, entry, limits);
        let write = until_woken(sock.write(buf, pos..range.end), &entry.alarm, || {
            wake(conn, entry, clock, limits);
            conn.phase() == Phase::Closed
        });
        let (res, b) = write.await?;
        buf = b;
        match res {
            Ok(0) => {
                conn.on_error();
                return Some(buf);
            }
            Ok(n) => {
                pos += n;
                WorkerStats::add(&shared.stats.bytes_out, n as u64);
                conn.on_sent(clock.now(), n, limits);
            }
            Err(e) => {
                debug!("write failed: {e}");
                conn.on_error();
                return Some(buf);
            }
        }
    }
    Some(buf)
}

/// Tells the connection what changed while it waited (the drain, a deadline that passed),
/// then publishes its next deadline. Called at every turn of the task's loops and on every
/// ring of its alarm, so the deadline the ticker watches is always the connection's own: a
/// drain that begins during a read sets the grace's deadline, which no other call would
/// publish before the read ends.
fn wake(conn: &mut Connection, entry: &Entry, clock: &Clock, limits: &Limits) {
    let now = clock.now();
    if entry.drain.get() {
        conn.drain(now);
    }
    if conn.poll_timeout(limits).is_some_and(|d| d <= now) {
        conn.handle_timeout(now, limits);
    }
    publish(conn, entry, limits);
}

/// Publishes the connection's next deadline for the ticker.
fn publish(conn: &Connection, entry: &Entry, limits: &Limits) {
    entry.set_deadline(conn.poll_timeout(limits));
}

/// Runs `op` to completion, calling `woken` each time `alarm` rings; stops early (`None`,
/// dropping `op`) when `woken` says so.
async fn until_woken<F: Future>(
    op: F,
    alarm: &Alarm,
    mut woken: impl FnMut() -> bool,
) -> Option<F::Output> {
    let mut op = pin!(op);
    loop {
        tokio::select! {
            biased;
            out = op.as_mut() => return Some(out),
            () = alarm.wait() => {
                if woken() {
                    return None;
                }
            }
        }
    }
}
