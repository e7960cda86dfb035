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
//! [`conn::UConn`], which decides what to submit. The ring, the buffers and whatever memory
//! an operation in flight uses belong to the ring driver (`ringd_ring::Driver`), which on
//! every way out (return, error, panic) cancels what is still in flight and reaps it before
//! any of that memory is freed.

mod accept;
mod conn;
#[cfg(test)]
mod fake_pool;
mod lifecycle;
mod op;
mod pair;
mod probe;
mod proxying;
mod sendq;
mod session;
mod sock;
mod submit;

use std::io;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use io_uring::types;
use ringd_ring::{Driver, Event, Setup, Sqe, Wait};
use tracing::{debug, info, warn};

use super::{EngineKind, WorkerCtx, WorkerEnv};
use crate::config::Service;
use crate::connection::{Clock, Limits};
use crate::engine::admission::AcceptBackoff;
use crate::engine::control::Lifecycle;
use crate::error::Error;
use op::Op;
use session::{SessionEvent, Sessions};
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
const TICK: Duration = Duration::from_millis(100);
/// [`TICK`] as a wait's bound.
const TICK_SPEC: types::Timespec = types::Timespec::new().nsec(100_000_000);
/// Connection slots reserved per worker (virtual memory until used).
const RESERVED_CONNS: usize = 65536;
/// Buffer group id of the worker's receive buffers.
const BGID: u16 = 0;

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
    let Some(driver) = setup_driver(&ctx, &ready) else {
        return Ok(());
    };
    let (listener, env) = ctx.into_parts();
    let reserved = match env.config.max_connections {
        0 => RESERVED_CONNS,
        n => n.min(RESERVED_CONNS),
    };
    let mut w = Worker::new(driver, listener, env, reserved);
    // A cut connection on a table slot is reset with IORING_OP_URING_CMD's setsockopt
    // (Linux 6.7); older kernels keep ordinary descriptors, which are reset directly. The
    // access log needs the client's address, which a direct descriptor cannot be asked for.
    if w.serving.service.proxy().is_none()
        && w.env.config.direct_descriptors
        && w.env.access_log.is_none()
        && ringd_ring::setup::kernel_version() >= (6, 7)
    {
        w.register_table(reserved);
    }
    // Ready only once set up in full: from here on the worker opens nothing but connections.
    let _ = ready.send(Ok(()));
    let result = w.run();
    w.finish();
    result
}

/// Sets up the worker's ring and its receive buffers, or tells `ready` why not.
fn setup_driver(ctx: &WorkerCtx, ready: &mpsc::Sender<Result<(), Error>>) -> Option<Driver<Op>> {
    let setup = Setup {
        sq: SQ_ENTRIES,
        cq: CQ_ENTRIES,
        sqpoll: ctx.config.uring.sqpoll.then_some(1000),
    };
    let mut driver = match probe::build_driver(setup) {
        Ok(d) => d,
        Err(e) => {
            let _ = ready.send(Err(e));
            return None;
        }
    };
    let entries = u16::try_from(ctx.config.buffers).unwrap_or(u16::MAX);
    if let Err(e) = driver.register_buffers(BGID, entries, ctx.config.buffer_size) {
        let _ = ready.send(Err(Error::Runtime {
            worker: ctx.id,
            engine: EngineKind::Uring.name(),
            err: e,
        }));
        return None;
    }
    if ctx.id == 0 {
        let p = driver.params();
        info!(
            kernel = %crate::engine::availability::kernel_release(),
            "io_uring: SQ {} / CQ {} entries, SINGLE_ISSUER {}, DEFER_TASKRUN, multishot accept and recv (capped at the output bound: {}), {} provided buffers of {} bytes per worker",
            p.sq_entries(),
            p.cq_entries(),
            p.is_setup_single_issuer(),
            if driver.features().recv_total_limit { "yes" } else { "no, Linux < 6.17" },
            entries,
            ctx.config.buffer_size,
        );
    }
    Some(driver)
}

/// One worker: its ring, its sessions, and the parts of its loop.
struct Worker {
    /// The ring, its buffers and the memory of every operation in flight.
    driver: Driver<Op>,
    /// The sessions (connections and proxied pairs).
    sessions: Sessions,
    /// What is done with each connection, and the state that needs.
    serving: Serving,
    /// The accept on the worker's listener.
    acceptor: Acceptor,
    /// Time: the clock, the limits, the deadline sweep.
    time: Time,
    /// Buffers reused every turn.
    scratch: Scratch,
    /// Set once the server stops: how.
    stopping: Option<Lifecycle>,
    /// Configuration, counters, limit, lifecycle.
    env: WorkerEnv,
}

/// What is done with each connection.
#[derive(Debug)]
struct Serving {
    /// A protocol, or the proxy.
    service: Service,
    /// This worker's round-robin position over the upstreams.
    cursor: usize,
}

/// The accept on the worker's listener.
#[derive(Debug)]
struct Acceptor {
    /// The worker's listener.
    listener: TcpListener,
    /// The accept's state.
    state: AcceptState,
    /// The accept in flight takes direct descriptors.
    direct: bool,
    /// Accept error backoff.
    backoff: AcceptBackoff,
}

/// Time as the worker keeps it.
#[derive(Debug)]
struct Time {
    /// Timeouts and the output bound.
    limits: Limits,
    /// Coarse clock, advanced once per loop turn.
    clock: Clock,
    /// Next look at deadlines, on `clock`.
    next_sweep: u64,
    /// Bound every wait by `TICK` (kernels without multishot timeouts).
    timed_wait: bool,
}

