//! One event loop per thread, wrk-style: connect → writable (stamp time) → readable →
//! response complete (record) → next request. Each thread owns its connections, its
//! histograms and its counters; the only things it shares are stop flags it reads, a
//! progress counter and interval histograms it publishes once per tick, not per request.
//!
//! What a connection sends and how its responses count is its [`Session`], which has no
//! socket: this loop owns the sockets and the clock and drives it. Files: [`conn`] (a
//! connection's socket, phase and schedule), `send` (connect, write, close, reopen),
//! `responses` (read, and act on what the session says), `housekeeping` (timeouts,
//! intervals, and the end-of-run accounting).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::args::{Engine, Mode};
use crate::client::{Session, Spec};
use crate::clock::{now_ns, thread_busy_ns, Timer};
use crate::plan::Plan;
use crate::source;
use crate::stats::{Recorder, ThreadStats};

mod conn;
mod housekeeping;
mod responses;
mod send;
mod uring;

use conn::{Conn, State};

/// How often timeouts, progress and intervals are looked at. Reopening a closed connection
/// waits for no tick: it has its own deadline in `Worker::reopening`.
const TICK_NS: u64 = 100_000_000;
/// Length of one interval-log histogram.
pub const INTERVAL_NS: u64 = 1_000_000_000;
/// Receive scratch buffer per thread.
const SCRATCH: usize = 256 * 1024;
/// Full reads one connection may do per turn of the event loop. A connection whose replies
/// keep arriving as fast as it reads them (stream mode, deep pipelines) would otherwise keep
/// the loop to itself and starve the thread's other connections for seconds.
const READS_PER_TURN: usize = 4;
const TIMER: Token = Token(usize::MAX);

/// One second (or the last part of one) of the measured window from one thread.
#[derive(Debug)]
pub struct Interval {
    /// Interval number since the end of the warm-up.
    pub index: u64,
    /// Corrected latency of what completed in it (and, in the last one, the lower bounds
    /// of what was never answered).
    pub hist: Histogram<u64>,
    /// Measured requests completed in it.
    pub completed: u64,
    /// Error events in it.
    pub errors: u64,
}

/// What the run tells every thread.
#[derive(Debug)]
pub struct Shared {
    pub plan: Arc<Plan>,
    /// When the run started (ns, CLOCK_MONOTONIC): the open-loop schedule starts here.
    pub start: u64,
    /// When the warm-up ends.
    pub warmup_end: u64,
    /// When sending stops, in duration mode.
    pub end: Option<u64>,
    /// Set to stop early (a signal): no new requests, wait for the ones in flight.
    pub stop: AtomicBool,
    /// Set to stop waiting for the requests in flight (a second signal).
    pub abort: AtomicBool,
    /// Completions (warm-up included) per thread, refreshed every tick for the progress line.
    pub progress: Vec<AtomicU64>,
}

/// One thread's share of the run.
#[derive(Debug)]
pub struct ThreadPlan {
    /// 0-based, in spawn order: the thread's slot in [`Shared::progress`].
    pub index: usize,
    /// Global ids of this thread's connections (also their verification seeds).
    pub conn_ids: Vec<u64>,
    /// Measured requests this thread sends, in count mode.
    pub quota: Option<u64>,
    /// Open loop: nanoseconds between requests on one connection.
    pub interval_ns: Option<u64>,
}

/// Runs one thread's event loop to the end of the run. Always returns what was measured;
/// the error says why the thread gave up early, if it did.
pub fn run(
    shared: &Shared,
    tp: ThreadPlan,
    intervals: mpsc::Sender<Interval>,
) -> (ThreadStats, Option<String>) {
    match Worker::new(shared, &tp, intervals) {
        Ok(mut w) => w.run(),
        Err(e) => {
            let mut stats = ThreadStats::new();
            stats.stopped_ns = now_ns();
            (stats, Some(format!("event loop: {e}")))
        }
    }
}

