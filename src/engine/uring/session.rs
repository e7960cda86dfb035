//! The worker's sessions: a protocol connection ([`UConn`], one socket) and a proxied pair
//! ([`UPair`], two) are two kinds of [`Session`], kept in one generational table of the kind
//! the worker's service makes ([`Sessions`]). The worker hands every event to a session by
//! its token and pushes what the session asks for; which kind it holds is matched here, and
//! nowhere in the loop.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

use ringd_ring::{BufRing, Descriptor, Sqe, Target};
use slab::Slab;
use tracing::warn;

use super::conn::{Env, UConn};
use super::op::{Op, Token};
use super::pair::{UPair, Upstream};
use super::sendq::Out;
use super::sock::Submit;
use super::Worker;
use crate::access_log::{Ended as LogEnded, Record, UpstreamRecord};
use crate::connection::{CloseReason, Limits, Millis};
use crate::proxy::Side;

/// A protocol connection and its socket.
#[derive(Debug)]
pub(super) struct ConnSession {
    /// The socket (taken out when its close is submitted).
    pub fd: Option<Descriptor>,
    /// The connection.
    pub uc: UConn,
    /// Where it came from, for the access log (`None` when there is none).
    pub origin: Option<Origin>,
}

/// Where a session came from and when, for its line in the access log.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    /// The client.
    pub client: SocketAddr,
    /// The address it connected to.
    pub listener: SocketAddr,
    /// When it was accepted, by the worker's clock.
    pub opened: Millis,
}

impl Origin {
    /// The addresses of the socket `fd` accepted at `now` on `listener`. A client that reset
    /// the connection before it was looked at has no address any more: it is logged as the
    /// unspecified address, port 0 (and the listener's own address stands in for the local
    /// one if that is gone too).
    pub fn of(fd: &OwnedFd, listener: &TcpListener, now: Millis) -> Origin {
        let s = socket2::SockRef::from(fd);
        let local = s.local_addr().ok().and_then(|a| a.as_socket());
        let local = local
            .or_else(|| listener.local_addr().ok())
            .unwrap_or((Ipv4Addr::UNSPECIFIED, 0).into());
        let client = s.peer_addr().ok().and_then(|a| a.as_socket());
        Origin {
            client: client.unwrap_or(SocketAddr::new(unspecified(local.ip()), 0)),
            listener: local,
            opened: now,
        }
    }
}

/// The unspecified address of `ip`'s family.
fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// A proxied pair and its sockets.
#[derive(Debug)]
pub(super) struct PairSession {
    /// `[client, upstream]` sockets (each taken out when its close is submitted).
    pub fds: [Option<Descriptor>; 2],
    /// The pair.
    pub up: UPair,
    /// Where it came from, for the access log (`None` when there is none).
    pub origin: Option<Origin>,
}

