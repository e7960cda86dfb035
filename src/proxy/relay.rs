//! A proxied connection's state machine: the client's socket and the upstream's, and the
//! bytes between them. No I/O, like [`crate::connection::Connection`]: the engine says what
//! happened on either socket and asks what to do.
//!
//! | phase | what happens | next |
//! |---|---|---|
//! | `Routing` | (with `--route-sni` or TLS termination only) the client's first bytes are read and held until they say which upstream it goes to, or until its TLS handshake is done | the engine chose → `Connecting`; past its deadline → `Closed` |
//! | `Connecting` | the upstream connect is in flight; the client may already send (held, up to `--max-pending-output`) | connected → `Open`; refused or past `--connect-timeout`: the engine tries the next upstream, or gives up → `Closed` |
//! | `Open` | each direction: read from one side, send to the other; a side whose output to the other is over the bound is not read (backpressure); a side's EOF becomes a FIN to the other side once everything it sent has been sent on (half-close) | both FINs sent → `Closed`; an error or reset on either side, or no bytes either way on either side for the idle timeout → `Closed` (the engine resets the other side) |
//! | `Closed` | the engine closes both sockets | |

use super::super::connection::{CloseReason, Limits, Millis};

/// One of the two sockets of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The accepted connection.
    Client,
    /// The connection to the upstream.
    Upstream,
}

impl Side {
    /// The other side.
    #[inline]
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }

    /// 0 for the client, 1 for the upstream.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a proxied connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the client's first bytes to choose its upstream (SNI routing).
    Routing,
    /// Connecting to an upstream.
    Connecting,
    /// Relaying.
    Open,
    /// Over: the engine closes both sockets.
    Closed,
}

/// Bytes read from one side, on their way to the other.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    /// Read and not yet sent on.
    queued: usize,
    /// Bytes read from the source side, all told.
    read: u64,
    /// Bytes sent on to the other side, all told (with a PROXY header).
    sent: u64,
    /// The source side sent its FIN.
    eof: bool,
    /// The FIN was passed on to the other side.
    fin_sent: bool,
    /// Reading the source is paused while too much is queued.
    paused: bool,
}

/// What a timeout meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Nothing was due.
    None,
    /// The upstream did not answer within the connect timeout: try the next one.
    Connect,
    /// No bytes either way for the idle timeout: closed.
    Idle,
    /// The client's first bytes did not choose its upstream within the header timeout:
    /// closed.
    Routing,
}

/// A proxied connection.
#[derive(Debug)]
pub struct Relay {
    /// Where it is.
    phase: Phase,
    /// `flows[side]`: bytes from `side` to the other.
    flows: [Flow; 2],
    /// Why it ended.
    reason: Option<CloseReason>,
    /// Last time bytes moved on either socket.
    last_active: Millis,
    /// When the connect in flight times out (while routing: when the routing does).
    connect_deadline: Millis,
}

impl Relay {
    /// A connection accepted at `now`, connecting to its first upstream until
    /// `connect_deadline`.
    pub fn new(now: Millis, connect_deadline: Millis) -> Self {
        Relay {
            phase: Phase::Connecting,
            flows: [Flow::default(); 2],
            reason: None,
            last_active: now,
            connect_deadline,
        }
    }

    /// A connection accepted at `now` whose first bytes must choose its upstream (or
    /// complete its TLS handshake) within `wait_ms` (0: no limit).
    pub fn routing(now: Millis, wait_ms: Millis) -> Self {
        Relay {
            phase: Phase::Routing,
            connect_deadline: if wait_ms > 0 {
                now + wait_ms
            } else {
                Millis::MAX
            },
            ..Relay::new(now, 0)
        }
    }

    /// Where it is.
    #[inline]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Why it ended (or is ending).
    pub fn close_reason(&self) -> CloseReason {
        self.reason.unwrap_or(CloseReason::Peer)
    }

    /// A new connect began (the next upstream), due by `deadline`.
    pub fn connecting(&mut self, deadline: Millis) {
        if matches!(self.phase, Phase::Routing | Phase::Connecting) {
            self.phase = Phase::Connecting;
            self.connect_deadline = deadline;
        }
    }

    /// The upstream accepted the connection.
    pub fn on_connected(&mut self, now: Millis) {
        if self.phase == Phase::Connecting {
            self.phase = Phase::Open;
            self.last_active = now;
        }
    }

    /// No upstream could be reached: the client is closed at once.
    pub fn no_upstream(&mut self) {
        self.abort(CloseReason::NoUpstream);
    }

    /// True while the engine should read from `side`.
    #[inline]
    pub fn reading(&self, side: Side) -> bool {
        let f = &self.flows[side.index()];
        let open = match self.phase {
            Phase::Open => true,
            // The client's first bytes are read while routing and connecting, to go out at
            // once after.
            Phase::Routing | Phase::Connecting => side == Side::Client,
            Phase::Closed => false,
        };
        open && !f.eof && !f.paused
    }