/// Buffers reused every turn.
#[derive(Debug, Default)]
struct Scratch {
    /// What a session asked to submit.
    submits: Vec<Submit>,
    /// Sockets to close once this turn's other submissions are in (a close costs the
    /// kernel more than a send, and nobody waits for it); `true`: with a reset.
    to_close: Vec<(op::Token, bool)>,
    /// Sessions whose deadline passed.
    due: Vec<op::Token>,
    /// This turn's completions.
    events: Vec<Event<Op>>,
}

impl Worker {
    fn new(driver: Driver<Op>, listener: TcpListener, env: WorkerEnv, reserved: usize) -> Self {
        Worker {
            driver,
            sessions: Sessions::new(env.config.service.proxy().is_some(), reserved),
            serving: Serving {
                service: env.config.service.clone(),
                cursor: env.id,
            },
            acceptor: Acceptor {
                listener,
                state: AcceptState::Off,
                direct: false,
                backoff: AcceptBackoff::default(),
            },
            time: Time {
                limits: env.config.limits(),
                clock: Clock::default(),
                next_sweep: 0,
                timed_wait: false,
            },
            scratch: Scratch {
                events: Vec::with_capacity(CQ_ENTRIES as usize),
                ..Scratch::default()
            },
            stopping: None,
            env,
        }
    }

    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        self.arm_bell();
        self.driver.push(Sqe::timeout(TICK, true, Op::Tick));
        loop {
            self.wait()?;
            let mut events = std::mem::take(&mut self.scratch.events);
            self.driver.complete(&mut events);
            if let Some(c) = self.env.live.changed() {
                // A reload, before this turn's accepts: new connections follow it, open
                // pairs keep their upstream slot.
                self.time.limits = c.limits();
                self.serving.service = c.service.clone();
            }
            for event in events.drain(..) {
                self.handle(event);
            }
            self.scratch.events = events;
            self.feed_starved();
            self.push_closes();
            let now = self.time.clock.advance();
            if now >= self.time.next_sweep {
                self.time.next_sweep = now + self.time.limits.tick().as_millis() as u64;
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
                && self.sessions.len() == 0
                && self.acceptor.state == AcceptState::Off
            {
                return Ok(());
            }
        }
    }

    /// Submits this turn's SQEs and waits for completions.
    fn wait(&mut self) -> io::Result<()> {
        let batch = &self.env.config.uring;
        let wait = if self.time.timed_wait {
            Wait::Timed(&TICK_SPEC)
        } else if batch.wait_batch > 1 {
            // Wait for a batch of completions, but no longer than `min_wait` once one is
            // there (Linux 6.12). Without a timeout the kernel would end every wait at
            // `min_wait`, completions or not: a spin while idle. With one, an idle wait lasts
            // until the first completion (or the heartbeat's period).
            Wait::Batch {
                want: batch.wait_batch as usize,
                min_wait_us: batch.min_wait_us,
                timeout: &TICK_SPEC,
            }
        } else {
            Wait::One
        };
        self.driver.submit_and_wait(wait)
    }

    /// Wakes the loop when the lifecycle changes (a drain, a handover), instead of at the
    /// next heartbeat.
    fn arm_bell(&mut self) {
        let fd = self.env.drain.bell().as_raw_fd();
        self.driver.push(Sqe::poll_in_multi(fd, Op::Bell));
    }

    /// Handles one completion: the worker's own operations here, a session's by the
    /// session.
    fn handle(&mut self, event: Event<Op>) {
        let c = match event {
            Event::Done(c) => c,
            Event::Unknown { user_data, result } => {
                return warn!(user_data, result, "completion of an unknown operation");
            }
        };
        let (res, more) = (c.result, c.more());
        match c.op {
            Op::Accept => self.on_accept(res, more),
            Op::AcceptRetry => {
                self.acceptor.state = AcceptState::Off;
                if self.stopping.is_none() {
                    self.arm_accept();
                }
            }
            Op::AcceptCancel => {}
            Op::Linger(t) if res < 0 => {
                // The close linked behind it runs anyway, without the reset.
                debug!(?t, res, "setting SO_LINGER before a reset failed");
            }
            Op::Linger(_) => {}
            Op::Bell => self.on_bell(res, more),
            Op::Tick => self.on_tick(res, more),
            Op::Recv(t) => {
                let bid = c.buffer_id();
                self.dispatch(t, SessionEvent::Recv { res, more, bid })
            }
            Op::Send(t) => match c.buf {
                Some(buf) => self.dispatch(t, SessionEvent::Send(res, buf)),
                None => warn!(?t, "a send completed without its bytes"),
            },
            Op::Fin(t) => self.dispatch(t, SessionEvent::Fin(res)),
            Op::Cancel(t) => self.dispatch(t, SessionEvent::Cancel),
            Op::Connect(t) => self.dispatch(t, SessionEvent::Connect(res)),
            Op::Close(t) => self.closed(t),
        }
    }

    fn on_bell(&mut self, res: i32, more: bool) {
        // The lifecycle is looked at after this turn's completions.
        self.env.drain.bell().clear();
        if !more && self.stopping.is_none() && res >= 0 {
            self.arm_bell();
        }
    }

    fn on_tick(&mut self, res: i32, more: bool) {
        if res == -libc::EINVAL {
            // Multishot timeouts need Linux 6.4: bound each wait instead.
            self.time.timed_wait = true;
        } else if !more {
            self.driver.push(Sqe::timeout(TICK, true, Op::Tick));
        }
    }
}
