//! Connections: between the engine (which moves bytes) and the protocol (which decides what
//! they mean). [`Conn`] keeps a connection's unconsumed input and pending output and feeds the
//! protocol; [`Registry`] lets a worker reach all its connections for timeouts and shutdown;
//! [`WorkerStats`] counts what happens, exactly, for the metrics endpoint.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use slab::Slab;

use crate::protocol::{ProtocolSpec, Session};

/// One connection's protocol state and buffers, independent of the engine.
#[derive(Debug)]
pub struct Conn {
    /// The protocol state machine.
    session: Session,
    /// Input the protocol has not consumed yet (an incomplete request).
    pending: Vec<u8>,
    /// Output waiting to be sent.
    pub out: Vec<u8>,
}

/// What feeding bytes to a connection produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Close once the output is flushed.
    pub close: bool,
    /// Requests answered by this input.
    pub answered: u64,
}

impl Conn {
    /// A connection speaking `spec`. Its buffers allocate on first use, so an idle echo
    /// connection costs only this struct.
    pub fn new(spec: &ProtocolSpec) -> Self {
        Conn {
            session: spec.session(),
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    /// See [`Session::is_echo`]: the engine may send received buffers back as they are.
    pub fn is_echo(&self) -> bool {
        self.session.is_echo()
    }

    /// True while an incomplete HTTP request waits for more bytes: the header timeout runs.
    pub fn awaiting_header(&self) -> bool {
        self.session.is_http() && !self.pending.is_empty()
    }

    /// Feeds bytes that arrived; output is appended to [`Conn::out`].
    pub fn on_bytes(&mut self, data: &[u8]) -> Fed {
        let before = self.session.answered();
        let close = if self.pending.is_empty() {
            // Fast path: whole requests in one read need no copy.
            let o = self.session.on_input(data, &mut self.out);
            if !o.close && o.consumed < data.len() {
                self.pending.extend_from_slice(&data[o.consumed..]);
            }
            o.close
        } else {
            self.pending.extend_from_slice(data);
            let o = self.session.on_input(&self.pending, &mut self.out);
            self.pending.drain(..o.consumed);
            o.close
        };
        Fed {
            close,
            answered: self.session.answered() - before,
        }
    }

    /// The peer closed its side; final output (if any) is appended to [`Conn::out`].
    pub fn on_eof(&mut self) {
        self.session.on_eof(&mut self.out);
    }
}

/// Why a connection was closed (a label of `ringd_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed (EOF).
    Peer,
    /// The protocol ended it (hello's reply, `Connection: close`, 400/431).
    Protocol,
    /// No bytes either way for `--idle-timeout`.
    Idle,
    /// An HTTP header block did not complete within `--header-timeout` (408).
    HeaderTimeout,
    /// A socket error (reset, broken pipe).
    Error,
    /// Closed by a drain (SIGTERM) while idle.
    Drain,
}

impl CloseReason {
    /// All reasons, in counter order.
    pub const ALL: [CloseReason; 6] = [
        CloseReason::Peer,
        CloseReason::Protocol,
        CloseReason::Idle,
        CloseReason::HeaderTimeout,
        CloseReason::Error,
        CloseReason::Drain,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::Protocol => "protocol",
            CloseReason::Idle => "idle",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Error => "error",
            CloseReason::Drain => "drain",
        }
    }
}

/// Per-connection times the worker's sweeper reads, in milliseconds of the worker's coarse
/// clock ([`Clock`]). Engines update them as bytes move; reading and writing them is a plain
/// load and store.
#[derive(Debug, Default)]
pub struct Times {
    /// Last time bytes moved in either direction.
    pub last_active: Cell<u64>,
    /// When the incomplete request now waiting began (0: none).
    pub header_since: Cell<u64>,
    /// Set by the sweeper or the drain when they end the connection.
    pub reason: Cell<Option<CloseReason>>,
}

impl Times {
    /// New times, active now.
    pub fn new(now: u64) -> Self {
        let t = Times::default();
        t.last_active.set(now);
        t
    }

    /// Bytes moved at `now`; `awaiting_header` says an incomplete request is pending.
    #[inline]
    pub fn touch(&self, now: u64, awaiting_header: bool) {
        self.last_active.set(now);
        if !awaiting_header {
            self.header_since.set(0);
        } else if self.header_since.get() == 0 {
            self.header_since.set(now);
        }
    }

