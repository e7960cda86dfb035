//! The `uring` engine: native io_uring on the `io-uring` crate, one ring per pinned worker.
//!
//! Following the liburing networking recipe: a multishot accept on the worker's SO_REUSEPORT
//! listener; a multishot recv per connection into a per-worker provided buffer ring, so an
//! idle connection holds no receive buffer; echo sends straight from the received buffer;
//! at most one send in flight per connection keeps ordering simple; the ring is set up with
//! SINGLE_ISSUER + DEFER_TASKRUN (+ COOP_TASKRUN) and the loop submits and waits once per
//! turn, handling every ready completion before the next wait.

mod bufring;
mod lifecycle;
mod probe;
mod sendq;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use tracing::{debug, info, warn};

use super::{reject, AcceptBackoff, EngineKind, WorkerCtx};
use crate::connection::{Clock, CloseReason, Conn, Timeouts, Times, WorkerStats};
use crate::error::Error;
use bufring::BufRing;
use sendq::{Out, SendQueue};

pub use probe::check as check_features;

/// Submission queue size; completions have their own, larger queue.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue size: room for a burst from many connections (the kernel also buffers
/// overflow, IORING_FEAT_NODROP).
const CQ_ENTRIES: u32 = 16384;
/// The loop's heartbeat: a multishot timeout completes this often, so the loop notices a
/// drain request and runs the timeout sweeper even when no connection is active. Unlike a
/// timeout on every wait, it costs no timer per loop turn.
const TICK: types::Timespec = types::Timespec::new().nsec(100_000_000);
/// Connection slots reserved per worker (virtual memory until used).
const RESERVED_CONNS: usize = 65536;
/// Buffer group id of the worker's receive buffers.
const BGID: u16 = 0;

// user_data: connection key << 8 | operation.
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CLOSE: u64 = 4;
const OP_CANCEL: u64 = 5;
const OP_ACCEPT_RETRY: u64 = 6;
const OP_SHUTDOWN: u64 = 7;
const OP_TICK: u64 = 8;

fn user_data(key: usize, op: u64) -> u64 {
    ((key as u64) << 8) | op
}

/// One connection of the ring.
#[derive(Debug)]
struct UConn {
    /// The socket; closed by an IORING_OP_CLOSE once nothing refers to it.
    fd: RawFd,
    /// Protocol state.
    conn: Conn,
    /// Output not yet sent.
    queue: SendQueue,
    /// Bytes in `queue`.
    queued: usize,
    /// A multishot recv is active.
    recv_armed: bool,
    /// A send is in flight (the front of `queue`).
    send_inflight: bool,
    /// No more input wanted: close once the queue is sent.
    closing: bool,
    /// A cancel of the recv was submitted.
    cancel_sent: bool,
    /// The close was submitted.
    close_sent: bool,
    /// Reading paused while too much output is pending.
    throttled: bool,
    /// The recv ended with ENOBUFS; re-armed when buffers come back.
    starved: bool,
    /// Activity times for the idle and header timeouts.
    times: Times,
    /// Why it is closing, once known.
    reason: Option<CloseReason>,
}