/// An engine's own state; everything else in [`Worker`] is the same on both.
enum Io {
    /// Readiness from epoll, and a timerfd for the open-loop schedule.
    Epoll { poll: Poll, timer: Timer },
    /// A ring; its wait's timeout is the open-loop schedule's timer.
    Uring(Box<uring::Ring>),
}

struct Worker<'a> {
    shared: &'a Shared,
    plan: &'a Plan,
    /// What every connection's session sends and checks, from `plan`.
    spec: Spec<'a>,
    index: usize,
    quota: Option<u64>,
    interval_ns: Option<u64>,
    /// Open loop on io_uring (rr, stream): the loop wakes at most once per this many ns (0:
    /// for every send and response), on a grid of this step from the run's start, and
    /// hands the kernel the sends due before the next wake. At most a quarter of a
    /// connection's interval, so one request in flight per connection keeps the schedule
    /// even when the loop sees its response a window after it came.
    window_ns: u64,
    /// The engine: what the sockets are driven with.
    io: Io,
    conns: Slab<Conn>,
    due: BinaryHeap<Reverse<(u64, usize)>>,
    /// Closed connections to open again, by when (`Conn::retry_at`); an entry whose
    /// connection was opened meanwhile, or failed again, is skipped.
    reopening: BinaryHeap<Reverse<(u64, usize)>>,
    scratch: Vec<u8>,
    /// Connections with bytes left unread when their budget ran out (edge-triggered
    /// epoll will not report them again), read first thing next turn.
    unread: Vec<(usize, bool)>,
    rec: Recorder,
    interval_index: u64,
    intervals: mpsc::Sender<Interval>,
    /// Measured requests sent (count mode's quota).
    measured_sent: u64,
    /// No new requests: the run is draining.
    stopping: bool,
    /// Open loop: requests due before this time count as unsent if never sent.
    schedule_end: u64,
    last_error: Option<String>,
    /// Wall time and [`thread_busy_ns`] when the loop first saw the warm-up over.
    busy_from: Option<(u64, u64)>,
}

impl<'a> Worker<'a> {
    fn new(
        shared: &'a Shared,
        tp: &ThreadPlan,
        intervals: mpsc::Sender<Interval>,
    ) -> io::Result<Self> {
        let plan = &*shared.plan;
        let window_ns = match (plan.engine, tp.interval_ns, plan.mode) {
            // crr sends when its socket has connected, and its first recv has no stamp.
            (_, _, Mode::Crr) => 0,
            (Engine::Uring, Some(iv), _) => (plan.batch_window.as_nanos() as u64).min(iv / 4),
            _ => 0,
        };
        let io = match plan.engine {
            Engine::Epoll => {
                let poll = Poll::new()?;
                let timer = Timer::new()?;
                let timer_fd = timer.as_fd().as_raw_fd();
                poll.registry()
                    .register(&mut SourceFd(&timer_fd), TIMER, Interest::READABLE)?;
                Io::Epoll { poll, timer }
            }
            Engine::Uring => Io::Uring(Box::new(uring::Ring::new(
                tp.conn_ids.len(),
                window_ns > 0,
            )?)),
        };
        let now = now_ns();
        let mut conns = Slab::with_capacity(tp.conn_ids.len());
        let mut due = BinaryHeap::new();
        let total = plan.connections as u64;
        for &id in &tp.conn_ids {
            let target = id as usize % plan.targets.len();
            let session = Session::new(id, target, plan.head_request);
            let mut c = Conn::new(session, plan.targets[target], now);
            c.source = source::of_connection(&plan.sources, plan.targets.len(), id);
            // One schedule for the whole run, spread over one interval so connections do
            // not fire in lockstep: exactly rate × time requests fall due.
            c.next_due = tp.interval_ns.map_or(0, |iv| {
                shared.start + (iv as u128 * id as u128 / total as u128) as u64
            });
            let next_due = c.next_due;
            let key = conns.insert(c);
            if tp.interval_ns.is_some() {
                due.push(Reverse((next_due, key)));
            }
        }
        Ok(Worker {
            shared,
            plan,
            spec: plan.client_spec(),
            index: tp.index,
            quota: tp.quota,
            interval_ns: tp.interval_ns,
            window_ns,
            io,
            conns,
            due,
            reopening: BinaryHeap::new(),
            scratch: vec![0u8; SCRATCH],
            unread: Vec::new(),
            rec: Recorder::new(shared.warmup_end, now),
            interval_index: 0,
            intervals,
            measured_sent: 0,
            stopping: false,
            schedule_end: u64::MAX,
            last_error: None,
            busy_from: None,
        })
    }