/// A session of either kind, as its table holds it.
#[derive(Debug)]
pub(super) enum Session<'a> {
    /// A protocol connection.
    Conn(&'a mut ConnSession),
    /// A proxied pair.
    Pair(&'a mut PairSession),
}

/// What happens to a session.
#[derive(Debug)]
pub(super) enum SessionEvent {
    /// It was just created: start it.
    Start,
    /// A recv completion on one of its sockets.
    Recv {
        /// Bytes received, or `-errno`.
        res: i32,
        /// The multishot recv goes on.
        more: bool,
        /// The provided buffer filled.
        bid: Option<u16>,
    },
    /// A send completion, with the bytes the send was given.
    Send(i32, Out),
    /// A FIN completion.
    Fin(i32),
    /// A cancel completion.
    Cancel,
    /// A connect completion.
    Connect(i32),
    /// The worker's clock moved past its deadline.
    Time,
    /// The server drains.
    Drain,
    /// Buffers came back after its recv ran out.
    Buffers,
}

/// Sessions of one kind by slot, each slot with a generation that tells a late completion
/// for a slot's previous session from one for its current session.
#[derive(Debug)]
struct Table<S> {
    /// Live sessions by slot.
    slots: Slab<S>,
    /// Generation of each slot (how many sessions used it).
    gens: Vec<u32>,
}

impl<S> Table<S> {
    /// Room for `reserved` sessions (address space only, until used: the table never
    /// reallocates and copies under load).
    fn with_capacity(reserved: usize) -> Self {
        Table {
            slots: Slab::with_capacity(reserved),
            gens: Vec::new(),
        }
    }

    fn insert(&mut self, session: S) -> Token {
        let key = self.slots.insert(session);
        if key >= self.gens.len() {
            self.gens.resize(key + 1, 0);
        }
        self.gens[key] = self.gens[key].wrapping_add(1) & Token::GEN_MASK;
        Token::new(key, self.gens[key])
    }

    fn get_mut(&mut self, t: Token) -> Option<&mut S> {
        let key = t.slot as usize;
        match self.gens.get(key) == Some(&t.gen) {
            true => self.slots.get_mut(key),
            false => None,
        }
    }

    fn remove(&mut self, t: Token) -> Option<S> {
        self.get_mut(t)?;
        Some(self.slots.remove(t.slot as usize))
    }

    fn tokens(&mut self, mut pick: impl FnMut(&mut S) -> bool, out: &mut Vec<Token>) {
        for (k, s) in self.slots.iter_mut() {
            if pick(s) {
                out.push(Token::new(k, self.gens[k]));
            }
        }
    }
}

/// The worker's sessions: one table, of the kind its service makes.
#[derive(Debug)]
pub(super) struct Sessions {
    /// The table.
    table: Kind,
    /// Sessions whose recv ran out of buffers, re-armed as buffers come back.
    pub starved: VecDeque<Token>,
}

/// The table of the one kind of session a worker makes.
#[derive(Debug)]
enum Kind {
    /// Protocol connections.
    Conns(Table<ConnSession>),
    /// Proxied pairs.
    Pairs(Table<PairSession>),
}

/// A session taken out of its table.
#[derive(Debug)]
enum Ended {
    /// A protocol connection.
    Conn(ConnSession),
    /// A proxied pair.
    Pair(PairSession),
}

impl Sessions {
    /// A table of protocol connections (`proxy`: false) or of proxied pairs, with room
    /// for `reserved` of them.
    pub fn new(proxy: bool, reserved: usize) -> Self {
        let table = match proxy {
            false => Kind::Conns(Table::with_capacity(reserved)),
            true => Kind::Pairs(Table::with_capacity(reserved)),
        };
        Sessions {
            table,
            starved: VecDeque::new(),
        }
    }

    /// Adds a protocol connection; its token.
    pub fn insert_conn(&mut self, session: ConnSession) -> Token {
        match &mut self.table {
            Kind::Conns(t) => t.insert(session),
            Kind::Pairs(_) => unreachable!("a protocol connection in proxy mode"),
        }
    }

    /// Adds a proxied pair; its token (client socket).
    pub fn insert_pair(&mut self, session: PairSession) -> Token {
        match &mut self.table {
            Kind::Pairs(t) => t.insert(session),
            Kind::Conns(_) => unreachable!("a proxied pair outside proxy mode"),
        }
    }

    /// The session `t` names, if it is still there.
    pub fn get_mut(&mut self, t: Token) -> Option<Session<'_>> {
        match &mut self.table {
            Kind::Conns(table) => table.get_mut(t).map(Session::Conn),
            Kind::Pairs(table) => table.get_mut(t).map(Session::Pair),
        }
    }

    /// Removes the session `t` names.
    fn remove(&mut self, t: Token) -> Option<Ended> {
        match &mut self.table {
            Kind::Conns(table) => table.remove(t).map(Ended::Conn),
            Kind::Pairs(table) => table.remove(t).map(Ended::Pair),
        }
    }

    /// The tokens of the sessions `pick` selects, appended to `out`.
    pub fn tokens(&mut self, mut pick: impl FnMut(&Session) -> bool, out: &mut Vec<Token>) {
        match &mut self.table {
            Kind::Conns(table) => table.tokens(|s| pick(&Session::Conn(s)), out),
            Kind::Pairs(table) => table.tokens(|s| pick(&Session::Pair(s)), out),
        }
    }

    /// Sessions live.
    pub fn len(&self) -> usize {
        match &self.table {
            Kind::Conns(t) => t.slots.len(),
            Kind::Pairs(t) => t.slots.len(),
        }
    }
}