    /// Marks the connection active again without a header change (a send completed).
    #[inline]
    pub fn touch_send(&self, now: u64) {
        self.last_active.set(now);
    }

    /// Which timeout, if any, this connection has run past at `now`.
    pub fn expired(&self, now: u64, limits: &Timeouts) -> Option<CloseReason> {
        if self.reason.get().is_some() {
            return None;
        }
        let since = self.header_since.get();
        if limits.header_ms > 0 && since > 0 && now.saturating_sub(since) >= limits.header_ms {
            return Some(CloseReason::HeaderTimeout);
        }
        if limits.idle_ms > 0 && now.saturating_sub(self.last_active.get()) >= limits.idle_ms {
            return Some(CloseReason::Idle);
        }
        None
    }
}

/// Timeouts in milliseconds (0: off).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// `--idle-timeout`.
    pub idle_ms: u64,
    /// `--header-timeout` (http only).
    pub header_ms: u64,
}

impl Timeouts {
    /// From the configured durations.
    pub fn new(idle: Duration, header: Duration, http: bool) -> Self {
        Timeouts {
            idle_ms: idle.as_millis() as u64,
            header_ms: if http { header.as_millis() as u64 } else { 0 },
        }
    }

    /// How often the sweeper should look: a quarter of the shortest timeout, 10 ms to 1 s.
    pub fn sweep_every(&self) -> Option<Duration> {
        let shortest = [self.idle_ms, self.header_ms]
            .into_iter()
            .filter(|&t| t > 0)
            .min()?;
        Some(Duration::from_millis((shortest / 4).clamp(10, 1000)))
    }
}

/// A worker's coarse millisecond clock, advanced by its sweeper, read on the hot path.
#[derive(Debug)]
pub struct Clock {
    /// When the worker started.
    origin: std::time::Instant,
    /// Milliseconds since `origin`, plus one so that 0 can mean "never".
    now: Cell<u64>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            origin: std::time::Instant::now(),
            now: Cell::new(1),
        }
    }
}

impl Clock {
    /// The last time set.
    #[inline]
    pub fn now(&self) -> u64 {
        self.now.get()
    }

    /// Reads the real time and returns it.
    pub fn advance(&self) -> u64 {
        let t = self.origin.elapsed().as_millis() as u64 + 1;
        self.now.set(t);
        t
    }
}

/// A live connection as its worker tracks it.
#[derive(Debug)]
pub struct Tracked<T> {
    /// The engine's handle on the socket.
    pub io: T,
    /// Its times.
    pub times: Times,
}

/// A worker's live connections, so that the sweeper and the drain can reach them.
/// Single-threaded: each worker has its own.
#[derive(Debug)]
pub struct Registry<T> {
    /// Live connections.
    conns: RefCell<Slab<Rc<Tracked<T>>>>,
    /// Woken when the last connection leaves.
    empty: tokio::sync::Notify,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            conns: RefCell::new(Slab::new()),
            empty: tokio::sync::Notify::new(),
        }
    }
}

impl<T> Registry<T> {
    /// Adds a connection; it is removed when the returned guard drops.
    pub fn insert(self: &Rc<Self>, conn: Rc<Tracked<T>>) -> Registered<T> {
        let key = self.conns.borrow_mut().insert(conn);
        Registered {
            registry: self.clone(),
            key,
        }
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every live connection.
    pub fn for_each(&self, mut f: impl FnMut(&Tracked<T>)) {
        // Clone out first: `f` may cause a connection to finish and deregister.
        let all: Vec<Rc<Tracked<T>>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for c in &all {
            f(c);
        }
    }

    /// Ends connections past a timeout: `end(conn, reason)` must make its pending read
    /// complete (shut the socket down) after recording `reason` in its times.
    pub fn sweep(
        &self,
        now: u64,
        limits: &Timeouts,
        mut end: impl FnMut(&Tracked<T>, CloseReason),
    ) {
        self.for_each(|c| {
            if let Some(reason) = c.times.expired(now, limits) {
                c.times.reason.set(Some(reason));
                end(c, reason);
            }
        });
    }

    /// Waits until every connection has left.
    pub async fn wait_empty(&self) {
        while !self.is_empty() {
            self.empty.notified().await;
        }
    }
}

/// Keeps a connection registered while it lives.
#[derive(Debug)]
pub struct Registered<T> {
    /// The registry it is in.
    registry: Rc<Registry<T>>,
    /// Its slot.
    key: usize,
}

impl<T> Drop for Registered<T> {
    fn drop(&mut self) {
        let mut conns = self.registry.conns.borrow_mut();
        conns.remove(self.key);
        if conns.is_empty() {
            self.registry.empty.notify_waiters();
        }
    }
}

/// Counters of one worker, readable from any thread. Relaxed: each is written by its worker
/// only; the alignment keeps two workers' counters off the same cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections turned away by `--max-connections`.
    pub rejected: AtomicU64,
    /// Connections closed, by [`CloseReason`] (in [`CloseReason::ALL`] order).
    pub closed: [AtomicU64; 6],
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Requests answered (http; hello counts its replies).
    pub requests: AtomicU64,
    /// Accept errors.
    pub accept_errors: AtomicU64,
    /// Times accepting was paused after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    pub accept_backoffs: AtomicU64,
    /// Receives that found the provided buffer ring empty (`uring`).
    pub recv_enobufs: AtomicU64,
    /// Receive buffers not back in the ring when the worker stopped (`uring`; 0 expected).
    pub leaked_buffers: AtomicU64,
    /// Connections still open when the worker stopped (`uring`; 0 expected).
    pub leaked_fds: AtomicU64,
}

