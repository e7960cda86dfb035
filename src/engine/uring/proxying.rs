//! The `uring` worker in proxy mode: its table of proxied pairs, the upstream sockets it
//! creates and connects, and the completions it hands to each [`UPair`].

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::{cqueue, opcode, types};
use socket2::{Domain, SockAddr, Socket, Type};
use tracing::warn;

use super::conn::Env;
use super::fixed::Target;
use super::op::{Op, Token};
use super::pair::{UPair, Upstream};
use super::sock::Submit;
use super::{BufRing, Worker};
use crate::config::Service;
use crate::connection::{CloseReason, WorkerStats};
use crate::proxy::{header, Relay, Side};

/// The upstreams as a pair's events need them, from the worker `$w` and its proxy config.
macro_rules! upstream {
    ($w:ident, $proxy:ident) => {
        Upstream {
            ups: &$proxy.upstreams,
            cursor: &mut $w.cursor,
            connect_ms: $proxy.connect_timeout.as_millis() as u64,
        }
    };
}

/// A proxied connection in the worker's table.
#[derive(Debug)]
pub(super) struct PairSlot {
    /// `fds[side]`: the sockets; each taken out when its close is submitted.
    pub fds: [Option<OwnedFd>; 2],
    /// The upstream address of the connect in flight (the kernel reads it during the
    /// operation; boxed so it stays put).
    target: Option<Box<SockAddr>>,
    /// Its operations and state.
    pub up: UPair,
}

impl Worker {
    /// Starts proxying a connection just accepted (over `--max-connections`: closed at once).
    pub(super) fn admit_pair(&mut self, fd: OwnedFd) {
        let Service::Proxy(proxy) = &self.service else {
            return;
        };
        let now = self.clock.now();
        let connect_ms = proxy.connect_timeout.as_millis() as u64;
        let mut relay = Relay::new(now, now + connect_ms);
        let header = match self.env.limit.try_admit() {
            true => {
                WorkerStats::inc(&self.env.stats.accepted);
                proxy.send_proxy.and_then(|v| {
                    let s = socket2::SockRef::from(&fd);
                    let peer = s.peer_addr().ok()?.as_socket()?;
                    let local = s.local_addr().ok()?.as_socket()?;
                    Some(header::encode(v, peer, local))
                })
            }
            false => {
                WorkerStats::inc(&self.env.stats.rejected);
                relay.abort(CloseReason::Rejected);
                None
            }
        };
        let key = self.pairs.insert(PairSlot {
            fds: [Some(fd), None],
            target: None,
            up: UPair::new(relay, header),
        });
        let t = self.next_gen(key);
        self.with_pair(t, |p, env, up| {
            if p.relay.phase() == crate::proxy::relay::Phase::Closed {
                p.step(env);
            } else {
                p.start(env, up);
            }
        });
    }

    /// A completion for a proxied connection.
    pub(super) fn pair_completion(&mut self, op: Op, t: Token, res: i32, flags: u32) {
        let side = t.side;
        match op {
            Op::Recv(_) => {
                let (more, bid) = (cqueue::more(flags), cqueue::buffer_select(flags));
                self.with_pair(t, |p, env, up| p.on_recv(side, res, more, bid, env, up.ups));
            }
            Op::Send(_) => self.with_pair(t, |p, env, up| p.on_send(side, res, env, up.ups)),
            Op::Fin(_) => self.with_pair(t, |p, env, _| p.on_fin(side, res, env)),
            Op::Cancel(_) => self.with_pair(t, |p, env, _| p.on_cancel(env)),
            Op::Connect(_) => self.with_pair(t, |p, env, up| p.on_connect(res, env, up)),
            _ => {}
        }
    }

