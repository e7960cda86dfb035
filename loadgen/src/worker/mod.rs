//! One event loop per thread, wrk-style: connect → writable (stamp time) → readable →
//! response complete (record) → next request. Each thread owns its connections, its
//! histograms and its counters; the only things it shares are a stop flag it reads, a
//! progress counter and interval histograms it publishes once per tick, not per request.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use crate::client::fill_pattern;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use ringd::protocol::ProtocolKind;
use slab::Slab;

use crate::args::{Mode, Plan};
use crate::clock::{now_ns, Timer};
use crate::stats::{histogram, ErrorKind, ThreadStats};

mod housekeeping;
mod responses;

/// How often timeouts, reconnects, progress and intervals are looked at.
const TICK_NS: u64 = 100_000_000;
/// Length of one interval-log histogram.
pub const INTERVAL_NS: u64 = 1_000_000_000;
/// A thread whose every connection keeps failing for this long gives up.
const DEAD_AFTER_NS: u64 = 5_000_000_000;
/// Receive scratch buffer per thread.
const SCRATCH: usize = 256 * 1024;
/// Full reads one connection may do per turn of the event loop. A connection whose replies
/// keep arriving as fast as it reads them (stream mode, deep pipelines) would otherwise keep
/// the loop to itself and starve the thread's other connections for seconds.
const READS_PER_TURN: usize = 4;
const TIMER: Token = Token(usize::MAX);

/// One second (or the last part of one) of corrected latency from one thread.
#[derive(Debug)]
pub struct Interval {
    /// Interval number since the end of the warm-up.
    pub index: u64,
    /// Its histogram.
    pub hist: Histogram<u64>,
}

/// What the run tells every thread.
#[derive(Debug)]
pub struct Shared {
    /// The plan.
    pub plan: Arc<Plan>,
    /// When the warm-up ends (ns, CLOCK_MONOTONIC).
    pub warmup_end: u64,
    /// When sending stops, in duration mode.
    pub end: Option<u64>,
    /// Set to stop early (every connection dead elsewhere, or a signal).
    pub stop: AtomicBool,
    /// Measured completions per thread, refreshed every tick for the progress line.
    pub progress: Vec<AtomicU64>,
}

/// One thread's share of the run.
#[derive(Debug)]
pub struct ThreadPlan {
    /// Thread index.
    pub index: usize,
    /// Global ids of this thread's connections (also their verification seeds).
    pub conn_ids: Vec<u64>,
    /// Measured requests this thread sends, in count mode.
    pub quota: Option<u64>,
    /// Open loop: nanoseconds between requests on one connection.
    pub interval_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When the request should have been sent (open loop) or was (closed loop).
    intended: u64,
    /// When it was sent (crr: when its connection was started).
    sent: u64,
    /// Echo: the stream offset at which its response is complete.
    end_offset: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// No socket; (re)connect at `retry_at`.
    Closed,
    /// Connect in progress.
    Connecting,
    /// Established.
    Open,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    target: SocketAddr,
    stream: Option<TcpStream>,
    state: State,
    connect_started: u64,
    retry_at: u64,
    /// Consecutive failures (backoff and dead-run detection).
    failures: u32,
    out: Vec<u8>,
    out_pos: usize,
    inflight: VecDeque<Pending>,
    /// Open loop: intended send times that are due but not yet sent.
    backlog: VecDeque<u64>,
    next_due: u64,
    tx_offset: u64,
    rx_offset: u64,
    /// Partial HTTP / hello response.
    rbuf: Vec<u8>,
    /// HTTP --verify: the body length the first response had.
    body_len: Option<usize>,
    /// Its read budget ran out with bytes left unread: it is in `Worker::unread`.
    unread: bool,
}

/// Runs one thread's event loop to the end of the run.
pub fn run(
    shared: &Shared,
    tp: ThreadPlan,
    intervals: mpsc::Sender<Interval>,
) -> Result<ThreadStats, String> {
    let mut w = Worker::new(shared, &tp, intervals).map_err(|e| format!("event loop: {e}"))?;
    w.run()
}