impl Session<'_> {
    /// The socket `side` as SQEs name it.
    fn target(&self, side: Side) -> Option<Target> {
        match self {
            Session::Conn(c) => c.fd.as_ref().map(Descriptor::target),
            Session::Pair(p) => p.fds[side.index()].as_ref().map(Descriptor::target),
        }
    }

    /// Takes socket `side` out to close it.
    fn take_socket(&mut self, side: Side) -> Option<Descriptor> {
        match self {
            Session::Conn(c) => c.fd.take(),
            Session::Pair(p) => p.fds[side.index()].take(),
        }
    }

    /// A recv of it ran out of buffers.
    fn starved(&self) -> bool {
        match self {
            Session::Conn(c) => c.uc.sock.starved,
            Session::Pair(p) => p.up.socks.iter().any(|s| s.starved),
        }
    }

    /// When it next needs [`SessionEvent::Time`].
    pub fn poll_timeout(&self, limits: &Limits) -> Option<Millis> {
        match self {
            Session::Conn(c) => c.uc.poll_timeout(limits),
            Session::Pair(p) => p.up.relay.poll_timeout(limits),
        }
    }

    /// A close completed; true when it was its last.
    fn on_close(&mut self) -> bool {
        match self {
            Session::Conn(..) => true,
            Session::Pair(p) => p.up.on_close(),
        }
    }

    /// Hands `ev` on `side` to the session (`up`: the upstreams, in proxy mode); returns
    /// the address to connect a socket it opened to.
    fn handle(
        &mut self,
        side: Side,
        ev: SessionEvent,
        env: &mut Env<BufRing>,
        up: Option<&mut Upstream>,
    ) -> Option<SocketAddr> {
        match (self, up) {
            (Session::Conn(c), _) => {
                uc_event(&mut c.uc, ev, env);
                None
            }
            (Session::Pair(p), Some(up)) => {
                pair_event(&mut p.up, side, ev, env, up);
                super::proxying::open_upstream(&mut p.fds, &mut p.up, env, up.ups)
            }
            (Session::Pair(..), None) => {
                warn!("a proxied pair outside proxy mode");
                None
            }
        }
    }
}

fn uc_event(uc: &mut UConn, ev: SessionEvent, env: &mut Env<BufRing>) {
    match ev {
        SessionEvent::Start => uc.step(env),
        SessionEvent::Recv { res, more, bid } => uc.on_recv(res, more, bid, env),
        SessionEvent::Send(res, buf) => uc.on_send(res, buf, env),
        SessionEvent::Fin(res) => uc.on_fin(res, env),
        SessionEvent::Cancel => uc.on_cancel(env),
        SessionEvent::Connect(_) => warn!("a connect completed for a connection that has none"),
        SessionEvent::Time => uc.on_time(env),
        SessionEvent::Drain => uc.on_drain(env),
        SessionEvent::Buffers => uc.on_buffers(env),
    }
}

fn pair_event(
    p: &mut UPair,
    side: Side,
    ev: SessionEvent,
    env: &mut Env<BufRing>,
    up: &mut Upstream,
) {
    match ev {
        SessionEvent::Start if p.relay.phase() == crate::proxy::relay::Phase::Closed => p.step(env),
        SessionEvent::Start => p.start(env, up),
        SessionEvent::Recv { res, more, bid } => p.on_recv(side, res, more, bid, env, up),
        SessionEvent::Send(res, buf) => p.on_send(side, res, buf, env, up.ups),
        SessionEvent::Fin(res) => p.on_fin(side, res, env),
        SessionEvent::Cancel => p.on_cancel(env),
        SessionEvent::Connect(res) => p.on_connect(res, env, up),
        SessionEvent::Time => p.on_time(env),
        // Proxied connections are served on until their peers close them.
        SessionEvent::Drain => {}
        SessionEvent::Buffers => p.on_buffers(env),
    }
}

impl Worker {
    /// Hands `ev` to the session `t` names and pushes what it asks for.
    pub(super) fn dispatch(&mut self, t: Token, ev: SessionEvent) {
        let Some(mut session) = self.sessions.get_mut(t) else {
            return warn!(?t, "an event for a session that is gone");
        };
        let was_starved = session.starved();
        let mut env = Env {
            now: self.time.clock.now(),
            limits: &self.time.limits,
            pool: self.driver.buffers(),
            stats: &self.env.stats,
            submit: &mut self.scratch.submits,
        };
        let cursor = &mut self.serving.cursor;
        let mut up = self.serving.service.proxy().map(|p| Upstream {
            ups: &p.upstreams,
            sni: p.sni.as_deref(),
            cursor,
            connect_ms: p.connect_timeout.as_millis() as u64,
        });
        let connect_to = session.handle(t.side, ev, &mut env, up.as_mut());
        if session.starved() && !was_starved {
            self.sessions.starved.push_back(t.on(Side::Client));
        }
        self.push_submits(t.on(Side::Client), connect_to);
    }

