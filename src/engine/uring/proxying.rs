//! The `uring` worker in proxy mode: a client just accepted becomes a proxied pair
//! ([`UPair`]) session, and the upstream sockets its connects need are opened here.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use ringd_ring::{BufRing, Descriptor};
use socket2::{Domain, Socket, Type};

use super::conn::Env;
use super::pair::UPair;
use super::session::{Origin, PairSession, SessionEvent};
use super::sock::Submit;
use super::Worker;
use crate::connection::{CloseReason, WorkerStats};
use crate::proxy::{header, Relay, Side, Upstreams};

impl Worker {
    /// Starts proxying a connection just accepted (over `--max-connections`: closed at once).
    pub(super) fn admit_pair(&mut self, fd: OwnedFd) {
        let Some(proxy) = self.serving.service.proxy() else {
            return;
        };
        let now = self.time.clock.now();
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
        let origin = match self.env.access_log {
            Some(_) => Origin::of(&fd, now),
            None => None,
        };
        let t = self.sessions.insert_pair(PairSession {
            fds: [Some(Descriptor::Os(fd)), None],
            up: UPair::new(relay, header),
            origin,
        });
        self.dispatch(t, SessionEvent::Start);
    }
}

/// Opens the upstream socket a [`Submit::Connect`] in `env.submit` asks for; returns the
/// address to connect it to. A connect that cannot even start (no descriptor, no memory)
/// fails this client alone: a local shortage says nothing of the upstream's health.
pub(super) fn open_upstream(
    fds: &mut [Option<Descriptor>; 2],
    p: &mut UPair,
    env: &mut Env<BufRing>,
    ups: &Upstreams,
) -> Option<SocketAddr> {
    let i = env.submit.iter().position(|s| *s == Submit::Connect)?;
    let addr = ups.get(p.upstream?).addr;
    match upstream_socket(addr) {
        Ok(sock) => {
            // The previous attempt's socket, if any, is closed here: nothing is in flight on
            // it any more.
            fds[Side::Upstream.index()] = Some(Descriptor::Os(sock));
            Some(addr)
        }
        Err(e) => {
            env.submit.remove(i);
            p.upstream_socket = fds[Side::Upstream.index()].is_some();
            p.on_local_failure(&e, env);
            None
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