struct Worker<'a> {
    shared: &'a Shared,
    plan: &'a Plan,
    index: usize,
    quota: Option<u64>,
    interval_ns: Option<u64>,
    poll: Poll,
    timer: Timer,
    conns: Slab<Conn>,
    due: BinaryHeap<Reverse<(u64, usize)>>,
    scratch: Vec<u8>,
    /// Connections with bytes left unread when their budget ran out (edge-triggered
    /// epoll will not report them again), read first thing next turn.
    unread: Vec<(usize, bool)>,
    rec: Recorder,
    interval_index: u64,
    intervals: mpsc::Sender<Interval>,
    measured_sent: u64,
    stopping: bool,
    last_error: Option<String>,
}

impl<'a> Worker<'a> {
    fn new(
        shared: &'a Shared,
        tp: &ThreadPlan,
        intervals: mpsc::Sender<Interval>,
    ) -> io::Result<Self> {
        let plan = &*shared.plan;
        let poll = Poll::new()?;
        let timer = Timer::new()?;
        let timer_fd = timer.as_fd().as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&timer_fd), TIMER, Interest::READABLE)?;
        let now = now_ns();
        let mut conns = Slab::with_capacity(tp.conn_ids.len());
        let mut due = BinaryHeap::new();
        let n = tp.conn_ids.len().max(1) as u64;
        for (i, &id) in tp.conn_ids.iter().enumerate() {
            // Spread first sends over one interval so connections do not fire in lockstep.
            let next_due = tp.interval_ns.map_or(0, |iv| now + iv * i as u64 / n);
            let key = conns.insert(Conn {
                id,
                target: plan.targets[id as usize % plan.targets.len()],
                stream: None,
                state: State::Closed,
                connect_started: 0,
                retry_at: now,
                failures: 0,
                out: Vec::with_capacity(plan.size.max(plan.request.len()) * plan.pipeline),
                out_pos: 0,
                inflight: VecDeque::with_capacity(plan.pipeline),
                backlog: VecDeque::new(),
                next_due,
                tx_offset: 0,
                rx_offset: 0,
                rbuf: Vec::new(),
                body_len: None,
                unread: false,
            });
            if tp.interval_ns.is_some() {
                due.push(Reverse((next_due, key)));
            }
        }
        Ok(Worker {
            shared,
            plan,
            index: tp.index,
            quota: tp.quota,
            interval_ns: tp.interval_ns,
            poll,
            timer,
            conns,
            due,
            scratch: vec![0u8; SCRATCH],
            unread: Vec::new(),
            rec: Recorder {
                stats: ThreadStats::new(),
                interval: histogram(),
                warmup_end: shared.warmup_end,
                last_success: now,
            },
            interval_index: 0,
            intervals,
            measured_sent: 0,
            stopping: false,
            last_error: None,
        })
    }

    fn run(&mut self) -> Result<ThreadStats, String> {
        let mut events = Events::with_capacity(1024);
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
        let mut next_tick = now_ns() + TICK_NS;
        let mut drain_deadline = u64::MAX;
        loop {
            let now = now_ns();
            if !self.stopping && self.should_stop(now) {
                self.stopping = true;
                drain_deadline = now + self.plan.timeout.as_nanos() as u64;
            }
            if self.stopping && (self.inflight() == 0 || now >= drain_deadline) {
                break;
            }
            if !self.stopping {
                self.release_due(now);
            }
            let mut wait = next_tick.saturating_sub(now);
            if let Some(end) = self.shared.end {
                if !self.stopping {
                    wait = wait.min(end.saturating_sub(now));
                }
            }
            if let Some(&Reverse((at, _))) = self.due.peek() {
                if !self.stopping {
                    self.timer.arm_by(at).map_err(|e| format!("timer: {e}"))?;
                }
            }
            if !self.unread.is_empty() {
                wait = 0;
            }
            // Whole milliseconds, rounded up: the timerfd handles finer deadlines.
            let timeout = std::time::Duration::from_millis(wait.div_ceil(1_000_000));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(format!("poll: {e}"));
                }
            }
            for ev in events.iter() {
                if ev.token() == TIMER {
                    self.timer.fired();
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
            self.read_unread();
            let now = now_ns();
            if now >= next_tick {
                next_tick = now + TICK_NS;
                self.tick(now)?;
            }
        }
        self.finish();
        Ok(std::mem::take(&mut self.rec.stats))
    }

    fn should_stop(&self, now: u64) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
            || self.shared.end.is_some_and(|end| now >= end)
            || self.quota.is_some_and(|q| self.measured_sent >= q)
    }

    fn inflight(&self) -> usize {
        self.conns.iter().map(|(_, c)| c.inflight.len()).sum()
    }

    /// Open loop: moves due send times into their connection's backlog and sends.
    fn release_due(&mut self, now: u64) {
        let Some(iv) = self.interval_ns else { return };
        while let Some(&Reverse((at, key))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let c = &mut self.conns[key];
            c.backlog.push_back(at);
            c.next_due = at + iv;
            self.due.push(Reverse((at + iv, key)));
            if self.plan.mode == Mode::Crr {
                if self.conns[key].state == State::Closed && self.conns[key].inflight.is_empty() {
                    let intended = self.conns[key].backlog.pop_front();
                    self.start_transaction(key, now, intended);
                }
            } else {
                self.fill(key, now);
            }
        }
    }

    /// Opens connection `key` (rr and stream).
    fn connect(&mut self, key: usize, now: u64) {
        let c = &mut self.conns[key];
        c.connect_started = now;
        c.tx_offset = 0;
        c.rx_offset = 0;
        c.rbuf.clear();
        c.out.clear();
        c.out_pos = 0;
        self.rec.stats.counters.connects += 1;
        match TcpStream::connect(c.target) {
            Ok(mut s) => {
                if let Err(e) = self.poll.registry().register(
                    &mut s,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.fail(key, ErrorKind::ConnectFailed, &e, now);
                    return;
                }
                let c = &mut self.conns[key];
                c.stream = Some(s);
                c.state = State::Connecting;
            }
            Err(e) => {
                let kind = connect_error_kind(&e);
                self.fail(key, kind, &e, now);
            }
        }
    }

    /// crr: starts one transaction on slot `key`.
    fn start_transaction(&mut self, key: usize, now: u64, intended: Option<u64>) {
        if self.stopping || self.quota.is_some_and(|q| self.measured_sent >= q) {
            return;
        }
        self.connect(key, now);
        let c = &mut self.conns[key];
        if c.state == State::Connecting {
            c.inflight.push_back(Pending {
                intended: intended.unwrap_or(now),
                sent: now,
                end_offset: self.plan.size as u64,
            });
            self.rec.stats.counters.sent += 1;
            if now >= self.shared.warmup_end {
                self.measured_sent += 1;
            }
        }
    }

    /// Queues as many requests as the pipeline allows (rr, stream) and writes them.
    fn fill(&mut self, key: usize, now: u64) {
        let plan = self.plan;
        let c = &mut self.conns[key];
        if c.state != State::Open {
            return;
        }
        while c.inflight.len() < plan.pipeline && !self.stopping {
            let intended = if self.interval_ns.is_some() {
                match c.backlog.pop_front() {
                    Some(t) => t,
                    None => break,
                }
            } else {
                now
            };
            if self.quota.is_some_and(|q| self.measured_sent >= q) {
                break;
            }
            match plan.protocol {
                ProtocolKind::Echo => {
                    let start = c.out.len();
                    c.out.resize(start + plan.size, 0);
                    fill_pattern(c.id, c.tx_offset, &mut c.out[start..]);
                    c.tx_offset += plan.size as u64;
                }
                _ => c.out.extend_from_slice(&plan.request),
            }
            c.inflight.push_back(Pending {
                intended,
                sent: now,
                end_offset: c.tx_offset,
            });
            self.rec.stats.counters.sent += 1;
            if now >= self.shared.warmup_end {
                self.measured_sent += 1;
            }
        }
        self.flush(key, now);
    }

    /// Writes pending output until done or the socket is full.
    fn flush(&mut self, key: usize, now: u64) {
        let measured = now >= self.shared.warmup_end;
        let c = &mut self.conns[key];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        while c.out_pos < c.out.len() {
            match stream.write(&c.out[c.out_pos..]) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return self.fail(key, ErrorKind::Reset, &e, now);
                }
                Ok(n) => {
                    c.out_pos += n;
                    if measured {
                        self.rec.stats.counters.bytes_sent += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(key, ErrorKind::Reset, &e, now),
            }
        }
        c.out.clear();
        c.out_pos = 0;
    }

    fn on_writable(&mut self, key: usize) {
        let now = now_ns();
        let c = &mut self.conns[key];
        if c.state == State::Connecting {
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    let kind = connect_error_kind(&e);
                    return self.fail(key, kind, &e, now);
                }
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(key, ErrorKind::ConnectFailed, &e, now),
            }
            let _ = stream.set_nodelay(true);
            c.state = State::Open;
            if self.plan.mode != Mode::Crr {
                c.failures = 0;
            }
            if self.plan.mode == Mode::Crr {
                if now >= self.shared.warmup_end {
                    let _ = self
                        .rec
                        .stats
                        .connect
                        .record(now.saturating_sub(c.connect_started).max(1));
                }
                match self.plan.protocol {
                    ProtocolKind::Echo => {
                        c.out.resize(self.plan.size, 0);
                        fill_pattern(c.id, 0, &mut c.out);
                    }
                    _ => c.out.extend_from_slice(&self.plan.request),
                }
            } else {
                return self.fill(key, now);
            }
        }
        self.flush(key, now);
    }

    /// crr: closes the finished transaction and starts the next one.
    fn end_transaction(&mut self, key: usize, now: u64) {
        self.close(key);
        self.conns[key].failures = 0;
        if self.interval_ns.is_some() {
            let next = self.conns[key].backlog.pop_front();
            if next.is_some() {
                self.start_transaction(key, now, next);
            }
        } else {
            self.start_transaction(key, now, None);
        }
    }

    fn close(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.state = State::Closed;
        c.out.clear();
        c.out_pos = 0;
        c.rbuf.clear();
    }

    /// Counts an error, drops the connection's in-flight requests and schedules a reconnect.
    fn fail(&mut self, key: usize, kind: ErrorKind, err: &io::Error, now: u64) {
        self.rec.stats.counters.error(kind);
        self.last_error = Some(format!("{}: {err}", self.conns[key].target));
        self.close(key);
        let c = &mut self.conns[key];
        self.rec.stats.counters.failed += c.inflight.len() as u64;
        c.inflight.clear();
        c.failures += 1;
        let backoff_ms = (10u64 << c.failures.min(7)).min(1000);
        c.retry_at = now + backoff_ms * 1_000_000;
    }
}

/// Where completed requests are recorded: the thread's stats and the current interval.
#[derive(Debug)]
struct Recorder {
    /// Everything this thread measured.
    stats: ThreadStats,
    /// Corrected latency of the current interval.
    interval: Histogram<u64>,
    /// When the warm-up ends.
    warmup_end: u64,
    /// When a request last completed (dead-run detection).
    last_success: u64,
}

impl Recorder {
    /// Records one completed request.
    fn complete(&mut self, p: Pending, now: u64) {
        self.last_success = now;
        if now < self.warmup_end {
            self.stats.counters.warmup_completed += 1;
            return;
        }
        self.stats.counters.completed += 1;
        let latency = now.saturating_sub(p.intended).max(1);
        self.stats.latency.saturating_record(latency);
        self.stats
            .service
            .saturating_record(now.saturating_sub(p.sent).max(1));
        self.interval.saturating_record(latency);
    }
}

fn connect_error_kind(e: &io::Error) -> ErrorKind {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        ErrorKind::ConnectRefused
    } else {
        ErrorKind::ConnectFailed
    }
}
