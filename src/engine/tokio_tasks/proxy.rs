//! Proxy mode on the tokio engines: a task per proxied connection that connects to an
//! upstream (failing over to the next one), then pumps each direction with its own buffer,
//! read then write, so a direction whose receiver is slow stops reading its sender
//! (backpressure by construction, one buffer's worth per direction). A FIN read on one side
//! is passed to the other once everything before it is sent; an error on either side ends
//! both. The [`Relay`] decides; this moves bytes and schedules wake-ups.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tracing::debug;

use super::registry::{Alarm, Registered};
use super::shared::Shared;
use super::stream::{Listener, Stream};
use crate::access_log::{Ended, UpstreamRecord};
use crate::connection::{CloseReason, WorkerStats};
use crate::proxy::relay::{Phase, Timeout};
use crate::proxy::sni::{Choice, Hello, Sniffer, MAX_PEEK};
use crate::proxy::{header, ProxyConfig, Relay, Side, Upstreams};

/// Serves one proxied connection; returns why it ended.
pub(super) async fn relay<L: Listener>(
    client: &L::Stream,
    peer: SocketAddr,
    registered: &Registered,
    shared: &Shared,
) -> Ended {
    let Some(proxy) = shared.service.proxy() else {
        return Ended::empty(CloseReason::Error);
    };
    let (clock, limits) = (&shared.clock, &shared.limits);
    let connect_ms = proxy.connect_timeout.as_millis() as u64;
    let relay = RefCell::new(match proxy.sni {
        Some(_) => Relay::routing(clock.now(), limits),
        None => Relay::new(clock.now(), clock.now() + connect_ms),
    });
    // With SNI routes, the client's first bytes choose its upstreams; they are held and
    // go to it first, as they came.
    let mut held = Vec::new();
    let routed = match &proxy.sni {
        None => Ok(&*proxy.upstreams),
        Some(routes) => match sniff(client, &relay, shared, &mut held).await {
            Ok(hello) => match routes.choose(&hello, &proxy.upstreams) {
                Choice::Route(ups) => Ok(&**ups),
                Choice::Default => Ok(&*proxy.upstreams),
                Choice::Close => {
                    relay.borrow_mut().abort(CloseReason::Protocol);
                    Err(CloseReason::Protocol)
                }
            },
            Err(reason) => Err(reason),
        },
    };
    let connected = match routed {
        Ok(ups) => connect_upstream::<L>(ups, proxy, &relay, shared)
            .await
            .map(|(i, s)| (ups, i, s)),
        Err(reason) => Err(reason),
    };
    let (ups, index, upstream) = match connected {
        Ok(connected) => connected,
        Err(reason) => {
            let (bytes_in, bytes_out) = relay.borrow().bytes(Side::Client);
            return Ended {
                reason,
                bytes_in,
                bytes_out,
                upstream: None,
            };
        }
    };
    ups.connected(index);
    relay.borrow_mut().on_connected(clock.now());
    let mut first = Vec::new();
    if let Some(version) = proxy.send_proxy {
        if let Ok(local) = client.local_addr() {
            first = header::encode(version, peer, local);
            relay
                .borrow_mut()
                .on_header(clock.now(), Side::Client, first.len(), limits);
        }
    }
    first.extend_from_slice(&held);
    let pair = Pair {
        relay: &relay,
        shared,
        upstream: &ups.get(index).stats,
        alarm: &registered.entry().alarm,
    };
    let reason = exchange::<L::Stream>(client, &upstream, first, &pair, registered).await;
    drop(upstream);
    ups.released(index);
    let r = relay.borrow();
    let ((bytes_in, bytes_out), (received, sent)) =
        (r.bytes(Side::Client), r.bytes(Side::Upstream));
    Ended {
        reason,
        bytes_in,
        bytes_out,
        upstream: Some(UpstreamRecord {
            addr: ups.get(index).addr,
            bytes_sent: sent,
            bytes_received: received,
        }),
    }
}

