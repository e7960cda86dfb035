//! The opening of a proxied connection on the tokio engines, before its upstream is
//! chosen: with SNI routes, the client's ClientHello is read and held; with TLS
//! terminated here, the whole handshake is done with the client. Both within the relay's
//! routing deadline.

use std::cell::RefCell;
use std::time::Duration;

use tracing::debug;

use super::super::shared::Shared;
use super::super::stream::Stream;
use crate::connection::{CloseReason, WorkerStats};
use crate::proxy::sni::{Hello, Sniffer, MAX_PEEK};
use crate::proxy::terminate::{ClientInput, Terminated};
use crate::proxy::{Relay, Side};

/// Reads the client's first bytes into `held` until they say where it goes; what they
/// said, or why the client ends first.
pub(super) async fn sniff<S: Stream>(
    client: &S,
    relay: &RefCell<Relay>,
    shared: &Shared,
    held: &mut Vec<u8>,
) -> Result<Hello, CloseReason> {
    let mut sniffer = Sniffer::new(shared.limits.max_pending.min(MAX_PEEK));
    let mut buf = Vec::with_capacity(shared.buffer_size);
    loop {
        let n;
        (n, buf) = read_in_time(client, relay, shared, buf).await?;
        if n == 0 {
            relay.borrow_mut().on_eof(Side::Client);
            return Ok(Hello::NotTls);
        }
        relay
            .borrow_mut()
            .on_input(Side::Client, shared.clock.now(), n, &shared.limits);
        held.extend_from_slice(&buf[..n]);
        match sniffer.feed(&buf[..n]) {
            Hello::NeedMore => {}
            hello => return Ok(hello),
        }
    }
}

/// Does the TLS handshake with the client; the plaintext that came with its end is
/// appended to `held`. What the client asked for, or why it ends first.
pub(super) async fn handshake<S: Stream>(
    client: &S,
    tls: &RefCell<Terminated>,
    relay: &RefCell<Relay>,
    shared: &Shared,
    held: &mut Vec<u8>,
) -> Result<Hello, CloseReason> {
    let (clock, limits) = (&shared.clock, &shared.limits);
    let mut buf = Vec::with_capacity(shared.buffer_size);
    loop {
        let n;
        (n, buf) = read_in_time(client, relay, shared, buf)
            .await
            .inspect_err(|&r| {
                if r == CloseReason::HeaderTimeout {
                    tls.borrow_mut().timed_out();
                }
            })?;
        if n == 0 {
            tls.borrow_mut().on_eof();
            relay.borrow_mut().abort(CloseReason::Protocol);
            return Err(CloseReason::Protocol);
        }
        let got = tls.borrow_mut().from_client(&buf[..n]);
        let len = got.plain.len();
        relay
            .borrow_mut()
            .on_input_as(Side::Client, clock.now(), n, len, limits);
        held.extend_from_slice(&got.plain);
        relay
            .borrow_mut()
            .on_header(clock.now(), Side::Upstream, got.records.len(), limits);
        let sent = write_all(client, got.records, relay, shared)
            .await
            .inspect_err(|&r| {
                if r == CloseReason::HeaderTimeout {
                    tls.borrow_mut().timed_out();
                }
            });
        match got.end {
            ClientInput::Failed => {
                debug!("TLS handshake failed");
                relay.borrow_mut().abort(CloseReason::Protocol);
                return Err(CloseReason::Protocol);
            }
            ClientInput::Closed => relay.borrow_mut().on_eof(Side::Client),
            ClientInput::Open => {}
        }
        sent?;
        if tls.borrow().handshake_done() {
            return Ok(tls.borrow().hello());
        }
    }
}

/// Writes all of `data` to the client (the server's own records) by the relay's deadline:
/// a client that does not read its handshake ends there too.
async fn write_all<S: Stream>(
    client: &S,
    mut data: Vec<u8>,
    relay: &RefCell<Relay>,
    shared: &Shared,
) -> Result<(), CloseReason> {
    let mut pos = 0;
    while pos < data.len() {
        let end = data.len();
        let (res, b) = in_time(client, relay, shared, client.write(data, pos..end)).await?;
        data = b;
        match res {
            Ok(n) if n > 0 => {
                pos += n;
                relay
                    .borrow_mut()
                    .on_sent(Side::Client, shared.clock.now(), n, &shared.limits);
                WorkerStats::add(&shared.stats.bytes_out, n as u64);
            }
            Ok(_) | Err(_) => {
                relay.borrow_mut().on_error();
                client.reset();
                return Err(CloseReason::Error);
            }
        }
    }
    Ok(())
}

/// Reads once from the client into `buf` by the relay's deadline: how much (0: its FIN)
/// and the buffer, or why the client ends.
async fn read_in_time<S: Stream>(
    client: &S,
    relay: &RefCell<Relay>,
    shared: &Shared,
    buf: Vec<u8>,
) -> Result<(usize, Vec<u8>), CloseReason> {
    let (res, buf) = in_time(client, relay, shared, client.read(buf)).await?;
    match res {
        Ok(n) => {
            WorkerStats::add(&shared.stats.bytes_in, n as u64);
            Ok((n, buf))
        }
        Err(e) => {
            debug!("client read failed: {e}");
            relay.borrow_mut().on_error();
            client.reset();
            Err(CloseReason::Error)
        }
    }
}

/// `op`, an operation on the client, by the relay's deadline; past it, the relay is told,
/// the client's operations end, and why the client ends is returned.
async fn in_time<S: Stream, T>(
    client: &S,
    relay: &RefCell<Relay>,
    shared: &Shared,
    op: impl std::future::Future<Output = T>,
) -> Result<T, CloseReason> {
    let (clock, limits) = (&shared.clock, &shared.limits);
    let Some(d) = relay.borrow().poll_timeout(limits) else {
        return Ok(op.await);
    };
    let left = Duration::from_millis(d.saturating_sub(clock.now()));
    match tokio::time::timeout(left, op).await {
        Ok(done) => Ok(done),
        Err(_) => {
            debug!("the client's opening took too long");
            relay.borrow_mut().handle_timeout(d, limits);
            client.end_pending();
            Err(relay.borrow().close_reason())
        }
    }
}