    /// A socket of a proxied connection is closed; the slot goes with the second.
    pub(super) fn pair_closed(&mut self, t: Token) {
        let key = t.slot as usize;
        if !self.pairs.contains(key) || self.gens[key] != t.gen {
            return;
        }
        if self.pairs[key].up.on_close() {
            let mut slot = self.pairs.remove(key);
            if let Service::Proxy(proxy) = &self.service {
                slot.up.release(&proxy.upstreams);
            }
            self.finished(slot.up.relay.close_reason());
        }
    }

    /// Hands an event to the pair `t` names and submits what it asks for.
    pub(super) fn with_pair(
        &mut self,
        t: Token,
        f: impl FnOnce(&mut UPair, &mut Env<BufRing>, &mut Upstream),
    ) {
        let key = t.slot as usize;
        if !self.pairs.contains(key) || self.gens[key] != t.gen {
            warn!(?t, "completion for a connection that is gone");
            return;
        }
        let Service::Proxy(proxy) = &self.service else {
            return;
        };
        let slot = &mut self.pairs[key];
        let was_starved = slot.up.socks.iter().any(|s| s.starved);
        f(
            &mut slot.up,
            &mut conn_env!(self),
            &mut upstream!(self, proxy),
        );
        // A connect that cannot even start (no descriptor, no memory) fails this client
        // alone: a local shortage says nothing of the upstream's health.
        let mut i = 0;
        while i < self.submits.len() {
            if self.submits[i] != Submit::Connect {
                i += 1;
                continue;
            }
            let slot = &mut self.pairs[key];
            let Some(u) = slot.up.upstream else { break };
            let addr = proxy.upstreams.get(u).addr;
            match upstream_socket(addr) {
                Ok(sock) => {
                    // The previous attempt's socket, if any, is closed here: nothing is in
                    // flight on it any more.
                    slot.fds[Side::Upstream.index()] = Some(sock);
                    slot.target = Some(Box::new(SockAddr::from(addr)));
                    i += 1;
                }
                Err(e) => {
                    self.submits.remove(i);
                    slot.up.upstream_socket = slot.fds[Side::Upstream.index()].is_some();
                    slot.up.on_local_failure(&e, &mut conn_env!(self));
                }
            }
        }
        let slot = &self.pairs[key];
        if slot.up.socks.iter().any(|s| s.starved) && !was_starved {
            self.starved.push_back(Token::new(key, self.gens[key]));
        }
        let fds = slot
            .fds
            .each_ref()
            .map(|f| f.as_ref().map(AsRawFd::as_raw_fd));
        let target = slot.target.as_ref().map(|t| (t.as_ptr(), t.len()));
        let token = Token::new(key, self.gens[key]);
        let mut closed_already = 0;
        for i in 0..self.submits.len() {
            let sub = self.submits[i];
            let side = match sub {
                Submit::Recv { side: s, .. }
                | Submit::Send { side: s, .. }
                | Submit::Fin(s)
                | Submit::CancelRecv(s)
                | Submit::CancelAll(s)
                | Submit::Close { side: s, .. } => s,
                Submit::Connect | Submit::CancelConnect => Side::Upstream,
            };
            let tok = token.on(side);
            match (sub, fds[side.index()]) {
                (Submit::Close { reset, .. }, Some(_)) => self.to_close.push((key, side, reset)),
                // A socket that could not be made has nothing to close.
                (Submit::Close { .. }, None) => closed_already += 1,
                (_, None) => {}
                (Submit::Connect, Some(fd)) => {
                    if let Some((ptr, len)) = target {
                        let sqe = opcode::Connect::new(types::Fd(fd), ptr.cast(), len).build();
                        self.push(sqe, Op::Connect(tok));
                    }
                }
                (sub, Some(fd)) => self.push_socket_op(sub, tok, Target::Raw(fd)),
            }
        }
        self.submits.clear();
        for _ in 0..closed_already {
            self.pair_closed(token);
        }
    }
}

/// A socket to connect to an upstream at `addr`: non-blocking (the ring polls it), close on
/// exec, no Nagle (the client's small writes go out as they come).
fn upstream_socket(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}
