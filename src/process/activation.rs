//! Inherited listening sockets: before the listener step of the data path binds anything, a
//! ringd started by a service manager (systemd socket activation, `sd_listen_fds(3)`) or by
//! the ringd it replaces (a live upgrade, see [`crate::process::upgrade`]) finds its listening sockets
//! already open at descriptors 3, 4, … and serves those instead.
//!
//! The protocol is systemd's: `LISTEN_PID` names the process the sockets are meant for (a
//! variable inherited by some other process is ignored), `LISTEN_FDS` counts them from
//! descriptor 3, `LISTEN_FDNAMES` optionally names them (colon-separated). A socket named
//! `metrics` serves `--metrics`; every other one is a listening socket for the workers. A
//! predecessor ringd adds `RINGD_UPGRADE_FROM` (its pid), `RINGD_READY_FD` (a pipe to report
//! readiness on), `RINGD_COUNTERS_FD` (a pipe its counters arrive on at the handover, see
//! [`crate::metrics`]) and `RINGD_UPGRADES` (the lineage's upgrade count). All of these variables
//! are removed from the environment once read, so that nothing ringd starts inherits them.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenOptions;
use crate::error::Error;

/// First inherited descriptor (after stdin, stdout, stderr).
pub const FIRST_FD: RawFd = 3;
/// The name that marks an inherited socket as the metrics endpoint's.
pub const METRICS_NAME: &str = "metrics";
/// The name ringd gives the worker sockets it hands to a successor.
pub const LISTEN_NAME: &str = "listen";

/// Variables of the service manager's protocol.
const LISTEN_PID: &str = "LISTEN_PID";
const LISTEN_FDS: &str = "LISTEN_FDS";
const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// Variables a predecessor ringd adds.
pub(crate) const UPGRADE_FROM: &str = "RINGD_UPGRADE_FROM";
pub(crate) const READY_FD: &str = "RINGD_READY_FD";
pub(crate) const UPGRADES: &str = "RINGD_UPGRADES";
pub(crate) const COUNTERS_FD: &str = "RINGD_COUNTERS_FD";

/// Every variable this module reads (and removes).
pub(crate) const VARIABLES: [&str; 7] = [
    LISTEN_PID,
    LISTEN_FDS,
    LISTEN_FDNAMES,
    UPGRADE_FROM,
    READY_FD,
    UPGRADES,
    COUNTERS_FD,
];

/// What a process was given at start.
#[derive(Debug)]
pub struct Activation {
    /// The listening sockets.
    pub sockets: InheritedSockets,
    /// Set when the sockets come from a ringd that waits for this one to be ready.
    pub predecessor: Option<Predecessor>,
}

/// Inherited listening sockets, checked: each is a listening TCP socket.
#[derive(Debug)]
pub struct InheritedSockets {
    /// The sockets the workers accept on, in descriptor order.
    pub listeners: Vec<TcpListener>,
    /// The socket named `metrics`, if any.
    pub metrics: Option<TcpListener>,
}

/// The ringd that handed its sockets over and waits for this one.
#[derive(Debug)]
pub struct Predecessor {
    /// Its process id.
    pub pid: u32,
    /// Upgrades made in the lineage so far, this one included.
    pub upgrades: u64,
    /// Where to report readiness: one byte, written once every worker is up.
    pub ready: OwnedFd,
    /// Where its counters arrive at the handover (a snapshot, then the end of the pipe);
    /// `None` from a predecessor that sends none.
    pub counters: Option<OwnedFd>,
}

/// Reads and removes the activation variables; takes ownership of the descriptors they name
/// and checks each. `None` when there are none for this process.
///
/// Call it before any other thread starts: it changes the environment.
pub fn take_from_env() -> Result<Option<Activation>, Error> {
    let get = |name: &str| std::env::var(name).ok();
    let (pid, fds, names) = (get(LISTEN_PID), get(LISTEN_FDS), get(LISTEN_FDNAMES));
    let (from, ready, upgrades) = (get(UPGRADE_FROM), get(READY_FD), get(UPGRADES));
    let counters = get(COUNTERS_FD);
    for name in VARIABLES {
        std::env::remove_var(name);
    }
    let Some(fds) = fds else {
        return Ok(None);
    };
    // Variables meant for another process (a parent that did not remove them) are not ours:
    // sd_listen_fds(3) ignores them too.
    let ours =
        pid.as_deref().and_then(|p| p.trim().parse::<u32>().ok()) == Some(std::process::id());
    if !ours {
        tracing::debug!("ignoring LISTEN_FDS={fds}: LISTEN_PID is {pid:?}, not this process");
        return Ok(None);
    }
    let count: RawFd = fds
        .trim()
        .parse()
        .ok()
        .filter(|&n: &RawFd| (0..=1024).contains(&n))
        .ok_or_else(|| inherited(format!("LISTEN_FDS={fds} is not a descriptor count")))?;
    if count == 0 {
        return Ok(None);
    }
    let sockets = take_sockets(count, names.as_deref())?;
    let predecessor = match (from, ready) {
        (Some(from), Some(ready)) => {
            Some(take_predecessor(&from, &ready, upgrades, counters, count)?)
        }
        _ => None,
    };
    Ok(Some(Activation {
        sockets,
        predecessor,
    }))
}

