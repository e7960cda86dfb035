//! A proxied connection on the `uring` engine: the client's socket and the upstream's, each
//! with its operations ([`SockOps`]), and the [`Relay`] that decides. Bytes received on one
//! socket are sent from the very provided buffer they arrived in on the other (no copy; the
//! buffer goes back to the ring when that send completes), the upstream is connected with
//! `IORING_OP_CONNECT`, and like [`super::conn::UConn`] it never touches the ring: it
//! appends the [`Submit`]s the worker must push. With SNI routes or TLS terminated here,
//! the client is read first and the upstream chosen after (its ClientHello, or its whole
//! handshake: `secure` holds the TLS side).

use std::sync::Arc;

use super::conn::Env;
use super::sendq::Out;
use super::sock::{FinState, Pool, RecvState, SockOps, Submit};
use crate::connection::{CloseReason, WorkerStats};
use crate::proxy::header::Announce;
use crate::proxy::relay::{Phase, Timeout};
use crate::proxy::sni::{Choice, Hello, Sniffer, MAX_PEEK};
use crate::proxy::terminate::Terminated;
use crate::proxy::{Relay, Side, SniRoutes, Upstreams};

/// The connect to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectState {
    /// None in flight.
    Idle,
    /// In flight.
    InFlight,
    /// Cancelled (too slow); its completion is still to come.
    Cancelling,
}

/// The end of a pair on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Not begun.
    No,
    /// Operations in flight were cancelled; the closes wait for them.
    Cancelled,
    /// The closes were submitted; this many are still to complete.
    Closing(u8),
    /// Both sockets are closed: the slot can go.
    Done,
}

/// What a pair's events need besides [`Env`]: the upstreams and the worker's round-robin
/// position over them.
#[derive(Debug)]
pub struct Upstream<'a> {
    /// The upstreams (with SNI routes: the default ones).
    pub ups: &'a Upstreams,
    /// The SNI routes, if any.
    pub sni: Option<&'a SniRoutes>,
    /// The worker's round-robin position.
    pub cursor: &'a mut usize,
    /// Milliseconds a connect may take.
    pub connect_ms: u64,
}

/// A proxied connection and its operations on the ring.
#[derive(Debug)]
pub struct UPair {
    /// The state machine.
    pub relay: Relay,
    /// `socks[side]`: the operations on `side`'s socket (its recv, and the sends to it).
    pub socks: [SockOps; 2],
    /// The upstream chosen (connecting or connected).
    pub upstream: Option<usize>,
    /// While routing by SNI: what reads the client's first bytes.
    sniff: Option<Box<Sniffer>>,
    /// The upstreams of the client's SNI route (`None`: the default ones).
    route: Option<Arc<Upstreams>>,
    /// Upstreams tried, a bit each.
    tried: u64,
    /// The connect.
    pub connect: ConnectState,
    /// The connect succeeded.
    connected: bool,
    /// The pick of `upstream` took a place there (under its `max-conns`), given back by a
    /// failed connect or at the end ([`UPair::release`]).
    holds_place: bool,
    /// An upstream socket exists (to be closed at the end).
    pub upstream_socket: bool,
    /// The PROXY header, sent first once connected.
    header: Option<Announce>,
    /// TLS terminated here: the client's side (`None`: bytes pass as they are).
    tls: Option<Box<Terminated>>,
    /// Cancel operations in flight.
    cancels: u8,
    /// The end.
    pub teardown: Teardown,
    /// `reset[side]`: close `side` with a reset (it had bytes unsent when the pair ended, or
    /// the pair ended on an error).
    reset: [bool; 2],
}