    fn run(&mut self) -> (ThreadStats, Option<String>) {
        let mut events = Events::with_capacity(1024);
        self.open_connections();
        let mut next_tick = now_ns() + TICK_NS;
        let mut drain_deadline = u64::MAX;
        let gave_up = loop {
            let now = now_ns();
            if self.busy_from.is_none() && now >= self.shared.warmup_end {
                self.busy_from = Some((now, thread_busy_ns()));
            }
            if !self.stopping {
                // Whatever fell due before the end is sent, however late the loop woke.
                self.release_due(now);
                if self.should_stop(now) {
                    self.begin_stop(now);
                    drain_deadline = now + self.plan.timeout.as_nanos() as u64;
                }
            }
            if self.stopping
                && (self.outstanding() == 0
                    || now >= drain_deadline
                    || self.shared.abort.load(Ordering::Relaxed))
            {
                break None;
            }
            let wait = match self.wait_ns(now, next_tick) {
                Ok(wait) => wait,
                Err(e) => break Some(format!("timer: {e}")),
            };
            let turn = match self.io {
                Io::Epoll { .. } => self.epoll_turn(wait, &mut events),
                Io::Uring(_) => self.uring_turn(wait),
            };
            if let Err(e) = turn {
                break Some(e);
            }
            let now = now_ns();
            self.reopen_due(now);
            if now >= next_tick {
                next_tick = now + TICK_NS;
                if let Err(e) = self.tick(now) {
                    break Some(e);
                }
            }
        };
        if !self.stopping {
            self.begin_stop(now_ns());
        }
        self.finish();
        (std::mem::take(&mut self.rec.stats), gave_up)
    }

    /// Waits up to `wait` ns for readiness and handles it.
    fn epoll_turn(&mut self, wait: u64, events: &mut Events) -> Result<(), String> {
        let Io::Epoll { poll, .. } = &mut self.io else {
            unreachable!("an epoll turn on another engine")
        };
        // Whole milliseconds, rounded up: the timerfd handles finer deadlines.
        let timeout = std::time::Duration::from_millis(wait.div_ceil(1_000_000));
        if let Err(e) = poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        self.dispatch(events);
        self.read_unread();
        Ok(())
    }

    /// Opens every connection at the start: rr and stream connect now; closed-loop crr
    /// starts a transaction on each; open-loop crr waits for each one's schedule.
    fn open_connections(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        if self.plan.mode != Mode::Crr {
            for &k in &keys {
                self.connect(k, now_ns());
            }
        } else if self.interval_ns.is_none() {
            for &k in &keys {
                self.start_transaction(k, now_ns(), None);
            }
        }
    }

    /// How long the loop may sleep (ns): until the next tick, the end of the run, a reopen
    /// that falls due, or not at all when connections have bytes left unread. The next send
    /// of the open-loop schedule arms the timerfd (epoll) or ends the ring's wait (uring),
    /// to the nanosecond.
    fn wait_ns(&mut self, now: u64, next_tick: u64) -> io::Result<u64> {
        let mut wait = next_tick.saturating_sub(now);
        if let Some(end) = self.shared.end {
            if !self.stopping {
                wait = wait.min(end.saturating_sub(now));
            }
        }
        if let Some(&Reverse((at, _))) = self.due.peek() {
            if !self.stopping {
                match &mut self.io {
                    Io::Epoll { timer, .. } => timer.arm_by(at)?,
                    Io::Uring(_) => wait = wait.min(self.batched(at).saturating_sub(now)),
                }
            }
        }
        if let Some(&Reverse((at, _))) = self.reopening.peek() {
            wait = wait.min(at.saturating_sub(now));
        }
        if !self.unread.is_empty() {
            wait = 0;
        }
        Ok(wait)
    }