/// Runs one worker on its own ring.
pub fn run(ctx: WorkerCtx, ready: mpsc::Sender<Result<(), Error>>) -> io::Result<()> {
    let ring = match probe::build_ring(SQ_ENTRIES, CQ_ENTRIES) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let entries = u16::try_from(ctx.config.buffers).unwrap_or(u16::MAX);
    let bufs = match BufRing::new(&ring, BGID, entries, ctx.config.buffer_size) {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(Error::Runtime {
                worker: ctx.id,
                engine: EngineKind::Uring.name(),
                err: e,
            }));
            return Ok(());
        }
    };
    if ctx.id == 0 {
        let p = ring.params();
        info!(
            kernel = %crate::probe::kernel_release(),
            "io_uring: SQ {} / CQ {} entries, SINGLE_ISSUER {}, DEFER_TASKRUN, multishot accept and recv, {} provided buffers of {} bytes per worker",
            p.sq_entries(),
            p.cq_entries(),
            p.is_setup_single_issuer(),
            bufs.entries(),
            ctx.config.buffer_size,
        );
    }
    // Ready only once set up in full: from here on the worker opens nothing but connections.
    let _ = ready.send(Ok(()));
    let http = ctx.config.protocol.kind == crate::ProtocolKind::Http;
    let timeouts = Timeouts::new(ctx.config.idle_timeout, ctx.config.header_timeout, http);
    let mut w = Worker {
        max_pending: ctx.config.max_pending_output,
        sweep_every: timeouts.sweep_every().map(|d| d.as_millis() as u64),
        next_sweep: 0,
        timeouts,
        clock: Clock::default(),
        http,
        ring,
        bufs,
        // Address space for many connections up front: pages are touched (and count in RSS)
        // only as connections arrive, and the table never reallocates and copies under load.
        conns: Slab::with_capacity(match ctx.config.max_connections {
            0 => RESERVED_CONNS,
            n => n.min(RESERVED_CONNS),
        }),
        starved: Vec::new(),
        to_close: Vec::new(),
        cqes: Vec::with_capacity(CQ_ENTRIES as usize),
        accept_armed: false,
        backoff: AcceptBackoff::default(),
        accept_retry: types::Timespec::new(),
        draining: false,
        timed_wait: false,
        listen_fd: ctx.listener.as_raw_fd(),
        ctx,
    };
    let result = w.run();
    w.finish();
    result
}

struct Worker {
    ring: IoUring,
    bufs: BufRing,
    conns: Slab<UConn>,
    /// Connections waiting for receive buffers.
    starved: Vec<usize>,
    /// Connections to close once this turn's completions are handled.
    to_close: Vec<usize>,
    /// Completions copied out of the queue, handled after it is released.
    cqes: Vec<cqueue::Entry>,
    accept_armed: bool,
    backoff: AcceptBackoff,
    /// `--max-pending-output`.
    max_pending: usize,
    /// The idle and header timeouts.
    timeouts: Timeouts,
    /// Sweep period in ms, if any timeout is on.
    sweep_every: Option<u64>,
    /// Next sweep, on `clock`.
    next_sweep: u64,
    /// Coarse clock for connection times.
    clock: Clock,
    /// Speaking http (a 503 for rejected connections, 408 on header timeouts).
    http: bool,
    /// The timespec of a pending accept retry; must live until that timeout completes.
    accept_retry: types::Timespec,
    draining: bool,
    /// Bound every wait by `TICK` (kernels without multishot timeouts).
    timed_wait: bool,
    listen_fd: RawFd,
    ctx: WorkerCtx,
}