impl WorkerStats {
    /// Connections closed, all reasons.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Connections closed for `reason`.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.accepted
            .load(Ordering::Relaxed)
            .saturating_sub(self.closed_total())
    }

    /// Counts a closed connection.
    pub fn close(&self, reason: CloseReason) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolKind;

    #[test]
    fn conn_keeps_partial_input_between_reads() {
        let spec = ProtocolSpec::with_defaults(ProtocolKind::Http);
        let mut c = Conn::new(&spec);
        assert_eq!(
            c.on_bytes(b"GET / HT"),
            Fed {
                close: false,
                answered: 0
            }
        );
        assert!(c.awaiting_header());
        assert!(c.out.is_empty());
        assert_eq!(c.on_bytes(b"TP/1.1\r\n\r\nGET").answered, 1);
        assert!(c.out.starts_with(b"HTTP/1.1 200 OK"));
        c.out.clear();
        let fed = c.on_bytes(b" / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(
            fed,
            Fed {
                close: true,
                answered: 1
            }
        );
        assert!(!c.awaiting_header());
    }

    #[test]
    fn timeouts_expire_in_order() {
        let limits = Timeouts {
            idle_ms: 1000,
            header_ms: 300,
        };
        let t = Times::new(10);
        assert_eq!(t.expired(500, &limits), None);
        t.touch(100, true);
        assert_eq!(t.expired(399, &limits), None);
        assert_eq!(t.expired(400, &limits), Some(CloseReason::HeaderTimeout));
        t.touch(450, false);
        assert_eq!(t.expired(1449, &limits), None);
        assert_eq!(t.expired(1450, &limits), Some(CloseReason::Idle));
        let off = Timeouts::default();
        assert_eq!(t.expired(u64::MAX / 2, &off), None);
        assert_eq!(off.sweep_every(), None);
        assert_eq!(limits.sweep_every(), Some(Duration::from_millis(75)));
    }

    #[test]
    fn registry_tracks_sweeps_and_notifies() {
        let r: Rc<Registry<u32>> = Rc::default();
        let a = r.insert(Rc::new(Tracked {
            io: 1,
            times: Times::new(1),
        }));
        let b = r.insert(Rc::new(Tracked {
            io: 2,
            times: Times::new(900),
        }));
        let limits = Timeouts {
            idle_ms: 500,
            header_ms: 0,
        };
        let mut ended = Vec::new();
        r.sweep(1000, &limits, |c, why| ended.push((c.io, why)));
        assert_eq!(ended, [(1, CloseReason::Idle)]);
        // Already ended: not ended twice.
        ended.clear();
        r.sweep(2000, &limits, |c, why| ended.push((c.io, why)));
        assert_eq!(ended, [(2, CloseReason::Idle)]);
        drop(a);
        assert_eq!(r.len(), 1);
        drop(b);
        assert!(r.is_empty());
    }

    #[test]
    fn stats_count_by_reason() {
        let s = WorkerStats::default();
        WorkerStats::inc(&s.accepted);
        WorkerStats::inc(&s.accepted);
        s.close(CloseReason::Idle);
        assert_eq!(s.active(), 1);
        assert_eq!(s.closed_for(CloseReason::Idle), 1);
        assert_eq!(s.closed_total(), 1);
    }
}
