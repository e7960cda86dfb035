//! The `uring` engine: native io_uring on the `io-uring` crate, one ring per pinned worker.
//!
//! Following the liburing networking recipe: a multishot accept on the worker's SO_REUSEPORT
//! listener; a multishot recv per connection into a per-worker provided buffer ring, so an
//! idle connection holds no receive buffer; echo sends straight from the received buffer;
//! at most one send in flight per connection keeps ordering simple, and a small last send
//! carries its FIN linked behind it with `MSG_WAITALL` (all of it is sent, or the link
//! fails); the ring is set up with SINGLE_ISSUER + DEFER_TASKRUN (+ COOP_TASKRUN) and the
//! loop submits and waits once per turn, handling every ready completion before the next wait.
//!
//! Every submission carries a typed [`op::Op`]; each connection's operations are tracked by
//! [`conn::UConn`], which decides what to submit. The worker owns the ring, the buffers and
//! the connection table, and on every way out (return, error, panic) cancels whatever is
//! still in flight and reaps it before any memory the kernel might touch is freed.

/// What a connection's events need from the worker `$w`, borrowed field by field (so that a
/// connection in the worker's table can be borrowed beside it).
macro_rules! conn_env {
    ($w:ident) => {
        Env {
            now: $w.clock.now(),
            limits: &$w.limits,
            pool: &mut *$w.bufs,
            stats: &$w.env.stats,
            submit: &mut $w.submits,
        }
    };
}

mod conn;
#[cfg(test)]
mod fake_pool;
mod fixed;
mod lifecycle;
mod op;
mod pair;
mod probe;
mod proxying;
mod sendq;
mod sock;

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::net::TcpListener;
use std::sync::mpsc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use tracing::{info, warn};

use super::{EngineKind, WorkerCtx, WorkerEnv};
use crate::config::Service;
use crate::connection::{Clock, Connection, Limits, WorkerStats};
use crate::engine::admission::AcceptBackoff;
use crate::engine::control::Lifecycle;
use crate::error::Error;
use crate::proxy::Side;
use conn::{Env, UConn};
use fixed::{SockFd, Table};
use op::{Op, Token};
use proxying::PairSlot;
use ringd_ring::BufRing;
use sock::Submit;

pub use probe::check as check_features;

/// Submission queue size; completions have their own, larger queue.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue size: room for a burst from many connections (the kernel also buffers
/// overflow, IORING_FEAT_NODROP).
const CQ_ENTRIES: u32 = 16384;
/// The loop's heartbeat: a multishot timeout completes this often, so the loop notices a
/// drain request and looks at deadlines even when no connection is active. Unlike a timeout
/// on every wait, it costs no timer per loop turn.
const TICK: types::Timespec = types::Timespec::new().nsec(100_000_000);
/// Connection slots reserved per worker (virtual memory until used).
const RESERVED_CONNS: usize = 65536;
/// Buffer group id of the worker's receive buffers.
const BGID: u16 = 0;

/// A connection in the worker's table.
#[derive(Debug)]
struct Slot {
    /// The socket; taken out when its close is submitted.
    fd: Option<SockFd>,
    /// Its operations and state.
    uc: UConn,
}

/// The multishot accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptState {
    /// In flight.
    Armed,
    /// Paused after a resource error; a timeout re-arms it.
    Retrying,
    /// Not in flight (stopped by the drain).
    Off,
}