/// The `count` inherited sockets from descriptor 3 on, named by `names` (`LISTEN_FDNAMES`):
/// the one named [`METRICS_NAME`] serves the metrics, the others the workers.
fn take_sockets(count: RawFd, names: Option<&str>) -> Result<InheritedSockets, Error> {
    let names: Vec<&str> = names.map_or(Vec::new(), |n| n.split(':').collect());
    let mut sockets = InheritedSockets {
        listeners: Vec::new(),
        metrics: None,
    };
    for fd in FIRST_FD..FIRST_FD + count {
        let name = names.get((fd - FIRST_FD) as usize).copied().unwrap_or("");
        let listener = take_listener(fd, count)?;
        if name == METRICS_NAME && sockets.metrics.is_none() {
            sockets.metrics = Some(listener);
        } else {
            sockets.listeners.push(listener);
        }
    }
    if sockets.listeners.is_empty() {
        return Err(inherited(format!(
            "LISTEN_FDS={count} passes no listening socket for the workers (only `{METRICS_NAME}`)"
        )));
    }
    Ok(sockets)
}

/// The predecessor of a live upgrade, from its variables: its pid (`from`), the pipe to tell
/// it that this process is ready (`ready`), the upgrade count, and the pipe its counters
/// come through, past the `count` sockets.
fn take_predecessor(
    from: &str,
    ready: &str,
    upgrades: Option<String>,
    counters: Option<String>,
    count: RawFd,
) -> Result<Predecessor, Error> {
    let pid = from
        .parse()
        .map_err(|_| inherited(format!("{UPGRADE_FROM}={from} is not a pid")))?;
    let ready = take_pipe(READY_FD, ready, count)?;
    let upgrades = upgrades.and_then(|u| u.parse().ok()).unwrap_or(1);
    let counters = match counters {
        Some(c) => Some(take_pipe(COUNTERS_FD, &c, count)?),
        None => None,
    };
    Ok(Predecessor {
        pid,
        upgrades,
        ready,
        counters,
    })
}

/// The descriptor the variable `var` names by `value`, which must come after the `count`
/// sockets and be open.
fn take_pipe(var: &str, value: &str, count: RawFd) -> Result<OwnedFd, Error> {
    let fd: RawFd = value
        .parse()
        .ok()
        .filter(|&fd| fd >= FIRST_FD + count)
        .ok_or_else(|| inherited(format!("{var}={value} is not a descriptor")))?;
    take_fd(fd).ok_or_else(|| inherited(format!("{var}={fd} is not an open descriptor")))
}

fn inherited(msg: String) -> Error {
    Error::Inherited(msg)
}

/// Takes `fd` if it is open, marking it close-on-exec (as `sd_listen_fds` does).
fn take_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl(2) on a descriptor number only inspects or sets its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return None;
    }
    // SAFETY: as above; the descriptor is open.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open, and the activation protocol gives it to this process:
    // nothing else in it refers to this number.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes `fd` and checks that it is a listening TCP socket.
fn take_listener(fd: RawFd, count: RawFd) -> Result<TcpListener, Error> {
    let what = format!("inherited descriptor {fd} (LISTEN_FDS={count})");
    let owned = take_fd(fd).ok_or_else(|| inherited(format!("{what} is not open")))?;
    let socket = Socket::from(owned);
    let kind = match socket.r#type() {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            return Err(inherited(format!("{what} is not a socket")))
        }
        Err(e) => return Err(inherited(format!("{what} cannot be inspected: {e}"))),
    };
    let domain = socket.domain().ok();
    let protocol = socket.protocol().ok().flatten();
    let tcp = kind == Type::STREAM
        && matches!(domain, Some(d) if d == Domain::IPV4 || d == Domain::IPV6)
        && matches!(protocol, None | Some(Protocol::TCP));
    if !tcp {
        return Err(inherited(format!(
            "{what} is not a TCP socket ({}): ringd serves TCP over IPv4 or IPv6 only",
            describe(domain, kind)
        )));
    }
    if !socket.is_listener().unwrap_or(false) {
        return Err(inherited(format!(
            "{what} is a TCP socket that is not listening: pass a socket in the listening state \
             (a socket unit's ListenStream=)"
        )));
    }
    Ok(socket.into())
}