/// Reads the client's first bytes into `held` until they say where it goes, by the
/// relay's routing deadline; what they said, or why the client ends first.
async fn sniff<S: Stream>(
    client: &S,
    relay: &RefCell<Relay>,
    shared: &Shared,
    held: &mut Vec<u8>,
) -> Result<Hello, CloseReason> {
    let (clock, limits) = (&shared.clock, &shared.limits);
    let mut sniffer = Sniffer::new(limits.max_pending.min(MAX_PEEK));
    let deadline = relay.borrow().poll_timeout(limits);
    let mut buf = Vec::with_capacity(shared.buffer_size);
    loop {
        let read = client.read(buf);
        let (res, b) = match deadline {
            Some(d) => {
                let left = Duration::from_millis(d.saturating_sub(clock.now()));
                match tokio::time::timeout(left, read).await {
                    Ok(done) => done,
                    Err(_) => {
                        debug!("no ClientHello in time");
                        relay.borrow_mut().handle_timeout(d, limits);
                        client.end_pending();
                        return Err(relay.borrow().close_reason());
                    }
                }
            }
            None => read.await,
        };
        buf = b;
        match res {
            Ok(0) => {
                relay.borrow_mut().on_eof(Side::Client);
                return Ok(Hello::NotTls);
            }
            Ok(n) => {
                relay
                    .borrow_mut()
                    .on_input(Side::Client, clock.now(), n, limits);
                WorkerStats::add(&shared.stats.bytes_in, n as u64);
                held.extend_from_slice(&buf[..n]);
                match sniffer.feed(&buf[..n]) {
                    Hello::NeedMore => {}
                    hello => return Ok(hello),
                }
            }
            Err(e) => {
                debug!("client read failed: {e}");
                relay.borrow_mut().on_error();
                client.reset();
                return Err(CloseReason::Error);
            }
        }
    }
}

/// Connects to an upstream of `ups`, failing over to the next one; the upstream's index and the
/// connected socket, or why the client ends without one.
async fn connect_upstream<L: Listener>(
    ups: &Upstreams,
    proxy: &ProxyConfig,
    relay: &RefCell<Relay>,
    shared: &Shared,
) -> Result<(usize, L::Stream), CloseReason> {
    let clock = &shared.clock;
    let connect_ms = proxy.connect_timeout.as_millis() as u64;
    let mut tried = 0u64;
    loop {
        let mut cursor = shared.cursor.get();
        let picked = ups.pick(&mut cursor, tried);
        shared.cursor.set(cursor);
        let Some(i) = picked else {
            debug!("no upstream reachable");
            relay.borrow_mut().no_upstream();
            return Err(relay.borrow().close_reason());
        };
        tried |= 1 << i;
        relay.borrow_mut().connecting(clock.now() + connect_ms);
        let addr = ups.get(i).addr;
        let socket = match upstream_socket(addr) {
            Ok(s) => s,
            Err(e) => {
                // A local shortage (no descriptor, no memory) fails this client alone: it
                // says nothing of the upstream's health.
                debug!("cannot open a socket for the upstream: {e}");
                ups.released(i);
                return Err(CloseReason::Error);
            }
        };
        match tokio::time::timeout(proxy.connect_timeout, connect(socket, addr)).await {
            Ok(Ok(s)) => match L::adopt(s) {
                Ok(s) => return Ok((i, s)),
                Err(e) => {
                    debug!("cannot use the upstream socket: {e}");
                    ups.released(i);
                    return Err(CloseReason::Error);
                }
            },
            Ok(Err(e)) => debug!(upstream = %addr, "connect failed: {e}"),
            Err(_) => debug!(upstream = %addr, "connect timed out"),
        }
        ups.connect_failed(i);
    }
}

/// Moves bytes both ways until both directions end, an error, or the idle timeout; returns
/// why the pair ended.
async fn exchange<S: Stream>(
    client: &S,
    upstream: &S,
    first: Vec<u8>,
    pair: &Pair<'_>,
    registered: &Registered,
) -> CloseReason {
    let (relay, clock, limits) = (pair.relay, &pair.shared.clock, &pair.shared.limits);
    let entry = registered.entry();
    let pump = |from: Side, first: Vec<u8>| {
        let (src, dst) = match from {
            Side::Client => (client, upstream),
            Side::Upstream => (upstream, client),
        };
        pump(src, dst, from, first, pair)
    };
    // A third party to the two pumps: the deadlines (idle) and nothing else; both pumps end
    // by themselves on EOF or error.
    let watch = async {
        loop {
            entry.set_deadline(relay.borrow().poll_timeout(limits));
            entry.alarm.wait().await;
            let now = clock.now();
            let mut r = relay.borrow_mut();
            if r.poll_timeout(limits).is_some_and(|d| d <= now)
                && matches!(
                    r.handle_timeout(now, limits),
                    Timeout::Idle | Timeout::Routing
                )
            {
                return;
            }
            if r.phase() == Phase::Closed {
                return;
            }
        }
    };
    let pumps = async {
        tokio::join!(pump(Side::Client, first), pump(Side::Upstream, Vec::new()));
    };
    tokio::select! {
        () = pumps => {}
        () = watch => {}
    }
    if relay.borrow().phase() != Phase::Closed {
        relay.borrow_mut().on_error();
    }
    let reason = relay.borrow().close_reason();
    if reason == CloseReason::Error {
        client.reset();
        upstream.reset();
    }
    if reason != CloseReason::Peer {
        // Operations may still be in flight on either socket (abandoned, or the other pump's):
        // end them, so that both descriptors are released now.
        client.end_pending();
        upstream.end_pending();
    }
    reason
}

