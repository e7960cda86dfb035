//! Listeners: the first step of the data path. One SO_REUSEPORT socket per worker, all bound
//! to the same address, so the kernel spreads incoming connections across the workers with
//! no shared accept queue and no lock.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenOptions;
use crate::error::Error;

/// How the sockets are set up is the configuration's; applying it is the listener's.
impl ListenOptions {
    /// Applies the options that accepted connections inherit: TCP_NODELAY (which saves every
    /// engine a setsockopt per connection) and the buffer sizes.
    pub fn apply(&self, socket: &Socket) -> io::Result<()> {
        socket.set_tcp_nodelay(true)?;
        if let Some(n) = self.send_buffer {
            socket.set_send_buffer_size(n)?;
        }
        if let Some(n) = self.recv_buffer {
            socket.set_recv_buffer_size(n)?;
        }
        Ok(())
    }
}

/// Binds one listening socket with SO_REUSEPORT (and SO_REUSEADDR, so a restart does not wait
/// for TIME_WAIT) and `opts`.
pub fn bind_reuseport(addr: SocketAddr, opts: &ListenOptions) -> Result<TcpListener, Error> {
    let bind = || -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        opts.apply(&socket)?;
        if addr.is_ipv6() {
            set_dual_stack(&socket)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(opts.backlog).unwrap_or(i32::MAX))?;
        Ok(socket.into())
    };
    bind().map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => Error::AddrInUse { addr },
        _ => Error::Bind { addr, err: source },
    })
}

/// An IPv6 socket takes IPv4 connections too (as IPv4-mapped addresses), so that `[::]:P`
/// listens on every address as users of Linux expect, whatever `net.ipv6.bindv6only` says;
/// for any other IPv6 address it changes nothing. The probe sets it as well, so that it sees
/// an IPv4 socket on the port.
fn set_dual_stack(socket: &Socket) -> io::Result<()> {
    socket.set_only_v6(false)
}

/// Binds `n` listeners to `addr`. With port 0, the first picks a port and the others bind to
/// the port it got.
///
/// SO_REUSEPORT lets any socket of the same user join the group, so a port that another
/// ringd (or anything with SO_REUSEPORT) already holds would be silently shared. The first
/// bind is therefore made without SO_REUSEPORT's sharing check being trusted: we bind a probe
/// socket without SO_REUSEPORT first, which fails with EADDRINUSE if anyone holds the port.
pub fn bind_workers(
    addr: SocketAddr,
    n: usize,
    opts: &ListenOptions,
) -> Result<Vec<TcpListener>, Error> {
    let mut addr = addr;
    if addr.port() != 0 {
        probe_free(addr)?;
    }
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let l = bind_reuseport(addr, opts)?;
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
        set_dual_stack(&socket).map_err(|source| Error::Bind { addr, err: source })?;
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

    fn opts(backlog: u32) -> ListenOptions {
        ListenOptions {
            backlog,
            ..ListenOptions::default()
        }
    }

    #[test]
    fn workers_share_the_port_worker_zero_picked() {
        let ls = bind_workers("127.0.0.1:0".parse().unwrap(), 3, &opts(128)).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }

    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let ls = bind_workers("127.0.0.1:0".parse().unwrap(), 1, &opts(16)).unwrap();
        let _client = std::net::TcpStream::connect(ls[0].local_addr().unwrap()).unwrap();
        let (accepted, _) = ls[0].accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn accepted_sockets_inherit_buffer_sizes() {
        let small = ListenOptions {
            send_buffer: Some(4096),
            recv_buffer: Some(4096),
            ..opts(16)
        };
        let ls = bind_workers("127.0.0.1:0".parse().unwrap(), 1, &small).unwrap();
        let _client = std::net::TcpStream::connect(ls[0].local_addr().unwrap()).unwrap();
        let (accepted, _) = ls[0].accept().unwrap();
        let accepted = Socket::from(accepted);
        // The kernel doubles what it is asked for (bookkeeping overhead) and has a floor;
        // loopback's default is megabytes.
        assert!(accepted.send_buffer_size().unwrap() <= 16384);
        assert!(accepted.recv_buffer_size().unwrap() <= 16384);
    }

    #[test]
    fn port_in_use_is_reported() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        match bind_workers(addr, 2, &opts(128)) {
            Err(Error::AddrInUse { addr: a }) => assert_eq!(a, addr),
            other => panic!("expected AddrInUse, got {other:?}"),
        }
    }

    #[test]
    fn port_held_by_another_reuseport_group_is_reported() {
        let held = bind_reuseport("127.0.0.1:0".parse().unwrap(), &opts(16)).unwrap();
        let addr = held.local_addr().unwrap();
        assert!(matches!(
            bind_workers(addr, 2, &opts(128)),
            Err(Error::AddrInUse { .. })
        ));
    }

    /// True when loopback has IPv6 here; else says that the caller is skipped.
    fn has_ipv6() -> bool {
        let yes = std::net::TcpListener::bind("[::1]:0").is_ok();
        if !yes {
            println!("skipped: this host has no IPv6 on loopback");
        }
        yes
    }

    #[test]
    fn the_ipv6_wildcard_is_dual_stack() {
        if !has_ipv6() {
            return;
        }
        let ls = bind_workers("[::]:0".parse().unwrap(), 2, &opts(16)).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port))
            .expect("an IPv4 client reaches [::]");
    }

    #[test]
    fn the_ipv6_wildcard_is_refused_where_ipv4_is_held() {
        if !has_ipv6() {
            return;
        }
        // Another SO_REUSEPORT group on the IPv4 wildcard: a dual-stack socket would share
        // its IPv4 connections unless the probe sees it.
        let held = bind_reuseport("0.0.0.0:0".parse().unwrap(), &opts(16)).unwrap();
        let port = held.local_addr().unwrap().port();
        let addr = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
        assert!(matches!(
            bind_workers(addr, 2, &opts(16)),
            Err(Error::AddrInUse { .. })
        ));
    }
}
