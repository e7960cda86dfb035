//! Listeners: the first step of the data path. One SO_REUSEPORT socket per worker, all bound
//! to the same address, so the kernel spreads incoming connections across the workers with
//! no shared accept queue and no lock.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// Binds one listening socket with SO_REUSEPORT (and SO_REUSEADDR, so a restart does not wait
/// for TIME_WAIT) and the given backlog. TCP_NODELAY is set on the listener: accepted sockets
/// inherit it, which saves every engine a setsockopt per connection.
pub fn bind_reuseport(addr: SocketAddr, backlog: u32) -> Result<TcpListener, Error> {
    let bind = || -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_tcp_nodelay(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        Ok(socket.into())
    };
    bind().map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => Error::AddrInUse { addr },
        _ => Error::Bind { addr, err: source },
    })
}

/// Binds `n` listeners to `addr`. With port 0, the first picks a port and the others bind to
/// the port it got.
///
/// SO_REUSEPORT lets any socket of the same user join the group, so a port that another
/// ringd (or anything with SO_REUSEPORT) already holds would be silently shared. The first
/// bind is therefore made without SO_REUSEPORT's sharing check being trusted: we bind a probe
/// socket without SO_REUSEPORT first, which fails with EADDRINUSE if anyone holds the port.
pub fn bind_workers(addr: SocketAddr, n: usize, backlog: u32) -> Result<Vec<TcpListener>, Error> {
    let mut addr = addr;
    if addr.port() != 0 {
        probe_free(addr)?;
    }
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let l = bind_reuseport(addr, backlog)?;
        if addr.port() == 0 {
            addr = l
                .local_addr()
                .map_err(|source| Error::Bind { addr, err: source })?;
        }
        listeners.push(l);
    }
    Ok(listeners)
}

/// Fails with [`Error::AddrInUse`] if some socket already listens on `addr`.
fn probe_free(addr: SocketAddr) -> Result<(), Error> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|source| Error::Bind { addr, err: source })?;
    socket
        .set_reuse_address(true)
        .map_err(|source| Error::Bind { addr, err: source })?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(true);
    }
    socket
        .bind(&addr.into())
        .map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => Error::AddrInUse { addr },
            _ => Error::Bind { addr, err: source },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_the_port_worker_zero_picked() {
        let ls = bind_workers("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let ls = bind_workers("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
        let _client = std::net::TcpStream::connect(ls[0].local_addr().unwrap()).unwrap();
        let (accepted, _) = ls[0].accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn port_in_use_is_reported() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        match bind_workers(addr, 2, 128) {
            Err(Error::AddrInUse { addr: a }) => assert_eq!(a, addr),
            other => panic!("expected AddrInUse, got {other:?}"),
        }
    }

    #[test]
    fn port_held_by_another_reuseport_group_is_reported() {
        let held = bind_reuseport("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = held.local_addr().unwrap();
        assert!(matches!(
            bind_workers(addr, 2, 128),
            Err(Error::AddrInUse { .. })
        ));
    }
}