    /// Bytes read from `side` and bytes sent to it so far, for the access log.
    pub fn bytes(&self, side: Side) -> (u64, u64) {
        (
            self.flows[side.index()].read,
            self.flows[side.other().index()].sent,
        )
    }

    /// Bytes queued from `side`, not yet sent to the other side.
    #[inline]
    pub fn queued(&self, side: Side) -> usize {
        self.flows[side.index()].queued
    }

    /// `n` bytes were read from `side` at `now`; they must be sent to the other side.
    pub fn on_input(&mut self, side: Side, now: Millis, n: usize, limits: &Limits) {
        self.on_input_as(side, now, n, n, limits);
    }

    /// `read` bytes were read from `side` at `now` and became `out` bytes to send to the
    /// other side (TLS: records in, plaintext out, or the reverse).
    pub fn on_input_as(
        &mut self,
        side: Side,
        now: Millis,
        read: usize,
        out: usize,
        limits: &Limits,
    ) {
        self.flows[side.index()].read += read as u64;
        self.on_header(now, side, out, limits);
    }

    /// `n` bytes of the server's own go to the other side ahead of what `side` sends (the
    /// PROXY header, on the client's side).
    pub fn on_header(&mut self, now: Millis, side: Side, n: usize, limits: &Limits) {
        self.last_active = now;
        let f = &mut self.flows[side.index()];
        f.queued += n;
        if f.queued > limits.max_pending {
            f.paused = true;
        }
    }

    /// `n` bytes were sent to `to` at `now`.
    pub fn on_sent(&mut self, to: Side, now: Millis, n: usize, limits: &Limits) {
        self.last_active = now;
        let f = &mut self.flows[to.other().index()];
        debug_assert!(n <= f.queued, "sent more than was queued");
        f.queued = f.queued.saturating_sub(n);
        f.sent += n as u64;
        if f.paused && f.queued <= limits.max_pending / 2 {
            f.paused = false;
        }
    }

    /// `side` sent its FIN.
    ///
    /// A client's FIN while the upstream is still being connected, even with nothing sent
    /// before it, is passed on once connected: it may be waiting for the upstream to speak
    /// first (a banner), and a half-closed client can still read the answer.
    pub fn on_eof(&mut self, side: Side) {
        self.flows[side.index()].eof = true;
    }

    /// `side` sent its FIN (or its close_notify, over TLS): nothing more comes from it.
    pub fn input_over(&self, side: Side) -> bool {
        self.flows[side.index()].eof
    }

    /// True when the engine should send a FIN to `to`: the other side sent its own and
    /// everything it sent before has been sent on.
    #[inline]
    pub fn wants_fin(&self, to: Side) -> bool {
        let f = &self.flows[to.other().index()];
        self.phase == Phase::Open && f.eof && f.queued == 0 && !f.fin_sent
    }

    /// The FIN went to `to`. Once both directions are finished the connection is over.
    pub fn on_fin(&mut self, to: Side) {
        self.flows[to.other().index()].fin_sent = true;
        if self.flows.iter().all(|f| f.fin_sent) && self.phase == Phase::Open {
            self.phase = Phase::Closed;
            self.reason.get_or_insert(CloseReason::Peer);
        }
    }

    /// A socket failed or was reset: both are closed (the other one with a reset).
    pub fn on_error(&mut self) {
        self.abort(CloseReason::Error);
    }