    /// When the loop wakes for a send due at `at`: at once, or with a batch window at the
    /// start of the window `at` falls in, to hand the kernel everything due in it.
    fn batched(&self, at: u64) -> u64 {
        match self.window_ns {
            0 => at,
            w => at - at.saturating_sub(self.shared.start) % w,
        }
    }

    /// Hands each readiness event to its connection (an error wakes both directions, so
    /// that the write or the read sees it).
    fn dispatch(&mut self, events: &Events) {
        for ev in events.iter() {
            if ev.token() == TIMER {
                if let Io::Epoll { timer, .. } = &mut self.io {
                    timer.fired();
                }
                continue;
            }
            let key = ev.token().0;
            if !self.conns.contains(key) {
                continue;
            }
            if ev.is_writable() || ev.is_error() {
                self.on_writable(key);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.on_readable(key, ev.is_read_closed() || ev.is_error());
            }
        }
    }

    fn should_stop(&self, now: u64) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
            || self.shared.end.is_some_and(|end| now >= end)
            || self.quota_reached()
    }

    fn quota_reached(&self) -> bool {
        self.quota.is_some_and(|q| self.measured_sent >= q)
    }

    /// No new requests from now on. The schedule ends at the end of the run (duration
    /// mode), when the quota was reached, or now (a signal, or the thread giving up).
    fn begin_stop(&mut self, now: u64) {
        self.stopping = true;
        // Busy over the window this thread saw measured, up to when it stopped sending: the
        // drain that follows waits on the server.
        let fraction = self.busy_from.map_or(0.0, |(wall, busy)| {
            let window = now_ns().saturating_sub(wall);
            let used = thread_busy_ns().saturating_sub(busy) as f64;
            if window > 0 {
                (used / window as f64).min(1.0)
            } else {
                0.0
            }
        });
        self.rec.stats.busy = vec![fraction];
        let at = match self.shared.end {
            Some(end) => end.min(now),
            None => now,
        };
        self.rec.stats.stopped_ns = at;
        self.schedule_end = at;
    }

    /// Requests sent and not yet answered.
    fn outstanding(&self) -> usize {
        self.conns
            .iter()
            .map(|(_, c)| c.session.outstanding())
            .sum()
    }

    /// Open loop: moves due send times into their connection's backlog and sends.
    fn release_due(&mut self, now: u64) {
        let Some(iv) = self.interval_ns else { return };
        while let Some(&Reverse((at, key))) = self.due.peek() {
            // A batch window: what falls due before the next wake goes to the kernel now.
            if at > now + self.window_ns || self.shared.end.is_some_and(|end| at >= end) {
                break;
            }
            self.due.pop();
            let c = &mut self.conns[key];
            c.backlog.push(at);
            c.next_due = at + iv;
            self.due.push(Reverse((at + iv, key)));
            if self.plan.mode == Mode::Crr {
                let c = &mut self.conns[key];
                if c.state == State::Closed && c.session.in_flight() == 0 && c.retry_at <= now {
                    let intended = c.backlog.pop(iv);
                    self.start_transaction(key, now, intended);
                }
            } else {
                self.fill(key, now);
            }
        }
    }

    /// Counts one new request (not a retry): sent, and measured if meant for the measured
    /// window.
    fn count_sent(&mut self, intended: u64) {
        self.rec.stats.counters.sent += 1;
        if intended >= self.shared.warmup_end {
            self.rec.stats.counters.sent_measured += 1;
            self.measured_sent += 1;
        }
    }
}