impl UPair {
    /// A pair for a client just accepted, `header` to send first, if any; one whose relay
    /// is routing reads the client's first bytes (at most `max_peek` of a ClientHello, or
    /// the whole handshake with `tls`) before it connects.
    pub fn new(
        relay: Relay,
        header: Option<Announce>,
        max_peek: usize,
        tls: Option<Terminated>,
    ) -> Self {
        let sniff = (relay.phase() == Phase::Routing && tls.is_none())
            .then(|| Box::new(Sniffer::new(max_peek.min(MAX_PEEK))));
        UPair {
            relay,
            socks: [SockOps::default(), SockOps::default()],
            upstream: None,
            sniff,
            route: None,
            tried: 0,
            connect: ConnectState::Idle,
            connected: false,
            holds_place: false,
            upstream_socket: false,
            header,
            tls: tls.map(Box::new),
            cancels: 0,
            teardown: Teardown::No,
            reset: [false; 2],
        }
    }

    fn sock(&mut self, side: Side) -> &mut SockOps {
        &mut self.socks[side.index()]
    }

    /// True while an operation other than the closes is in flight.
    pub fn busy(&self) -> bool {
        self.socks.iter().any(SockOps::busy)
            || self.cancels > 0
            || self.connect != ConnectState::Idle
    }

    /// Starts: connect to the first upstream (or close the client if none is up), and read
    /// the client meanwhile; with SNI routes, read the client first.
    pub fn start<P: Pool>(&mut self, env: &mut Env<P>, up: &mut Upstream) {
        if self.relay.phase() != Phase::Routing {
            self.connect_next(env, up);
        }
        self.step(env);
    }

    /// The client's first bytes said `hello`: its upstream is chosen and connected to, or
    /// it is closed.
    fn route<P: Pool>(&mut self, hello: &Hello, env: &mut Env<P>, up: &mut Upstream) {
        self.sniff = None;
        if self.relay.phase() != Phase::Routing {
            // Ended meanwhile (its deadline passed, an error): nothing to connect.
            return;
        }
        let choice = up.sni.map_or(Choice::Default, |r| r.choose(hello, up.ups));
        match choice {
            Choice::Route(ups) => self.route = Some(ups.clone()),
            Choice::Default => {}
            Choice::Close => return self.relay.abort(CloseReason::Protocol),
        }
        self.connect_next(env, up);
    }

    /// Picks the next upstream and connects to it; none left: the client is closed.
    fn connect_next<P: Pool>(&mut self, env: &mut Env<P>, up: &mut Upstream) {
        let ups = self.route.as_deref().unwrap_or(up.ups);
        match ups.pick(up.cursor, self.tried) {
            Some(i) => {
                self.tried |= 1 << i;
                self.upstream = Some(i);
                self.holds_place = true;
                self.relay.connecting(env.now + up.connect_ms);
                env.submit.push(Submit::Connect);
                self.connect = ConnectState::InFlight;
                self.upstream_socket = true;
            }
            None => {
                self.upstream = None;
                self.relay.no_upstream();
            }
        }
    }