    /// Ends it at once.
    pub fn abort(&mut self, reason: CloseReason) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.reason = Some(reason);
        }
    }

    /// When [`Relay::handle_timeout`] must be called next.
    pub fn poll_timeout(&self, limits: &Limits) -> Option<Millis> {
        let idle = (limits.idle_ms > 0).then(|| self.last_active + limits.idle_ms);
        match self.phase {
            Phase::Routing => {
                (self.connect_deadline < Millis::MAX).then_some(self.connect_deadline)
            }
            Phase::Connecting => Some(self.connect_deadline),
            Phase::Open => idle,
            Phase::Closed => None,
        }
    }

    /// Acts on the deadline that passed by `now`.
    pub fn handle_timeout(&mut self, now: Millis, limits: &Limits) -> Timeout {
        match self.phase {
            Phase::Routing if now >= self.connect_deadline => {
                self.abort(CloseReason::HeaderTimeout);
                Timeout::Routing
            }
            Phase::Connecting if now >= self.connect_deadline => Timeout::Connect,
            Phase::Open if limits.idle_ms > 0 && now >= self.last_active + limits.idle_ms => {
                self.abort(CloseReason::Idle);
                Timeout::Idle
            }
            _ => Timeout::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::for_tests(1000, 0, 100)
    }

    #[test]
    fn counts_bytes_per_side_without_the_proxy_header() {
        let l = limits();
        let mut r = Relay::new(0, 10);
        r.on_connected(1);
        r.on_header(1, Side::Client, 12, &l);
        r.on_input(Side::Client, 1, 30, &l);
        r.on_sent(Side::Upstream, 2, 42, &l);
        r.on_input(Side::Upstream, 3, 7, &l);
        r.on_sent(Side::Client, 4, 5, &l);
        assert_eq!(
            r.bytes(Side::Client),
            (30, 5),
            "the client sent 30, got 5 of 7"
        );
        assert_eq!(
            r.bytes(Side::Upstream),
            (7, 42),
            "the upstream got the header too"
        );
    }

    #[test]
    fn relays_both_ways_and_half_closes() {
        let l = limits();
        let mut r = Relay::new(1, 2001);
        assert!(r.reading(Side::Client) && !r.reading(Side::Upstream));
        r.on_input(Side::Client, 2, 10, &l);
        assert!(!r.wants_fin(Side::Upstream));
        r.on_connected(3);
        assert!(r.reading(Side::Upstream));
        r.on_eof(Side::Client);
        assert!(!r.wants_fin(Side::Upstream), "10 bytes still to send");
        r.on_sent(Side::Upstream, 4, 10, &l);
        assert!(r.wants_fin(Side::Upstream));
        r.on_fin(Side::Upstream);
        assert!(!r.reading(Side::Client));
        assert!(
            r.reading(Side::Upstream),
            "the reply still flows after the client's FIN"
        );
        r.on_input(Side::Upstream, 5, 7, &l);
        r.on_eof(Side::Upstream);
        r.on_sent(Side::Client, 6, 7, &l);
        assert!(r.wants_fin(Side::Client));
        r.on_fin(Side::Client);
        assert_eq!(r.phase(), Phase::Closed);
        assert_eq!(r.close_reason(), CloseReason::Peer);
    }

    #[test]
    fn backpressure_pauses_the_source() {
        let l = limits();
        let mut r = Relay::new(1, 2001);
        r.on_connected(1);
        r.on_input(Side::Upstream, 2, 101, &l);
        assert!(!r.reading(Side::Upstream));
        assert!(
            r.reading(Side::Client),
            "the other direction is not affected"
        );
        r.on_sent(Side::Client, 3, 50, &l);
        assert!(!r.reading(Side::Upstream), "51 > 50");
        r.on_sent(Side::Client, 3, 1, &l);
        assert!(r.reading(Side::Upstream));
    }

    #[test]
    fn timeouts() {
        let l = limits();
        let mut r = Relay::new(1, 500);
        assert_eq!(r.poll_timeout(&l), Some(500));
        assert_eq!(r.handle_timeout(499, &l), Timeout::None);
        assert_eq!(r.handle_timeout(500, &l), Timeout::Connect);
        r.connecting(900);
        r.on_connected(600);
        assert_eq!(r.poll_timeout(&l), Some(1600));
        r.on_sent(Side::Client, 1500, 0, &l);
        assert_eq!(r.handle_timeout(1600, &l), Timeout::None);
        assert_eq!(r.handle_timeout(2500, &l), Timeout::Idle);
        assert_eq!(r.phase(), Phase::Closed);
        assert_eq!(r.close_reason(), CloseReason::Idle);
    }

    #[test]
    fn routing_reads_the_client_and_times_out() {
        let l = Limits::for_tests(1000, 300, 100);
        let mut r = Relay::routing(10, 300);
        assert!(r.reading(Side::Client) && !r.reading(Side::Upstream));
        assert_eq!(r.poll_timeout(&l), Some(310));
        r.on_input(Side::Client, 20, 50, &l);
        assert!(!r.wants_fin(Side::Upstream));
        assert_eq!(r.handle_timeout(309, &l), Timeout::None);
        assert_eq!(r.handle_timeout(310, &l), Timeout::Routing);
        assert_eq!(r.close_reason(), CloseReason::HeaderTimeout);
        let mut r = Relay::routing(10, 300);
        r.connecting(500);
        assert_eq!(r.phase(), Phase::Connecting);
        assert_eq!(r.poll_timeout(&l), Some(500));
        assert_eq!(Relay::routing(10, 0).poll_timeout(&l), None);
    }

    #[test]
    fn client_fin_while_connecting_is_passed_on() {
        let mut r = Relay::new(1, 500);
        r.on_eof(Side::Client);
        assert_eq!(r.phase(), Phase::Connecting);
        assert!(!r.wants_fin(Side::Upstream), "not connected yet");
        r.on_connected(2);
        assert!(r.wants_fin(Side::Upstream));
        r.on_fin(Side::Upstream);
        assert!(r.reading(Side::Upstream), "the upstream may still answer");
        r.on_input(Side::Upstream, 3, 6, &limits());
        r.on_sent(Side::Client, 3, 6, &limits());
        r.on_eof(Side::Upstream);
        r.on_fin(Side::Client);
        assert_eq!(r.phase(), Phase::Closed);
        assert_eq!(r.close_reason(), CloseReason::Peer);
        let mut r = Relay::new(1, 500);
        r.no_upstream();
        assert_eq!(r.close_reason(), CloseReason::NoUpstream);
    }
}