impl Worker {
    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        self.arm_tick();
        loop {
            self.bufs.publish();
            let waited = if self.timed_wait {
                let args = types::SubmitArgs::new().timespec(&TICK);
                self.ring.submitter().submit_with_args(1, &args)
            } else {
                self.ring.submit_and_wait(1)
            };
            match waited {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
            self.cqes.clear();
            self.cqes.extend(self.ring.completion());
            for i in 0..self.cqes.len() {
                let cqe = self.cqes[i].clone();
                self.handle(cqe);
            }
            self.feed_starved();
            for key in std::mem::take(&mut self.to_close) {
                let sqe = opcode::Close::new(types::Fd(self.conns[key].fd))
                    .build()
                    .user_data(user_data(key, OP_CLOSE));
                self.push(sqe);
            }
            if let Some(every) = self.sweep_every {
                let now = self.clock.advance();
                if now >= self.next_sweep {
                    self.next_sweep = now + every;
                    self.sweep(now);
                }
            }
            if !self.draining {
                let state = crate::shutdown::current(&self.ctx.drain);
                if state.is_stopping() {
                    self.begin_drain(state.keeps_listeners());
                }
            }
            if self.draining && self.conns.is_empty() && !self.accept_armed {
                return Ok(());
            }
        }
    }

    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every SQE built by this engine points only at memory that outlives the
            // operation: provided buffers (owned by `self.bufs`, returned to the ring only after
            // the send completes), `Out::Owned` vectors (kept in the connection's queue until
            // their send completes; a Vec's heap buffer does not move when the Vec does), and
            // `self.accept_retry` (rewritten only once the previous retry completed).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                warn!("io_uring submit failed: {e}");
            }
        }
    }

    fn arm_tick(&mut self) {
        let sqe = opcode::Timeout::new(&TICK)
            .flags(types::TimeoutFlags::MULTISHOT)
            .build()
            .user_data(user_data(0, OP_TICK));
        self.push(sqe);
    }

    fn arm_accept(&mut self) {
        // A multishot accept stays first in the socket's wait queue and the kernel wakes only
        // the first waiter: on a socket that several workers share it would take every
        // connection. A single accept re-armed after each completion queues up behind the
        // other workers' instead, so connections go round.
        let sqe = if self.ctx.shared_listener {
            opcode::Accept::new(
                types::Fd(self.listen_fd),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .flags(libc::SOCK_CLOEXEC)
            .build()
        } else {
            opcode::AcceptMulti::new(types::Fd(self.listen_fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
        }
        .user_data(user_data(0, OP_ACCEPT));
        self.push(sqe);
        self.accept_armed = true;
    }

    fn arm_recv(&mut self, key: usize) {
        let c = &mut self.conns[key];
        c.recv_armed = true;
        c.cancel_sent = false;
        let sqe = opcode::RecvMulti::new(types::Fd(c.fd), self.bufs.bgid())
            .build()
            .user_data(user_data(key, OP_RECV));
        self.push(sqe);
    }

    fn handle(&mut self, cqe: cqueue::Entry) {
        let ud = cqe.user_data();
        let key = (ud >> 8) as usize;
        match ud & 0xff {
            OP_ACCEPT => self.on_accept(cqe.result(), cqueue::more(cqe.flags())),
            OP_ACCEPT_RETRY => {
                if !self.draining {
                    self.arm_accept();
                } else {
                    self.accept_armed = false;
                }
            }
            OP_TICK => {
                if cqe.result() == -libc::EINVAL {
                    // Multishot timeouts need Linux 6.4: bound each wait instead.
                    self.timed_wait = true;
                } else if !cqueue::more(cqe.flags()) {
                    self.arm_tick();
                }
            }
            OP_RECV => self.on_recv(key, cqe.result(), cqe.flags()),
            OP_SEND => self.on_send(key, cqe.result()),
            OP_CLOSE => {
                let c = self.conns.remove(key);
                self.ctx.stats.close(c.reason.unwrap_or(CloseReason::Peer));
                self.ctx.limit.release();
            }
            // A short send breaks the chain and cancels the shutdown: do it once flushed.
            OP_SHUTDOWN if cqe.result() == -libc::ECANCELED => {
                if let Some(c) = self.conns.get_mut(key) {
                    c.cancel_sent = false;
                    self.after_io(key);
                }
            }
            _ => {} // OP_CANCEL: the cancelled operation reports on its own.
        }
    }

    fn on_accept(&mut self, res: i32, more: bool) {
        if !more {
            self.accept_armed = false;
        }
        if res >= 0 {
            self.backoff.on_success();
            let fd = res;
            let admitted = !self.draining && self.ctx.limit.try_admit();
            if !admitted {
                if !self.draining {
                    reject(fd, self.http, &self.ctx.stats);
                }
                // SAFETY: a fresh fd from accept that nothing else refers to.
                unsafe { libc::close(fd) };
            } else {
                WorkerStats::inc(&self.ctx.stats.accepted);
                let key = self.conns.insert(UConn {
                    fd,
                    conn: Conn::new(&self.ctx.config.protocol),
                    queue: SendQueue::default(),
                    queued: 0,
                    recv_armed: false,
                    send_inflight: false,
                    closing: false,
                    cancel_sent: false,
                    close_sent: false,
                    throttled: false,
                    starved: false,
                    times: Times::new(self.clock.now()),
                    reason: None,
                });
                self.arm_recv(key);
            }
        } else if !self.draining {
            let err = io::Error::from_raw_os_error(-res);
            if let Some(pause) = self.backoff.on_error(&err, &self.ctx.stats) {
                if self.accept_armed {
                    return;
                }
                self.accept_retry = types::Timespec::from(pause);
                let sqe = opcode::Timeout::new(&self.accept_retry)
                    .build()
                    .user_data(user_data(0, OP_ACCEPT_RETRY));
                self.push(sqe);
                self.accept_armed = true;
                return;
            }
        }
        if !self.accept_armed && !self.draining {
            self.arm_accept();
        }
    }

    fn on_recv(&mut self, key: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let c = &mut self.conns[key];
        if !more {
            c.recv_armed = false;
        }
        if res > 0 {
            // The kernel always names the buffer it filled for a buffer-select recv.
            let Some(bid) = cqueue::buffer_select(flags) else {
                warn!("recv completion without a buffer id");
                return self.fail(key);
            };
            self.bufs.taken();
            let n = res as usize;
            let now = self.clock.now();
            let stats = &self.ctx.stats;
            WorkerStats::add(&stats.bytes_in, n as u64);
            let c = &mut self.conns[key];
            if c.closing {
                self.bufs.give(bid);
            } else if c.conn.is_echo() {
                c.times.touch(now, false);
                c.queue.push_back(Out::Buf {
                    bid,
                    off: 0,
                    len: n,
                });
                c.queued += n;
            } else {
                let fed = c.conn.on_bytes(self.bufs.bytes(bid, n));
                c.times.touch(now, c.conn.awaiting_header());
                WorkerStats::add(&stats.requests, fed.answered);
                self.bufs.give(bid);
                self.queue_output(key);
                if fed.close {
                    let c = &mut self.conns[key];
                    c.closing = true;
                    c.reason.get_or_insert(CloseReason::Protocol);
                }
            }
        } else if res == 0 {
            let c = &mut self.conns[key];
            c.conn.on_eof();
            c.closing = true;
            c.reason.get_or_insert(CloseReason::Peer);
            self.queue_output(key);
        } else if res == -libc::ENOBUFS {
            WorkerStats::inc(&self.ctx.stats.recv_enobufs);
            let c = &mut self.conns[key];
            if !c.starved && !c.recv_armed {
                c.starved = true;
                self.starved.push(key);
            }
        } else if res != -libc::ECANCELED {
            debug!("recv failed: {}", io::Error::from_raw_os_error(-res));
            return self.fail(key);
        }
        self.kick_send(key);
        self.after_io(key);
    }

    fn on_send(&mut self, key: usize, res: i32) {
        let c = &mut self.conns[key];
        c.send_inflight = false;
        if res < 0 {
            debug!("send failed: {}", io::Error::from_raw_os_error(-res));
            return self.fail(key);
        }
        let mut sent = res as usize;
        c.queued -= sent;
        c.times.touch_send(self.clock.now());
        WorkerStats::add(&self.ctx.stats.bytes_out, sent as u64);
        while sent > 0 || c.queue.front().is_some_and(|o| o.remaining() == 0) {
            let Some(front) = c.queue.front_mut() else {
                break;
            };
            let n = sent.min(front.remaining());
            front.advance(n);
            sent -= n;
            if front.remaining() == 0 {
                match c.queue.pop_front() {
                    Some(Out::Buf { bid, .. }) => self.bufs.give(bid),
                    // Keep the allocation for the next output of this connection.
                    Some(Out::Owned { mut data, .. }) if c.conn.out.capacity() == 0 => {
                        data.clear();
                        c.conn.out = data;
                    }
                    Some(Out::Owned { .. }) => {}
                    None => {}
                }
            }
        }
        self.kick_send(key);
        self.after_io(key);
    }

    /// Moves the protocol's output into the send queue.
    fn queue_output(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.conn.out.is_empty() {
            let data = std::mem::take(&mut c.conn.out);
            c.queued += data.len();
            c.queue.push_back(Out::Owned { data, off: 0 });
        }
    }

    /// Starts sending the front of the queue if nothing is in flight.
    fn kick_send(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.send_inflight {
            return;
        }
        let (ptr, len) = match c.queue.front() {
            Some(Out::Buf { bid, off, len }) => (self.bufs.ptr(*bid, *off), len - off),
            Some(Out::Owned { data, off }) => (data[*off..].as_ptr(), data.len() - off),
            None => return,
        };
        c.send_inflight = true;
        let mut sqe = opcode::Send::new(types::Fd(c.fd), ptr, len as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(key, OP_SEND));
        // The last send of a closing connection: chain the shutdown to it, so the FIN leaves
        // right after the data, in the same submission (the origin's reply-then-close).
        let shutdown = c.closing && c.queue.len() == 1 && c.recv_armed && !c.cancel_sent;
        if shutdown {
            c.cancel_sent = true;
            sqe = sqe.flags(squeue::Flags::IO_LINK);
        }
        let fd = c.fd;
        self.push(sqe);
        if shutdown {
            let sqe = opcode::Shutdown::new(types::Fd(fd), libc::SHUT_RDWR)
                .build()
                .user_data(user_data(key, OP_SHUTDOWN));
            self.push(sqe);
        }
    }

    /// Re-arms, throttles or closes after a completion changed a connection's state.
    fn after_io(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.closing {
            if !c.throttled && c.queued > self.max_pending {
                c.throttled = true;
            } else if c.throttled && c.queued <= self.max_pending / 2 {
                c.throttled = false;
            }
        }
        let c = &mut self.conns[key];
        let want_recv = !c.closing && !c.throttled && !c.starved;
        if want_recv && !c.recv_armed {
            return self.arm_recv(key);
        }
        let flushed = !c.send_inflight && c.queue.is_empty();
        if c.closing && flushed && c.recv_armed && !c.cancel_sent {
            // Everything is sent: shut the socket down now, so the peer sees the FIN at once
            // (a close would wait for the recv to let go of the socket); the shutdown also
            // ends the multishot recv, after which the close is submitted.
            c.cancel_sent = true;
            // SAFETY: shutdown(2) on this connection's fd, open until its close completes.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            return;
        }
        if !c.closing && !want_recv && c.recv_armed && !c.cancel_sent && !c.starved {
            // Throttled: stop reading until the output drains.
            c.cancel_sent = true;
            let sqe = opcode::AsyncCancel::new(user_data(key, OP_RECV))
                .build()
                .user_data(user_data(key, OP_CANCEL));
            return self.push(sqe);
        }
        if c.closing && !c.recv_armed && flushed && !c.close_sent {
            // Closed after this turn's other submissions: a close costs the kernel more
            // than a send, and nobody waits for it.
            c.close_sent = true;
            self.to_close.push(key);
        }
    }

    /// A connection failed: drop its unsent output and close it.
    fn fail(&mut self, key: usize) {
        let c = &mut self.conns[key];
        c.closing = true;
        c.reason.get_or_insert(CloseReason::Error);
        let keep = usize::from(c.send_inflight);
        while c.queue.len() > keep {
            match c.queue.pop_back() {
                Some(Out::Buf { bid, .. }) => self.bufs.give(bid),
                Some(Out::Owned { .. }) | None => {}
            }
        }
        c.queued = c.queue.iter().map(Out::remaining).sum();
        self.after_io(key);
    }

    /// Re-arms connections whose recv ran out of buffers, as buffers come back.
    fn feed_starved(&mut self) {
        while self.bufs.available() > 0 {
            let Some(key) = self.starved.pop() else {
                return;
            };
            if let Some(c) = self.conns.get_mut(key) {
                c.starved = false;
                self.after_io(key);
            }
        }
    }
}
