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
use crate::connection::{CloseReason, Millis, WorkerStats};
use crate::proxy::header::Announce;
use crate::proxy::terminate::Terminated;
use crate::proxy::{Relay, SendProxy, Side, Upstreams};

impl Worker {
    /// Starts proxying a connection accepted at `now` (over `--max-connections`: closed at
    /// once).
    pub(super) fn admit_pair(&mut self, fd: OwnedFd, now: Millis) {
        let Some(proxy) = self.serving.service.proxy() else {
            return;
        };
        let connect_ms = proxy.connect_timeout.as_millis() as u64;
        let limits = &self.time.limits;
        let mut relay = match proxy.routes_first() {
            true => Relay::routing(now, proxy.routing_ms(limits)),
            false => Relay::new(now, now + connect_ms),
        };
        let max_peek = limits.max_pending;
        let header = match self.env.limit.try_admit() {
            true => {
                WorkerStats::inc(&self.env.stats.accepted);
                pair_header(proxy.send_proxy, &fd).unwrap_or_else(|reason| {
                    relay.abort(reason);
                    None
                })
            }
            false => {
                WorkerStats::inc(&self.env.stats.rejected);
                relay.abort(CloseReason::Rejected);
                None
            }
        };
        let origin = match self.env.access_log {
            Some(_) => Some(Origin::of(&fd, &self.acceptor.listener, now)),
            None => None,
        };
        let t = self.sessions.insert_pair(PairSession {
            fds: [Some(Descriptor::Os(fd)), None],
            up: UPair::new(
                relay,
                header,
                max_peek,
                proxy.tls.as_ref().map(Terminated::new),
            ),
            origin,
        });
        self.dispatch(t, SessionEvent::Start);
    }
}

/// The PROXY header (of version `send_proxy`, if one is sent) for the client on socket
/// `fd`. A client whose addresses cannot be read (it reset the connection before it was
/// looked at) is never proxied without its header: its pair ends with an error.
fn pair_header(
    send_proxy: Option<SendProxy>,
    fd: &OwnedFd,
) -> Result<Option<Announce>, CloseReason> {
    let Some(version) = send_proxy else {
        return Ok(None);
    };
    let s = socket2::SockRef::from(fd);
    let peer = s.peer_addr().ok().and_then(|a| a.as_socket());
    let local = s.local_addr().ok().and_then(|a| a.as_socket());
    match (peer, local) {
        (Some(client), Some(local)) => Ok(Some(Announce {
            version,
            client,
            local,
        })),
        _ => Err(CloseReason::Error),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::uring::session::tests::accepted_after_reset;

    #[test]
    fn a_client_whose_address_is_gone_is_not_proxied_without_its_header() {
        let (_listener, fd) = accepted_after_reset();
        assert_eq!(pair_header(None, &fd), Ok(None), "no header asked for");
        for v in [SendProxy::V1, SendProxy::V2] {
            assert_eq!(pair_header(Some(v), &fd), Err(CloseReason::Error));
        }
    }

    #[test]
    fn a_client_still_there_gets_its_header() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (sock, _) = listener.accept().unwrap();
        let header = pair_header(Some(SendProxy::V1), &sock.into())
            .unwrap()
            .unwrap();
        let line = String::from_utf8(header.encode(None)).unwrap();
        let port = client.local_addr().unwrap().port();
        assert!(
            line.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "),
            "{line}"
        );
        assert!(line.contains(&format!(" {port} ")), "{line}");
    }
}