/// Runs one worker on its own ring.
pub fn run(ctx: WorkerCtx, ready: mpsc::Sender<Result<(), Error>>) -> io::Result<()> {
    let sqpoll = ctx.config.uring.sqpoll.then_some(1000);
    let mut ring = match probe::build_ring(SQ_ENTRIES, CQ_ENTRIES, sqpoll) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let recv_cap = ringd_ring::sqe::recv_total_limit(&mut ring);
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
            kernel = %crate::engine::availability::kernel_release(),
            "io_uring: SQ {} / CQ {} entries, SINGLE_ISSUER {}, DEFER_TASKRUN, multishot accept and recv (capped at the output bound: {}), {} provided buffers of {} bytes per worker",
            p.sq_entries(),
            p.cq_entries(),
            p.is_setup_single_issuer(),
            if recv_cap { "yes" } else { "no, Linux < 6.17" },
            bufs.entries(),
            ctx.config.buffer_size,
        );
    }
    let (listener, env) = ctx.into_parts();
    let reserved = match env.config.max_connections {
        0 => RESERVED_CONNS,
        n => n.min(RESERVED_CONNS),
    };
    let mut w = Worker {
        limits: env.config.limits(),
        clock: Clock::default(),
        next_sweep: 0,
        ring,
        bufs: ManuallyDrop::new(bufs),
        // Address space for many connections up front: pages are touched (and count in RSS)
        // only as connections arrive, and the table never reallocates and copies under load.
        conns: Slab::with_capacity(match env.config.service {
            Service::Protocol(_) => reserved,
            Service::Proxy(_) => 0,
        }),
        gens: Vec::new(),
        starved: VecDeque::new(),
        pairs: Slab::with_capacity(match env.config.service {
            Service::Proxy(_) => reserved,
            Service::Protocol(_) => 0,
        }),
        service: env.config.service.clone(),
        cursor: env.id,
        to_close: Vec::new(),
        submits: Vec::new(),
        due: Vec::new(),
        cqes: Vec::with_capacity(CQ_ENTRIES as usize),
        outstanding: 0,
        accept: AcceptState::Off,
        accept_direct: false,
        table: Table::default(),
        backoff: AcceptBackoff::default(),
        accept_retry: types::Timespec::new(),
        stopping: None,
        timed_wait: false,
        recv_cap,
        listener,
        env,
    };
    // A cut connection on a table slot is reset with IORING_OP_URING_CMD's setsockopt
    // (Linux 6.7); older kernels keep ordinary descriptors, which are reset directly.
    if w.service.proxy().is_none()
        && w.env.config.direct_descriptors
        && probe::kernel_version() >= (6, 7)
    {
        w.register_table(reserved);
    }
    // Ready only once set up in full: from here on the worker opens nothing but connections.
    let _ = ready.send(Ok(()));
    let result = w.run();
    w.finish();
    result
}

/// One worker: its ring, buffers and connections.
struct Worker {
    /// The ring. Dropped (closed) only after everything in flight was reaped.
    ring: IoUring,
    /// The provided receive buffers; freed only once the kernel is done with them (see
    /// `Drop`), hence not dropped automatically.
    bufs: ManuallyDrop<BufRing>,
    /// Live connections by slot.
    conns: Slab<Slot>,
    /// Generation of each slot (how many connections used it).
    gens: Vec<u32>,
    /// Connections whose recv ran out of buffers, re-armed as buffers come back.
    starved: VecDeque<Token>,
    /// Proxied connections by slot (proxy mode uses these instead of `conns`).
    pairs: Slab<PairSlot>,
    /// What is done with each connection: a protocol (`conns`) or the proxy (`pairs`).
    service: Service,
    /// This worker's round-robin position over the upstreams.
    cursor: usize,
    /// Sockets to close once this turn's other submissions are in: a close costs the kernel
    /// more than a send, and nobody waits for it.
    to_close: Vec<(usize, Side, bool)>,
    /// Scratch: what a connection asked to submit.
    submits: Vec<Submit>,
    /// Scratch: connections whose deadline passed.
    due: Vec<usize>,
    /// Completions copied out of the queue, handled after it is released.
    cqes: Vec<cqueue::Entry>,
    /// Submissions whose last completion has not arrived.
    outstanding: usize,
    /// The multishot accept.
    accept: AcceptState,
    /// The accept in flight takes direct descriptors.
    accept_direct: bool,
    /// The ring's file table (direct descriptors).
    table: Table,
    /// Accept error backoff.
    backoff: AcceptBackoff,
    /// The timespec of a pending accept retry; must live until that timeout completes.
    accept_retry: types::Timespec,
    /// Timeouts and the output bound.
    limits: Limits,
    /// Coarse clock, advanced once per loop turn.
    clock: Clock,
    /// Next look at deadlines, on `clock`.
    next_sweep: u64,
    /// Set once the server stops: how.
    stopping: Option<Lifecycle>,
    /// Bound every wait by `TICK` (kernels without multishot timeouts).
    timed_wait: bool,
    /// The kernel ends a multishot recv once it has delivered the room its connection has
    /// left (Linux 6.17); older kernels rely on the cancel alone, and a connection may take
    /// in one batch of buffers more before the cancel lands.
    recv_cap: bool,
    /// The worker's listener.
    listener: TcpListener,
    /// Configuration, counters, limit, lifecycle.
    env: WorkerEnv,
}

