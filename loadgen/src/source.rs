//! Source addresses (`--source`): the pool a run's connections are bound to, and the sockets
//! bound to one of them. One source address reaches one target from at most the ephemeral
//! port range (~28k ports); a pool of them multiplies that.
//!
//! Each socket sets `IP_BIND_ADDRESS_NO_PORT` before binding to `SOURCE:0`, so the bind
//! reserves no port: the kernel picks the port at `connect`, unique per 4-tuple, and the
//! same port serves other targets too. A plain bind would reserve the port for every
//! destination at once and cap a source at one port range in all.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Most addresses a pool may hold: far beyond what any run needs (1024 sources reach one
/// target from ~28 million ports), small enough to check each before the run.
pub const MAX_SOURCES: usize = 1024;

/// Parses a pool: a comma-separated list of addresses (`127.0.0.2`, `::1`), ranges
/// (`127.0.0.2-127.0.0.9`, both ends included) and CIDR blocks (`127.0.0.0/29`: its
/// host addresses, without the network and broadcast addresses in IPv4, nor the all-zero
/// subnet-router address in IPv6, as Python's `ipaddress` counts hosts). Duplicates are
/// dropped; order is kept.
pub fn parse_pool(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut pool: Vec<IpAddr> = Vec::new();
    let parts: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(format!(
            "empty --source {s:?} (try 127.0.0.2-127.0.0.9, 127.0.0.0/29 or 127.0.0.2,127.0.0.3)"
        ));
    }
    for part in parts {
        let (first, last) = span(part)?;
        let count = last - first + 1;
        if count > MAX_SOURCES as u128 || pool.len() + count as usize > MAX_SOURCES {
            return Err(format!(
                "--source {part} gives {count} addresses; a pool holds at most {MAX_SOURCES}"
            ));
        }
        for n in first..=last {
            let ip = if part.contains(':') {
                IpAddr::V6(Ipv6Addr::from(n))
            } else {
                IpAddr::V4(Ipv4Addr::from(n as u32))
            };
            if !pool.contains(&ip) {
                pool.push(ip);
            }
        }
    }
    Ok(pool)
}

/// The pool of every `--source` given, duplicates dropped, order kept.
pub fn parse_pools(pools: &[String]) -> Result<Vec<IpAddr>, String> {
    let mut all: Vec<IpAddr> = Vec::new();
    for pool in pools {
        for ip in parse_pool(pool)? {
            if !all.contains(&ip) {
                all.push(ip);
            }
        }
    }
    if all.len() > MAX_SOURCES {
        return Err(format!(
            "--source gives {} addresses; a pool holds at most {MAX_SOURCES}",
            all.len()
        ));
    }
    Ok(all)
}

/// The first and last address of one part of a pool, as numbers.
fn span(part: &str) -> Result<(u128, u128), String> {
    let bad = || {
        format!(
            "bad --source {part:?}: an address, a range FIRST-LAST or a CIDR block ADDR/BITS of one family"
        )
    };
    let ip = |t: &str| t.trim().parse::<IpAddr>().map_err(|_| bad());
    if let Some((a, b)) = part.split_once('-') {
        let (a, b) = (ip(a)?, ip(b)?);
        if a.is_ipv4() != b.is_ipv4() {
            return Err(bad());
        }
        let (a, b) = (number(a), number(b));
        if a > b {
            return Err(format!(
                "bad --source {part:?}: the range ends before it starts"
            ));
        }
        return Ok((a, b));
    }
    if let Some((a, bits)) = part.split_once('/') {
        let a = ip(a)?;
        let width: u32 = if a.is_ipv4() { 32 } else { 128 };
        let bits: u32 = bits
            .trim()
            .parse()
            .ok()
            .filter(|b| *b <= width)
            .ok_or_else(bad)?;
        let host_bits = width - bits;
        let mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let network = number(a) & !mask;
        let (first, last) = (network, network | mask);
        // Hosts only; /31 and /127 blocks are two hosts (RFC 3021, RFC 6164).
        return Ok(match (a.is_ipv4(), host_bits) {
            (_, 0 | 1) => (first, last),
            (true, _) => (first + 1, last - 1),
            (false, _) => (first + 1, last),
        });
    }
    let a = number(ip(part)?);
    Ok((a, a))
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Every source can serve every target: the same family, and an address of this host
/// that a socket can bind to. Checked before the run, so a typo is one line, not a run of
/// connect errors.
pub fn check(sources: &[IpAddr], targets: &[SocketAddr]) -> Result<(), String> {
    for src in sources {
        if let Some(t) = targets.iter().find(|t| t.is_ipv4() != src.is_ipv4()) {
            return Err(format!(
                "--source {src} is {} but target {t} is {}: give sources of the target's family",
                family(src.is_ipv4()),
                family(t.is_ipv4())
            ));
        }
        bound_socket(*src).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                " (it is not an address of this host: see `ip addr`)"
            } else {
                ""
            };
            format!("--source {src}: cannot bind to it: {e}{hint}")
        })?;
    }
    Ok(())
}

