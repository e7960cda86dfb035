//! Proxy mode on the tokio engines: a task per proxied connection that connects to an
//! upstream (failing over to the next one), then pumps each direction with its own buffer,
//! read then write, so a direction whose receiver is slow stops reading its sender
//! (backpressure by construction, one buffer's worth per direction). A FIN read on one side
//! is passed to the other once everything before it is sent; an error on either side ends
//! both. The [`Relay`] decides; this moves bytes and schedules wake-ups.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;

use tracing::debug;

use super::registry::{Alarm, Registered};
use super::shared::Shared;
use super::stream::{Listener, Stream};
use crate::access_log::{Ended, UpstreamRecord};
use crate::connection::{CloseReason, WorkerStats};
use crate::proxy::relay::{Phase, Timeout};
use crate::proxy::sni::Choice;
use crate::proxy::terminate::{ClientInput, Terminated};
use crate::proxy::{header, ProxyConfig, Relay, Side, Upstreams};

mod opening;

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
    let tls = proxy.tls.as_ref().map(|t| RefCell::new(Terminated::new(t)));
    let ended = serve::<L>(client, peer, registered, shared, proxy, tls.as_ref()).await;
    if let Some(tls) = &tls {
        tls.borrow().count(&shared.stats);
    }
    ended
}

/// [`relay`] for the proxy `proxy`, the client speaking TLS to this server if `tls`.
async fn serve<L: Listener>(
    client: &L::Stream,
    peer: SocketAddr,
    registered: &Registered,
    shared: &Shared,
    proxy: &ProxyConfig,
    tls: Option<&RefCell<Terminated>>,
) -> Ended {
    let (clock, limits) = (&shared.clock, &shared.limits);
    let connect_ms = proxy.connect_timeout.as_millis() as u64;
    let relay = RefCell::new(match proxy.routes_first() {
        true => Relay::routing(clock.now(), proxy.routing_ms(limits)),
        false => Relay::new(clock.now(), clock.now() + connect_ms),
    });
    // The client's opening (its ClientHello for SNI routes, its whole handshake when TLS
    // ends here) comes before the upstream is chosen; the bytes it brought for the
    // upstream are held and go first, as they came.
    let mut held = Vec::new();
    let hello = match (tls, &proxy.sni) {
        (Some(tls), _) => opening::handshake(client, tls, &relay, shared, &mut held)
            .await
            .map(Some),
        (None, Some(_)) => opening::sniff(client, &relay, shared, &mut held)
            .await
            .map(Some),
        (None, None) => Ok(None),
    };
    let choice = hello.map(|hello| match (hello, &proxy.sni) {
        (Some(hello), Some(routes)) => routes.choose(&hello, &proxy.upstreams),
        _ => Choice::Default,
    });
    let routed = match choice {
        Ok(Choice::Route(ups)) => Ok(&**ups),
        Ok(Choice::Default) => Ok(&*proxy.upstreams),
        Ok(Choice::Close) => {
            relay.borrow_mut().abort(CloseReason::Protocol);
            Err(CloseReason::Protocol)
        }
        Err(reason) => Err(reason),
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
            let tls_version = tls.and_then(|t| t.borrow().version_name());
            first = header::encode(version, peer, local, tls_version);
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
        tls,
        outbox: &RefCell::new(Vec::new()),
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
    /// The client's TLS, when it ends here.
    tls: Option<&'a RefCell<Terminated>>,
    /// Records for the client that reading it produced (a key update's answer), written
    /// by the other pump ahead of its next ones.
    outbox: &'a RefCell<Vec<u8>>,
}

/// Moves bytes from `src` to `dst` until `src`'s EOF (passed on as a FIN) or an error (which
/// ends the relay and makes the other pump stop too).
async fn pump<S: Stream>(src: &S, dst: &S, from: Side, first: Vec<u8>, pair: &Pair<'_>) {
    let Pair {
        relay,
        shared,
        upstream,
        alarm,
        tls,
        ..
    } = *pair;
    let (clock, limits) = (&shared.clock, &shared.limits);
    let to = from.other();
    let mut buf = first;
    let mut pending = buf.len();
    // With TLS the bytes written are not the bytes read: the read buffer waits here.
    let mut spare: Option<Vec<u8>> = None;
    // The source's input is over (its FIN, or its close_notify): a FIN follows what is
    // written before it. It may be over already: a close_notify that came with the end
    // of the client's handshake.
    let mut over = relay.borrow().input_over(from);
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
        if over {
            return input_over(src, dst, from, pair);
        }
        if let Some(s) = spare.take() {
            buf = s;
        }
        if buf.capacity() < shared.buffer_size {
            buf = Vec::with_capacity(shared.buffer_size);
        }
        let (res, b) = src.read(buf).await;
        buf = b;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                debug!("{from:?} read failed: {e}");
                return fail(relay, src, dst, alarm);
            }
        };
        match from {
            Side::Client => WorkerStats::add(&shared.stats.bytes_in, n as u64),
            Side::Upstream => WorkerStats::add(&upstream.bytes_received, n as u64),
        };
        let Some(tls) = tls else {
            pending = n;
            over = n == 0;
            if n > 0 {
                relay.borrow_mut().on_input(from, clock.now(), n, limits);
            }
            continue;
        };
        let (out, end) = through_tls(&mut tls.borrow_mut(), from, &buf[..n], pair);
        if end == ClientInput::Failed {
            debug!("the client broke TLS");
            return fail(relay, src, dst, alarm);
        }
        over = end == ClientInput::Closed || n == 0;
        pending = out.len();
        spare = Some(std::mem::replace(&mut buf, out));
    }
}

/// `data`, read from `from` (its FIN when empty), through the client's TLS: what to write
/// to the other side, and how the client's input goes on. The client's reads may make
/// records for the client (a key update's answer): they wait in the outbox for the
/// upstream's pump, which writes them ahead of its own.
fn through_tls(
    tls: &mut Terminated,
    from: Side,
    data: &[u8],
    pair: &Pair<'_>,
) -> (Vec<u8>, ClientInput) {
    let (now, limits) = (pair.shared.clock.now(), &pair.shared.limits);
    let mut relay = pair.relay.borrow_mut();
    match from {
        Side::Client if data.is_empty() => {
            tls.on_eof();
            (Vec::new(), ClientInput::Closed)
        }
        Side::Client => {
            let got = tls.from_client(data);
            relay.on_input_as(from, now, data.len(), got.plain.len(), limits);
            relay.on_header(now, Side::Upstream, got.records.len(), limits);
            pair.outbox.borrow_mut().extend_from_slice(&got.records);
            (got.plain, got.end)
        }
        Side::Upstream => {
            let mut records = pair.outbox.take();
            let queued = records.len();
            match data.is_empty() {
                true => tls.close(&mut records),
                false => tls.to_client(data, &mut records),
            }
            relay.on_input_as(from, now, data.len(), records.len() - queued, limits);
            (records, ClientInput::Open)
        }
    }
}

/// `from`'s input is over and everything before it is written: a FIN goes to the other
/// side once the relay says so.
fn input_over<S: Stream>(src: &S, dst: &S, from: Side, pair: &Pair<'_>) {
    let to = from.other();
    let mut r = pair.relay.borrow_mut();
    r.on_eof(from);
    if r.wants_fin(to) {
        if dst.shutdown_write().is_err() {
            drop(r);
            return fail(pair.relay, src, dst, pair.alarm);
        }
        r.on_fin(to);
    }
    if r.phase() == Phase::Closed {
        drop(r);
        // Both directions are done: whatever the other pump waits on is over.
        src.end_pending();
        dst.end_pending();
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
