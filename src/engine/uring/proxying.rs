//! The `uring` worker in proxy mode: its table of proxied pairs, the upstream sockets it
//! creates and connects, and the completions it hands to each [`UPair`].

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use ringd_ring::{Completion, Sqe, Target};
use socket2::{Domain, SockAddr, Socket, Type};
use tracing::warn;

use super::conn::Env;
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
    pub(super) fn pair_completion(&mut self, t: Token, c: Completion<Op>) {
        let (side, res) = (t.side, c.result);
        let (more, bid) = (c.more(), c.buffer_id());
        match (c.op, c.buf) {
            (Op::Recv(_), _) => {
                self.with_pair(t, |p, env, up| p.on_recv(side, res, more, bid, env, up.ups));
            }
            (Op::Send(_), Some(buf)) => {
                self.with_pair(t, |p, env, up| p.on_send(side, res, buf, env, up.ups))
            }
            (Op::Fin(_), _) => self.with_pair(t, |p, env, _| p.on_fin(side, res, env)),
            (Op::Cancel(_), _) => self.with_pair(t, |p, env, _| p.on_cancel(env)),
            (Op::Connect(_), _) => self.with_pair(t, |p, env, up| p.on_connect(res, env, up)),
            (op, _) => warn!(?op, "a completion a proxied connection cannot have"),
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
        let connect_to = self.open_upstream(key);
        let slot = &self.pairs[key];
        if slot.up.socks.iter().any(|s| s.starved) && !was_starved {
            self.starved.push_back(Token::new(key, self.gens[key]));
        }
        self.push_pair_submits(key, connect_to);
    }

    /// Opens the upstream socket a [`Submit::Connect`] asks for; returns the address to
    /// connect it to. A connect that cannot even start (no descriptor, no memory) fails this
    /// client alone: a local shortage says nothing of the upstream's health.
    fn open_upstream(&mut self, key: usize) -> Option<SocketAddr> {
        let Service::Proxy(proxy) = &self.service else {
            return None;
        };
        let i = self.submits.iter().position(|s| *s == Submit::Connect)?;
        let slot = &mut self.pairs[key];
        let u = slot.up.upstream?;
        let addr = proxy.upstreams.get(u).addr;
        match upstream_socket(addr) {
            Ok(sock) => {
                // The previous attempt's socket, if any, is closed here: nothing is in
                // flight on it any more.
                slot.fds[Side::Upstream.index()] = Some(sock);
                Some(addr)
            }
            Err(e) => {
                self.submits.remove(i);
                slot.up.upstream_socket = slot.fds[Side::Upstream.index()].is_some();
                slot.up.on_local_failure(&e, &mut conn_env!(self));
                None
            }
        }
    }

    /// Pushes what the pair in slot `key` asked for.
    fn push_pair_submits(&mut self, key: usize, connect_to: Option<SocketAddr>) {
        let fds = self.pairs[key]
            .fds
            .each_ref()
            .map(|f| f.as_ref().map(AsRawFd::as_raw_fd));
        let token = Token::new(key, self.gens[key]);
        let mut closed_already = 0;
        let mut submits = std::mem::take(&mut self.submits);
        for sub in submits.drain(..) {
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
                    if let Some(addr) = connect_to {
                        let sqe = Sqe::connect(fd, SockAddr::from(addr), Op::Connect(tok));
                        self.driver.push(sqe);
                    }
                }
                (sub, Some(fd)) => self.push_socket_op(sub, tok, Target::Fd(fd)),
            }
        }
        self.submits = submits;
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