fn describe(domain: Option<Domain>, kind: Type) -> String {
    let d = match domain {
        Some(d) if d == Domain::IPV4 => "IPv4",
        Some(d) if d == Domain::IPV6 => "IPv6",
        Some(d) if d == Domain::UNIX => "Unix",
        _ => "other family",
    };
    let k = if kind == Type::STREAM {
        "stream"
    } else if kind == Type::DGRAM {
        "datagram"
    } else {
        "other type"
    };
    format!("{d} {k}")
}

impl InheritedSockets {
    /// The address of the first listening socket.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listeners[0]
            .local_addr()
            .map_err(|e| inherited(format!("cannot read the inherited socket's address: {e}")))
    }

    /// Applies the options accepted connections inherit: TCP_NODELAY always; the socket
    /// buffer sizes when given; the backlog only when `backlog_given` (otherwise the socket
    /// keeps the one it was created with, e.g. a socket unit's `Backlog=`). `listen(2)` on a
    /// socket that already listens only changes its backlog: its queue is left as it is.
    pub fn configure(&self, opts: &ListenOptions, backlog_given: bool) -> Result<(), Error> {
        for l in &self.listeners {
            let socket = socket2::SockRef::from(l);
            let addr = l.local_addr().ok();
            let fail = |e: std::io::Error| {
                inherited(format!(
                    "cannot set options on the inherited socket {}: {e}",
                    addr.map_or("?".into(), |a| a.to_string())
                ))
            };
            socket.set_tcp_nodelay(true).map_err(fail)?;
            if let Some(n) = opts.send_buffer {
                socket.set_send_buffer_size(n).map_err(fail)?;
            }
            if let Some(n) = opts.recv_buffer {
                socket.set_recv_buffer_size(n).map_err(fail)?;
            }
            if backlog_given {
                socket
                    .listen(i32::try_from(opts.backlog).unwrap_or(i32::MAX))
                    .map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Checks the inherited sockets against an explicit `--listen` (a successor started with
    /// its predecessor's arguments): same IP, and the same port unless `--listen` asked for
    /// port 0.
    pub fn check_listen(&self, listen: SocketAddr) -> Result<(), Error> {
        for l in &self.listeners {
            let got = l.local_addr().map_err(|e| {
                inherited(format!("cannot read an inherited socket's address: {e}"))
            })?;
            if got.ip() != listen.ip() || (listen.port() != 0 && got.port() != listen.port()) {
                return Err(inherited(format!(
                    "an inherited socket listens on {got}, not on --listen {listen}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_tcp_socket_is_taken() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: dup(2) of an open descriptor.
        let fd = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&l)) };
        let taken = take_listener(fd, 1).unwrap();
        assert_eq!(taken.local_addr().unwrap(), l.local_addr().unwrap());
        // SAFETY: fcntl(2) F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn anything_else_is_one_clear_error() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        bound
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        for (fd, expect) in [
            (udp_fd(&udp), "not a TCP socket (IPv4 datagram)"),
            (
                dup(std::os::fd::AsRawFd::as_raw_fd(&bound)),
                "not listening",
            ),
            (dup(std::os::fd::AsRawFd::as_raw_fd(&file)), "not a socket"),
            (1000, "not open"),
        ] {
            let err = take_listener(fd, 1).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    fn udp_fd(s: &std::net::UdpSocket) -> RawFd {
        dup(std::os::fd::AsRawFd::as_raw_fd(s))
    }

    fn dup(fd: RawFd) -> RawFd {
        // SAFETY: dup(2) of an open descriptor.
        unsafe { libc::dup(fd) }
    }

    #[test]
    fn listen_check_allows_port_zero_only() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s = InheritedSockets {
            listeners: vec![l],
            metrics: None,
        };
        assert!(s.check_listen("127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(s.check_listen(addr).is_ok());
        assert!(s.check_listen("127.0.0.2:0".parse().unwrap()).is_err());
        let other = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1));
        assert!(s.check_listen(other).is_err());
    }
}
