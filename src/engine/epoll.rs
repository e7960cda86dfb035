//! The `epoll` engine: a tokio current-thread runtime per worker, readiness-based. It is the
//! baseline the io_uring engines are judged against, so it takes the cheapest path tokio
//! offers: sockets wrapped in [`AsyncFd`] and read with plain `read(2)`; a short read means
//! the receive queue is empty, so readiness is cleared without the extra `EAGAIN` read that
//! `TcpStream::read` would cost; writes are tried before waiting for writability.
//!
//! Output is written in full before the next read, so a connection never holds more than one
//! read's worth of output (`--max-pending-output` is met by construction).
//!
//! Readiness that is already set does not make a task yield, so a peer that keeps its socket
//! full would keep its connection's task running and starve the worker's other connections;
//! every read spends tokio's cooperative budget, which makes such a task yield in turn.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::mpsc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::{debug, warn, Instrument};

use super::{reject, report_ready, AcceptBackoff, EngineKind, WorkerCtx};
use crate::connection::{
    Clock, CloseReason, Conn, Registry, Timeouts, Times, Tracked, WorkerStats,
};
use crate::error::Error;

/// Runs one worker on a tokio current-thread runtime.
pub fn run(ctx: WorkerCtx, ready: mpsc::Sender<Result<(), Error>>) -> io::Result<()> {
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Some(rt) = report_ready(&ready, ctx.id, EngineKind::Epoll, built) else {
        return Ok(());
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(ctx))
}

type Sock = AsyncFd<TcpStream>;

/// The accept loop, then the drain.
async fn serve(ctx: WorkerCtx) -> io::Result<()> {
    let WorkerCtx {
        listener,
        config,
        mut drain,
        stats,
        limit,
        ..
    } = ctx;
    listener.set_nonblocking(true)?;
    // SAFETY: the AsyncFd owns the std listener, whose fd stays open and unchanged until
    // the AsyncFd drops it.
    let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let registry: Rc<Registry<Sock>> = Rc::default();
    let clock = Rc::new(Clock::default());
    let timeouts = Timeouts::new(
        config.idle_timeout,
        config.header_timeout,
        config.protocol.kind == crate::ProtocolKind::Http,
    );
    if let Some(every) = timeouts.sweep_every() {
        let (registry, clock) = (registry.clone(), clock.clone());
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let now = clock.advance();
                registry.sweep(now, &timeouts, |c, why| {
                    super::end_timed_out(c.io.get_ref().as_raw_fd(), why)
                });
            }
        });
    }
    let http = config.protocol.kind == crate::ProtocolKind::Http;
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = crate::shutdown::stopping(&mut drain) => break,
            r = accept(&listener) => r,
        };
        let (stream, peer) = match accepted {
            Ok(s) => {
                backoff.on_success();
                s
            }
            Err(e) => {
                if let Some(pause) = backoff.on_error(&e, &stats) {
                    tokio::time::sleep(pause).await;
                }
                continue;
            }
        };
        if !limit.try_admit() {
            reject(stream.as_raw_fd(), http, &stats);
            continue;
        }
        WorkerStats::inc(&stats.accepted);
        // SAFETY: the AsyncFd owns the stream, whose fd stays open and unchanged until the
        // AsyncFd drops it.
        let sock = match unsafe { AsyncFd::register(stream) }.map_err(io::Error::from) {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot register connection: {e}");
                stats.close(CloseReason::Error);
                limit.release();
                continue;
            }
        };
        let tracked = Rc::new(Tracked {
            io: sock,
            times: Times::new(clock.now()),
        });
        let guard = registry.insert(tracked.clone());
        let conn = Conn::new(&config.protocol);
        let buffer_size = config.buffer_size;
        let (stats, limit, clock) = (stats.clone(), limit.clone(), clock.clone());
        tokio::task::spawn_local(
            async move {
                let reason = match connection(&tracked, conn, buffer_size, &stats, &clock).await {
                    Ok(reason) => tracked.times.reason.get().unwrap_or(reason),
                    Err(e) => {
                        debug!("connection error: {e}");
                        tracked.times.reason.get().unwrap_or(CloseReason::Error)
                    }
                };
                drop(guard);
                drop(tracked);
                stats.close(reason);
                limit.release();
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    // Closing our descriptor makes the kernel stop queueing connections to this worker, unless
    // a successor holds the same socket and accepts on it.
    drop(listener);
    // Idle connections see EOF; busy ones finish the request they are in first.
    registry.for_each(|c| {
        c.times.reason.set(Some(CloseReason::Drain));
        let _ = c.io.get_ref().shutdown(Shutdown::Read);
    });
    registry.wait_empty().await;
    Ok(())
}

/// Accepts one connection, non-blocking and close-on-exec in the same system call.
async fn accept(listener: &AsyncFd<TcpListener>) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    loop {
        let mut guard = listener.readable().await?;
        match guard.try_io(|l| accept4(l.get_ref())) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

fn accept4(listener: &TcpListener) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    let mut storage: libc::sockaddr_storage =
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid for writes and describe the buffer's true size;
    // the listener fd is open for the duration of the call.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new fd that nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    Ok((stream, peer))
}

/// Serves one connection until the peer or the protocol closes it; returns why it closed.
async fn connection(
    c: &Tracked<Sock>,
    mut conn: Conn,
    buffer_size: usize,
    stats: &WorkerStats,
    clock: &Clock,
) -> io::Result<CloseReason> {
    let stream = &c.io;
    let mut buf = vec![0u8; buffer_size];
    loop {
        tokio::task::consume_budget().await;
        let n = read(stream, &mut buf).await?;
        if n == 0 {
            conn.on_eof();
            write_all(stream, &conn.out, stats).await?;
            return Ok(CloseReason::Peer);
        }
        WorkerStats::add(&stats.bytes_in, n as u64);
        if conn.is_echo() {
            c.times.touch(clock.now(), false);
            write_all(stream, &buf[..n], stats).await?;
            continue;
        }
        let fed = conn.on_bytes(&buf[..n]);
        c.times.touch(clock.now(), conn.awaiting_header());
        WorkerStats::add(&stats.requests, fed.answered);
        if !conn.out.is_empty() {
            write_all(stream, &conn.out, stats).await?;
            conn.out.clear();
        }
        if fed.close {
            return Ok(CloseReason::Protocol);
        }
    }
}

/// Reads once; returns 0 at EOF.
async fn read(stream: &Sock, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = stream.readable().await?;
        match guard.try_io(|s| s.get_ref().read(buf)) {
            Ok(Ok(n)) => {
                if n > 0 && n < buf.len() {
                    // A short read drained the receive queue: skip the read that would only
                    // say EAGAIN. New data raises a new edge; EOF readiness is never cleared.
                    guard.clear_ready();
                }
                return Ok(n);
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// Writes all of `data`, trying before waiting for writability.
async fn write_all(stream: &Sock, mut data: &[u8], stats: &WorkerStats) -> io::Result<()> {
    WorkerStats::add(&stats.bytes_out, data.len() as u64);
    while !data.is_empty() {
        match stream.get_ref().write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Wait for writability; `try_io` clears it only if the write still blocks.
                loop {
                    let mut guard = stream.writable().await?;
                    match guard.try_io(|s| s.get_ref().write(data)) {
                        Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(Ok(n)) => {
                            data = &data[n..];
                            break;
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => break,
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => continue,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