    /// Pushes what the session `t` asked for.
    fn push_submits(&mut self, t: Token, connect_to: Option<SocketAddr>) {
        let mut closed_already = 0;
        let mut submits = std::mem::take(&mut self.scratch.submits);
        for sub in submits.drain(..) {
            let tok = t.on(sub.side());
            let target = self.sessions.get_mut(t).and_then(|s| s.target(tok.side));
            match (sub, target) {
                (Submit::Close { reset, .. }, Some(_)) => self.scratch.to_close.push((tok, reset)),
                // A socket that could not be made has nothing to close.
                (Submit::Close { .. }, None) => closed_already += 1,
                (_, None) => {}
                (Submit::Connect, Some(Target::Fd(fd))) => {
                    if let Some(addr) = connect_to {
                        let addr = socket2::SockAddr::from(addr);
                        self.driver.push(Sqe::connect(fd, addr, Op::Connect(tok)));
                    }
                }
                (Submit::Connect, Some(Target::Fixed(_))) => {
                    warn!("an upstream socket is never a table slot")
                }
                (sub, Some(target)) => self.push_socket_op(sub, tok, target),
            }
        }
        self.scratch.submits = submits;
        for _ in 0..closed_already {
            self.closed(t);
        }
    }

    /// Submits the closes this turn's events asked for.
    pub(super) fn push_closes(&mut self) {
        for (t, reset) in std::mem::take(&mut self.scratch.to_close) {
            if let Some(sock) = self
                .sessions
                .get_mut(t)
                .and_then(|mut s| s.take_socket(t.side))
            {
                self.driver.close(sock, reset, Op::Linger(t), Op::Close(t));
            }
        }
    }

    /// A socket of session `t` is closed; the session goes with its last.
    pub(super) fn closed(&mut self, t: Token) {
        if !self.sessions.get_mut(t).is_some_and(|mut s| s.on_close()) {
            return;
        }
        let (reason, origin, ended) = match self.sessions.remove(t) {
            Some(Ended::Conn(c)) => {
                c.uc.conn.count_tls(&self.env.stats);
                let (bytes_in, bytes_out) = c.uc.conn.bytes();
                let reason = c.uc.close_reason();
                let ended = LogEnded {
                    reason,
                    bytes_in,
                    bytes_out,
                    upstream: None,
                };
                (reason, c.origin, ended)
            }
            Some(Ended::Pair(mut p)) => {
                p.up.count_tls(&self.env.stats);
                let ended = self.pair_ended(&p.up);
                if let Some(proxy) = self.serving.service.proxy() {
                    p.up.release(&proxy.upstreams);
                }
                (ended.reason, p.origin, ended)
            }
            None => return,
        };
        if let (Some(log), Some(o)) = (&self.env.access_log, origin) {
            let duration = self.time.clock.now().saturating_sub(o.opened);
            let record = Record::of(ended, o.client, o.listener, self.env.id, duration);
            log.log(record);
        }
        self.finished(reason);
    }

    /// What the access log says of a pair that ended.
    fn pair_ended(&self, up: &UPair) -> LogEnded {
        let (bytes_in, bytes_out) = up.relay.bytes(Side::Client);
        let (received, sent) = up.relay.bytes(Side::Upstream);
        let addr = match (up.upstream, self.serving.service.proxy()) {
            (Some(i), Some(proxy)) if up.reached() => Some(proxy.upstreams.get(i).addr),
            _ => None,
        };
        LogEnded {
            reason: up.relay.close_reason(),
            bytes_in,
            bytes_out,
            upstream: addr.map(|addr| UpstreamRecord {
                addr,
                bytes_sent: sent,
                bytes_received: received,
            }),
        }
    }

    /// Counts a session that ended.
    pub(super) fn finished(&mut self, reason: CloseReason) {
        self.env.stats.close(reason);
        if reason.admitted() {
            self.env.limit.release();
        }
    }

    /// Re-arms sessions whose recv ran out of buffers, as buffers come back.
    /// Oldest first, and no more sessions than there are buffers to fill: re-arming one
    /// takes no buffer yet, so waking every starved session for one free buffer would only
    /// starve them all again.
    pub(super) fn feed_starved(&mut self) {
        for _ in 0..self.driver.buffers().available() {
            let Some(t) = self.sessions.starved.pop_front() else {
                return;
            };
            if self.sessions.get_mut(t).is_some() {
                self.dispatch(t, SessionEvent::Buffers);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    /// A socket accepted from a client that reset the connection before the accept.
    pub(in crate::engine::uring) fn accepted_after_reset() -> (TcpListener, OwnedFd) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let (sock, _) = listener.accept().unwrap();
        (listener, sock.into())
    }

    #[test]
    fn a_client_that_reset_before_the_accept_still_has_an_origin() {
        let (listener, fd) = accepted_after_reset();
        let peer = socket2::SockRef::from(&fd).peer_addr();
        assert!(peer.is_err(), "the kernel still knows the client: {peer:?}");
        let o = Origin::of(&fd, &listener, 7);
        assert_eq!(o.client, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        assert_eq!(o.listener, listener.local_addr().unwrap());
        assert_eq!(o.opened, 7);
    }
}