    /// The connect completed.
    pub fn on_connect<P: Pool>(&mut self, res: i32, env: &mut Env<P>, up: &mut Upstream) {
        self.connect = ConnectState::Idle;
        let Some(i) = self.upstream else {
            return self.step(env);
        };
        if self.relay.phase() == Phase::Closed {
            return self.step(env);
        }
        if res >= 0 {
            up.ups.connected(i);
            self.connected = true;
            self.relay.on_connected(env.now);
            if let Some(a) = self.header.take() {
                let h = a.encode(self.tls.as_ref().and_then(|t| t.version_name()));
                self.relay
                    .on_header(env.now, Side::Client, h.len(), env.limits);
                self.sock(Side::Upstream).push_front_owned(h);
            }
        } else {
            tracing::debug!(
                upstream = %up.ups.get(i).addr,
                "connect failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
            up.ups.connect_failed(i);
            self.holds_place = false;
            self.connect_next(env, up);
        }
        self.step(env);
    }

    /// The upstream socket could not be opened (no descriptor, no memory): the client is
    /// closed, and the upstream is not marked down for what is a local shortage.
    pub fn on_local_failure<P: Pool>(&mut self, err: &std::io::Error, env: &mut Env<P>) {
        tracing::debug!("cannot open a socket for the upstream: {err}");
        self.connect = ConnectState::Idle;
        self.relay.abort(CloseReason::Error);
        self.step(env);
    }

    /// A recv completion on `side`.
    pub fn on_recv<P: Pool>(
        &mut self,
        side: Side,
        res: i32,
        more: bool,
        bid: Option<u16>,
        env: &mut Env<P>,
        up: &mut Upstream,
    ) {
        if !more {
            self.sock(side).recv = RecvState::Off;
        }
        if res > 0 {
            let n = res as usize;
            let Some(bid) = bid else {
                tracing::warn!("recv completion without a buffer id");
                self.relay.on_error();
                return self.step(env);
            };
            if self.relay.phase() == Phase::Closed {
                env.pool.give(bid);
                return self.step(env);
            }
            match (side, self.upstream) {
                (Side::Client, _) => WorkerStats::add(&env.stats.bytes_in, n as u64),
                (Side::Upstream, Some(i)) => {
                    WorkerStats::add(&up.ups.get(i).stats.bytes_received, n as u64)
                }
                (Side::Upstream, None) => {}
            }
            if self.tls.is_some() {
                return self.on_tls_recv(side, bid, n, env, up);
            }
            let hello = match &mut self.sniff {
                Some(s) if side == Side::Client => s.feed(env.pool.bytes(bid, n)),
                _ => Hello::NeedMore,
            };
            self.relay.on_input(side, env.now, n, env.limits);
            self.sock(side.other()).push_received(bid, n, env.pool);
            if hello != Hello::NeedMore {
                self.route(&hello, env, up);
            }
        } else if res == 0 {
            self.relay.on_eof(side);
            self.on_tls_eof(side, env);
            if side == Side::Client && self.sniff.is_some() {
                self.route(&Hello::NotTls, env, up);
            }
        } else if res == -libc::ENOBUFS {
            WorkerStats::inc(&env.stats.recv_enobufs);
            self.sock(side).starved = true;
        } else if res != -libc::ECANCELED {
            tracing::debug!(
                "{side:?} recv failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
            self.relay.on_error();
        }
        self.step(env);
    }

    /// A send completion on `side`, with the bytes it was given.
    pub fn on_send<P: Pool>(
        &mut self,
        side: Side,
        res: i32,
        buf: Out,
        env: &mut Env<P>,
        up: &Upstreams,
    ) {
        if res < 0 {
            self.socks[side.index()].on_sent(0, buf, env.pool, &mut drop);
            if res != -libc::ECANCELED {
                tracing::debug!(
                    "{side:?} send failed: {}",
                    std::io::Error::from_raw_os_error(-res)
                );
            }
            self.relay.on_error();
            return self.step(env);
        }
        let n = res as usize;
        match (side, self.upstream) {
            (Side::Client, _) => WorkerStats::add(&env.stats.bytes_out, n as u64),
            (Side::Upstream, Some(i)) => WorkerStats::add(&up.get(i).stats.bytes_sent, n as u64),
            (Side::Upstream, None) => {}
        }
        self.relay.on_sent(side, env.now, n, env.limits);
        self.socks[side.index()].on_sent(n, buf, env.pool, &mut drop);
        self.step(env);
    }

    /// A FIN completion on `side`.
    pub fn on_fin<P: Pool>(&mut self, side: Side, res: i32, env: &mut Env<P>) {
        if res < 0 {
            self.sock(side).fin = FinState::Pending;
            if res != -libc::ECANCELED {
                self.relay.on_error();
            }
        } else {
            self.sock(side).fin = FinState::Sent;
            self.relay.on_fin(side);
        }
        self.step(env);
    }

    /// A cancel completion.
    pub fn on_cancel<P: Pool>(&mut self, env: &mut Env<P>) {
        self.cancels = self.cancels.saturating_sub(1);
        self.step(env);
    }

    /// A close completion; true when both sockets are closed.
    pub fn on_close(&mut self) -> bool {
        if let Teardown::Closing(left) = self.teardown {
            self.teardown = match left {
                0 | 1 => Teardown::Done,
                n => Teardown::Closing(n - 1),
            };
        }
        self.teardown == Teardown::Done
    }

    /// The worker's clock passed `env.now`: a connect too slow is cancelled (the next
    /// upstream is tried when its completion comes), an idle pair is closed.
    pub fn on_time<P: Pool>(&mut self, env: &mut Env<P>) {
        if self
            .relay
            .poll_timeout(env.limits)
            .is_none_or(|d| d > env.now)
        {
            return;
        }
        match self.relay.handle_timeout(env.now, env.limits) {
            Timeout::Connect if self.connect == ConnectState::InFlight => {
                env.submit.push(Submit::CancelConnect);
                self.connect = ConnectState::Cancelling;
                self.cancels += 1;
            }
            Timeout::Connect | Timeout::None => {}
            Timeout::Routing => {
                if let Some(tls) = &mut self.tls {
                    tls.timed_out();
                }
                self.step(env);
            }
            Timeout::Idle => self.step(env),
        }
    }

    /// Buffers came back after a recv ran out: read again.
    pub fn on_buffers<P: Pool>(&mut self, env: &mut Env<P>) {
        for s in &mut self.socks {
            s.starved = false;
        }
        self.step(env);
    }

    /// The connect to its upstream succeeded.
    pub fn reached(&self) -> bool {
        self.connected
    }

    /// The pair ends: the upstream no longer counts it.
    pub fn release(&mut self, ups: &Upstreams) {
        if let (true, Some(i)) = (self.holds_place, self.upstream) {
            ups.released(i);
            self.holds_place = false;
        }
    }

    /// Submits what the state asks for now.
    pub fn step<P: Pool>(&mut self, env: &mut Env<P>) {
        if self.relay.phase() == Phase::Closed {
            return self.tear_down(env);
        }
        for side in [Side::Client, Side::Upstream] {
            if side == Side::Upstream && !self.connected {
                continue;
            }
            let wants_fin = self.relay.wants_fin(side);
            let reading = self.relay.reading(side);
            let sock = &mut self.socks[side.index()];
            sock.start_send(side, false, env.submit);
            if wants_fin {
                sock.start_fin(side, env.submit);
            }
            let room = env
                .limits
                .max_pending
                .saturating_sub(self.relay.queued(side));
            if sock.steer_recv(side, reading, !reading, room, env.submit) {
                self.cancels += 1;
            }
        }
    }

    /// The pair is over: cancel what is in flight on either socket, then close both.
    fn tear_down<P: Pool>(&mut self, env: &mut Env<P>) {
        if self.teardown == Teardown::No {
            let error = self.relay.close_reason() == crate::connection::CloseReason::Error;
            for (i, s) in self.socks.iter().enumerate() {
                self.reset[i] = error || s.has_unsent();
            }
        }
        for s in &mut self.socks {
            s.drop_unsent(env.pool);
        }
        if self.teardown == Teardown::No {
            self.teardown = Teardown::Cancelled;
            if self.socks[0].busy() {
                env.submit.push(Submit::CancelAll(Side::Client));
                self.cancels += 1;
            }
            if self.socks[1].busy() || self.connect == ConnectState::InFlight {
                env.submit.push(Submit::CancelAll(Side::Upstream));
                self.cancels += 1;
            }
        }
        if self.teardown == Teardown::Cancelled && !self.busy() {
            env.submit.push(Submit::Close {
                side: Side::Client,
                reset: self.reset[0],
            });
            let mut closes = 1;
            if self.upstream_socket {
                env.submit.push(Submit::Close {
                    side: Side::Upstream,
                    reset: self.reset[1],
                });
                closes += 1;
            }
            self.teardown = Teardown::Closing(closes);
        }
    }
}

mod secure;
#[cfg(test)]
mod tests;