impl Worker {
    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        self.arm_bell();
        self.push(
            opcode::Timeout::new(&TICK)
                .flags(types::TimeoutFlags::MULTISHOT)
                .build(),
            Op::Tick,
        );
        loop {
            self.bufs.publish();
            let batch = &self.env.config.uring;
            let waited = if self.timed_wait {
                let args = types::SubmitArgs::new().timespec(&TICK);
                self.ring.submitter().submit_with_args(1, &args)
            } else if batch.wait_batch > 1 {
                // Wait for a batch of completions, but no longer than `min_wait` once one
                // is there (Linux 6.12). Without a timeout the kernel would end every wait
                // at `min_wait`, completions or not: a spin while idle. With one, an idle
                // wait lasts until the first completion (or the heartbeat's period).
                let args = types::SubmitArgs::new()
                    .min_wait_usec(batch.min_wait_us)
                    .timespec(&TICK);
                self.ring
                    .submitter()
                    .submit_with_args(batch.wait_batch as usize, &args)
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
            // Operations that ended are counted before any is handled: should handling one
            // panic, `Drop` still knows exactly what the kernel holds.
            self.outstanding -= self
                .cqes
                .iter()
                .filter(|c| !cqueue::more(c.flags()))
                .count();
            for i in 0..self.cqes.len() {
                let cqe = self.cqes[i].clone();
                self.handle(cqe);
            }
            self.feed_starved();
            for (key, side, reset) in std::mem::take(&mut self.to_close) {
                let sock = match self.service {
                    Service::Protocol(_) => self.conns.get_mut(key).and_then(|s| s.fd.take()),
                    Service::Proxy(_) => self
                        .pairs
                        .get_mut(key)
                        .and_then(|s| s.fds[side.index()].take())
                        .map(SockFd::Os),
                };
                if let Some(sock) = sock {
                    let token = Token::new(key, self.gens[key]).on(side);
                    self.push_close(sock, token, reset);
                }
            }
            let now = self.clock.advance();
            if now >= self.next_sweep {
                self.next_sweep = now + self.limits.tick().as_millis() as u64;
                self.sweep(now);
                self.maybe_back_to_direct();
            }
            if self.stopping.is_none() {
                let state = crate::engine::control::current(&self.env.drain);
                if state.is_stopping() {
                    self.begin_drain(state);
                }
            }
            if self.stopping.is_some()
                && self.conns.is_empty()
                && self.pairs.is_empty()
                && self.accept == AcceptState::Off
            {
                return Ok(());
            }
        }
    }

    /// Pushes an SQE for `op`, submitting first if the queue is full.
    fn push(&mut self, sqe: squeue::Entry, op: Op) {
        self.push_chain([(sqe, op)]);
    }

    /// Pushes SQEs that must reach the kernel together (a send and the FIN linked behind
    /// it): room for all of them is made first, and the queue's tail is published once,
    /// after the last, so that neither a submit for room nor an SQPOLL thread can take the
    /// head of a link without the rest.
    fn push_chain<const N: usize>(&mut self, chain: [(squeue::Entry, Op); N]) {
        loop {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() >= N {
                for (sqe, op) in chain {
                    let sqe = sqe.user_data(op.encode());
                    // SAFETY: every SQE built by this engine points only at memory that
                    // outlives the operation: provided buffers (owned by `self.bufs`,
                    // returned to the ring only after the send completes), `Out::Owned`
                    // vectors (kept in the connection's queue until their send completes; a
                    // Vec's heap buffer does not move when the Vec does),
                    // `self.accept_retry` (rewritten only once the previous retry completed)
                    // and the static `TICK`. On every way out of the worker, `Drop` cancels
                    // and reaps what is in flight before any of that memory is freed. The
                    // push cannot fail: room was checked above.
                    let _ = unsafe { sq.push(&sqe) };
                }
                // Dropping the queue publishes its tail: the whole chain at once.
                drop(sq);
                self.outstanding += N;
                return;
            }
            drop(sq);
            if let Err(e) = self.ring.submit() {
                warn!("io_uring submit failed: {e}");
            }
        }
    }