fn family(v4: bool) -> &'static str {
    if v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Turns int option `name` of `level` on (one socket2 has no setter for).
pub fn set_option_on(socket: &Socket, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is open for the whole call; the option value is a valid
    // c_int that outlives it, and its size is given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A TCP socket bound to `src` with no port yet (`IP_BIND_ADDRESS_NO_PORT`): `connect`
/// picks the port for its 4-tuple.
fn bound_socket(src: IpAddr) -> io::Result<Socket> {
    let domain = if src.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    set_option_on(&socket, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)?;
    socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    Ok(socket)
}

/// Starts a non-blocking connect to `dst` from `src` (or from the address the kernel
/// chooses), for the event loop.
pub fn connect(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let Some(src) = src else {
        return mio::net::TcpStream::connect(dst);
    };
    let socket = bound_socket(src)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// A socket, not yet connected, for a connection to `dst`, bound to `src` if given (the port
/// is chosen at the connect), for an engine that connects it itself.
pub fn socket(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<Socket> {
    match src {
        Some(src) => bound_socket(src),
        None => Socket::new(
            Domain::for_address(dst),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        ),
    }
}

/// A blocking connect with a timeout from `src` (or the kernel's choice): is the target
/// reachable from there?
pub fn connect_timeout(src: Option<IpAddr>, dst: SocketAddr, timeout: Duration) -> io::Result<()> {
    match src {
        None => std::net::TcpStream::connect_timeout(&dst, timeout).map(drop),
        Some(src) => bound_socket(src)?.connect_timeout(&SockAddr::from(dst), timeout),
    }
}

/// The source of connection `id`: round-robin over the pool within each target (a target
/// gets every `targets`-th connection), so every target is reached from every source, as
/// evenly as the numbers allow. A connection keeps its source when it reconnects.
pub fn of_connection(sources: &[IpAddr], targets: usize, id: u64) -> Option<IpAddr> {
    if sources.is_empty() {
        return None;
    }
    let round = id / targets.max(1) as u64;
    Some(sources[(round % sources.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn pools_from_ranges_blocks_and_lists() {
        assert_eq!(
            parse_pool("127.0.0.2-127.0.0.4").unwrap(),
            ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])
        );
        assert_eq!(
            parse_pool("127.0.0.0/29").unwrap(),
            ips(&[
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.0.5",
                "127.0.0.6"
            ])
        );
        assert_eq!(
            parse_pool("10.0.0.6/31").unwrap(),
            ips(&["10.0.0.6", "10.0.0.7"])
        );
        assert_eq!(parse_pool("10.0.0.9/32").unwrap(), ips(&["10.0.0.9"]));
        assert_eq!(
            parse_pool("127.0.0.3, 127.0.0.2,127.0.0.3").unwrap(),
            ips(&["127.0.0.3", "127.0.0.2"])
        );
        assert_eq!(
            parse_pool("fd00::1-fd00::3").unwrap(),
            ips(&["fd00::1", "fd00::2", "fd00::3"])
        );
        assert_eq!(
            parse_pool("fd00::/126").unwrap(),
            ips(&["fd00::1", "fd00::2", "fd00::3"])
        );
        assert_eq!(parse_pool("::1").unwrap(), ips(&["::1"]));
        assert_eq!(parse_pool("::1/128").unwrap(), ips(&["::1"]));
    }

    #[test]
    fn bad_pools_say_what_is_expected() {
        for (pool, needle) in [
            ("", "empty"),
            ("nope", "ADDR/BITS"),
            ("127.0.0.9-127.0.0.2", "ends before"),
            ("127.0.0.1-::1", "one family"),
            ("127.0.0.0/33", "ADDR/BITS"),
            ("10.0.0.0/8", "at most 1024"),
            ("fd00::/64", "at most 1024"),
            ("127.0.0.0/22,127.0.4.0/22", "at most 1024"),
        ] {
            let e = parse_pool(pool).unwrap_err();
            assert!(e.contains(needle), "{pool}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn connections_spread_over_sources_within_each_target() {
        let pool = ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
        // Two targets: target 0 gets ids 0, 2, 4, …, target 1 ids 1, 3, 5, …; each sees
        // every source in turn.
        let of = |id| of_connection(&pool, 2, id).unwrap().to_string();
        let t0: Vec<String> = [0, 2, 4, 6].map(of).into();
        let t1: Vec<String> = [1, 3, 5, 7].map(of).into();
        assert_eq!(t0, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
        assert_eq!(t1, t0);
        assert_eq!(of_connection(&[], 1, 5), None);
    }

    #[test]
    fn sources_are_checked_before_the_run() {
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(check(&ips(&["127.0.0.2", "127.0.0.9"]), &[v4]), Ok(()));
        let e = check(&ips(&["::1"]), &[v4]).unwrap_err();
        assert!(e.contains("IPv6 but target 127.0.0.1:9 is IPv4"), "{e}");
        // TEST-NET-3: no host has it.
        let e = check(&ips(&["203.0.113.7"]), &[v4]).unwrap_err();
        assert!(e.contains("not an address of this host"), "{e}");
    }
}