/// A socket for a connection to `addr`.
fn upstream_socket(addr: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_nodelay(true)?;
    Ok(socket)
}

/// Connects to `addr` (a non-blocking connect, cancelled by dropping: the socket is closed).
async fn connect(
    socket: tokio::net::TcpSocket,
    addr: SocketAddr,
) -> io::Result<std::net::TcpStream> {
    socket.connect(addr).await?.into_std()
}

/// What both pumps of a pair share.
#[derive(Clone, Copy)]
struct Pair<'a> {
    /// The state machine.
    relay: &'a RefCell<Relay>,
    /// The worker.
    shared: &'a Shared,
    /// The upstream's counters.
    upstream: &'a crate::proxy::UpstreamStats,
    /// Wakes the watcher.
    alarm: &'a Alarm,
}

/// Moves bytes from `src` to `dst` until `src`'s EOF (passed on as a FIN) or an error (which
/// ends the relay and makes the other pump stop too).
async fn pump<S: Stream>(src: &S, dst: &S, from: Side, first: Vec<u8>, pair: &Pair<'_>) {
    let Pair {
        relay,
        shared,
        upstream,
        alarm,
    } = *pair;
    let (clock, limits) = (&shared.clock, &shared.limits);
    let to = from.other();
    let mut buf = first;
    let mut pending = buf.len();
    loop {
        if pending > 0 {
            let mut pos = 0;
            while pos < pending {
                let (res, b) = dst.write(buf, pos..pending).await;
                buf = b;
                match res {
                    Ok(n) if n > 0 => {
                        pos += n;
                        relay.borrow_mut().on_sent(to, clock.now(), n, limits);
                        match to {
                            Side::Client => WorkerStats::add(&shared.stats.bytes_out, n as u64),
                            Side::Upstream => WorkerStats::add(&upstream.bytes_sent, n as u64),
                        };
                    }
                    Ok(_) | Err(_) => return fail(relay, src, dst, alarm),
                }
            }
        }
        if relay.borrow().phase() == Phase::Closed {
            return;
        }
        if buf.capacity() < shared.buffer_size {
            buf = Vec::with_capacity(shared.buffer_size);
        }
        let (res, b) = src.read(buf).await;
        buf = b;
        match res {
            Ok(0) => {
                let mut r = relay.borrow_mut();
                r.on_eof(from);
                if r.wants_fin(to) {
                    if dst.shutdown_write().is_err() {
                        drop(r);
                        return fail(relay, src, dst, alarm);
                    }
                    r.on_fin(to);
                }
                if r.phase() == Phase::Closed {
                    drop(r);
                    // Both directions are done: whatever the other pump waits on is over.
                    src.end_pending();
                    dst.end_pending();
                }
                return;
            }
            Ok(n) => {
                pending = n;
                relay.borrow_mut().on_input(from, clock.now(), n, limits);
                match from {
                    Side::Client => WorkerStats::add(&shared.stats.bytes_in, n as u64),
                    Side::Upstream => WorkerStats::add(&upstream.bytes_received, n as u64),
                };
            }
            Err(e) => {
                debug!("{from:?} read failed: {e}");
                return fail(relay, src, dst, alarm);
            }
        }
    }
}

/// An error on either socket ends the relay: both sockets are reset and shut down so that
/// the other direction's operations end too, and the watcher is woken to stop the pumps.
fn fail<S: Stream>(relay: &RefCell<Relay>, src: &S, dst: &S, alarm: &Alarm) {
    relay.borrow_mut().on_error();
    src.reset();
    dst.reset();
    src.end_pending();
    dst.end_pending();
    alarm.ring();
}