    /// Wakes the loop when the lifecycle changes (a drain, a handover), instead of at the
    /// next heartbeat.
    fn arm_bell(&mut self) {
        let fd = types::Fd(self.env.drain.bell().as_raw_fd());
        let sqe = opcode::PollAdd::new(fd, libc::POLLIN as u32)
            .multi(true)
            .build();
        self.push(sqe, Op::Bell);
    }

    fn handle(&mut self, cqe: cqueue::Entry) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(op) = Op::decode(cqe.user_data()) else {
            warn!(
                user_data = cqe.user_data(),
                "completion of an unknown operation"
            );
            return;
        };
        match op {
            Op::Accept => self.on_accept(res, cqueue::more(flags)),
            Op::AcceptRetry => {
                self.accept = AcceptState::Off;
                if self.stopping.is_none() {
                    self.arm_accept();
                }
            }
            Op::AcceptCancel | Op::Teardown | Op::Linger(_) => {}
            Op::Bell => {
                // The lifecycle is looked at after this turn's completions.
                self.env.drain.bell().clear();
                if !cqueue::more(flags) && self.stopping.is_none() && res >= 0 {
                    self.arm_bell();
                }
            }
            Op::Tick => {
                if res == -libc::EINVAL {
                    // Multishot timeouts need Linux 6.4: bound each wait instead.
                    self.timed_wait = true;
                } else if !cqueue::more(flags) {
                    self.push(
                        opcode::Timeout::new(&TICK)
                            .flags(types::TimeoutFlags::MULTISHOT)
                            .build(),
                        Op::Tick,
                    );
                }
            }
            Op::Recv(t) | Op::Send(t) | Op::Fin(t) | Op::Cancel(t) | Op::Connect(t)
                if self.service.proxy().is_some() =>
            {
                self.pair_completion(op, t, res, flags)
            }
            Op::Recv(t) => {
                let (more, bid) = (cqueue::more(flags), cqueue::buffer_select(flags));
                self.with_conn(t, |uc, env| uc.on_recv(res, more, bid, env));
            }
            Op::Send(t) => self.with_conn(t, |uc, env| uc.on_send(res, env)),
            Op::Fin(t) => self.with_conn(t, |uc, env| uc.on_fin(res, env)),
            Op::Cancel(t) => self.with_conn(t, |uc, env| uc.on_cancel(env)),
            Op::Connect(t) => warn!(?t, "a connect completed for a connection that has none"),
            Op::Close(t) if self.service.proxy().is_some() => self.pair_closed(t),
            Op::Close(t) => {
                let key = t.slot as usize;
                if self.conns.contains(key) && self.gens[key] == t.gen {
                    let slot = self.conns.remove(key);
                    slot.uc.conn.count_tls(&self.env.stats);
                    self.finished(slot.uc.conn.close_reason());
                }
            }
        }
    }

    /// Counts a connection that ended.
    fn finished(&mut self, reason: crate::connection::CloseReason) {
        self.env.stats.close(reason);
        if reason.admitted() {
            self.env.limit.release();
        }
    }

    /// Hands an event to the connection `t` names and submits what it asks for.
    fn with_conn(&mut self, t: Token, f: impl FnOnce(&mut UConn, &mut Env<BufRing>)) {
        let key = t.slot as usize;
        if !self.conns.contains(key) || self.gens[key] != t.gen {
            warn!(?t, "completion for a connection that is gone");
            return;
        }
        let slot = &mut self.conns[key];
        let was_starved = slot.uc.sock.starved;
        let mut env = conn_env!(self);
        f(&mut slot.uc, &mut env);
        if slot.uc.sock.starved && !was_starved {
            self.starved.push_back(Token::new(key, self.gens[key]));
        }
        let token = Token::new(key, self.gens[key]);
        let target = self.conns[key].fd.as_ref().map(SockFd::target);
        for i in 0..self.submits.len() {
            match (self.submits[i], target) {
                (Submit::Close { reset, .. }, _) => self.to_close.push((key, Side::Client, reset)),
                (sub, Some(target)) => self.push_socket_op(sub, token, target),
                (_, None) => {}
            }
        }
        self.submits.clear();
    }

    fn on_accept(&mut self, res: i32, more: bool) {
        if !more {
            self.accept = AcceptState::Off;
        }
        if res >= 0 {
            self.backoff.on_success();
            let sock = self.accepted(res);
            self.admit(sock);
        } else if res == -libc::ENFILE && self.accept_direct {
            self.table_full();
        } else if self.stopping.is_none() && res != -libc::ECANCELED {
            let err = io::Error::from_raw_os_error(-res);
            if let Some(pause) = self.backoff.on_error(&err, &self.env.stats) {
                if self.accept == AcceptState::Armed {
                    return;
                }
                self.accept_retry = types::Timespec::from(pause);
                let sqe = opcode::Timeout::new(&self.accept_retry).build();
                self.push(sqe, Op::AcceptRetry);
                self.accept = AcceptState::Retrying;
                return;
            }
        }
        if self.accept == AcceptState::Off && self.stopping.is_none() {
            self.arm_accept();
        }
    }

    /// Starts serving an accepted connection (or, over `--max-connections`, telling it so).
    /// A connection that raced the drain is served too, draining from the start.
    fn admit(&mut self, sock: SockFd) {
        // The loop's clock may be a turn old: a deadline counted from it would come early.
        let now = self.clock.advance();
        let (fd, spec) = match (sock, &self.service) {
            (SockFd::Os(fd), Service::Proxy(_)) => return self.admit_pair(fd),
            (SockFd::Fixed(_), Service::Proxy(_)) => {
                unreachable!("proxy mode never registers the descriptor table (see `run`)")
            }
            (sock, Service::Protocol(spec)) => (sock, spec),
        };
        let conn = if self.env.limit.try_admit() {
            WorkerStats::inc(&self.env.stats.accepted);
            Connection::new(spec, now)
        } else {
            WorkerStats::inc(&self.env.stats.rejected);
            Connection::rejected(spec, now)
        };
        let key = self.conns.insert(Slot {
            fd: Some(fd),
            uc: UConn::new(conn),
        });
        let t = self.next_gen(key);
        match self.stopping {
            Some(_) => self.with_conn(t, |uc, env| uc.on_drain(env)),
            None => self.with_conn(t, |uc, env| uc.step(env)),
        }
    }

    /// A new connection in slot `key`: the slot's next generation, and its token.
    fn next_gen(&mut self, key: usize) -> Token {
        if key >= self.gens.len() {
            self.gens.resize(key + 1, 0);
        }
        self.gens[key] = self.gens[key].wrapping_add(1) & Token::GEN_MASK;
        Token::new(key, self.gens[key])
    }

    /// Re-arms connections whose recv ran out of buffers, as buffers come back.
    /// Oldest first, and no more connections than there are buffers to fill: re-arming one
    /// takes no buffer yet, so waking every starved connection for one free buffer would
    /// only starve them all again.
    fn feed_starved(&mut self) {
        for _ in 0..self.bufs.available() {
            let Some(t) = self.starved.pop_front() else {
                return;
            };
            let key = t.slot as usize;
            let current = self.gens.get(key) == Some(&t.gen);
            match self.service {
                Service::Proxy(_) if current && self.pairs.contains(key) => {
                    self.with_pair(t, |p, env, _| p.on_buffers(env))
                }
                Service::Protocol(_) if current && self.conns.contains(key) => {
                    self.with_conn(t, |uc, env| uc.on_buffers(env))
                }
                _ => {}
            }
        }
    }
}
