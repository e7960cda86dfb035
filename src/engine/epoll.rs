//! The `epoll` engine: a tokio current-thread runtime per worker, readiness-based. It is the
//! baseline the io_uring engines are judged against, so it takes the cheapest path tokio
//! offers: sockets wrapped in [`AsyncFd`] and read with plain `read(2)`; a short read means
//! the receive queue is empty, so readiness is cleared without the extra `EAGAIN` read that
//! `TcpStream::read` would cost; writes are tried before waiting for writability.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::mpsc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::{debug, warn, Instrument};

use super::{accept_pause, report_ready, EngineKind, WorkerCtx};
use crate::connection::{Conn, Registry, WorkerStats};
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

/// The accept loop, then the drain.
async fn serve(ctx: WorkerCtx) -> io::Result<()> {
    let WorkerCtx {
        listener,
        config,
        mut drain,
        stats,
        ..
    } = ctx;
    listener.set_nonblocking(true)?;
    // SAFETY: the AsyncFd owns the std listener, whose fd stays open and unchanged until
    // the AsyncFd drops it.
    let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
        .map_err(io::Error::from)?;
    let registry: Rc<Registry<AsyncFd<TcpStream>>> = Rc::default();
    let mut errors_in_a_row = 0u32;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.wait_for(|d| *d) => break,
            r = accept(&listener) => r,
        };
        let (stream, peer) = match accepted {
            Ok(s) => {
                errors_in_a_row = 0;
                s
            }
            Err(e) => {
                WorkerStats::inc(&stats.accept_errors);
                if let Some(pause) = accept_pause(&e, errors_in_a_row) {
                    errors_in_a_row += 1;
                    warn!("accept failed: {e}; pausing accepts for {pause:?}");
                    tokio::time::sleep(pause).await;
                } else {
                    debug!("accept failed: {e}");
                }
                continue;
            }
        };
        WorkerStats::inc(&stats.accepted);
        let _ = stream.set_nodelay(true);
        // SAFETY: the AsyncFd owns the stream, whose fd stays open and unchanged until the
        // AsyncFd drops it.
        let stream = match unsafe { AsyncFd::register(stream) }.map_err(io::Error::from) {
            Ok(s) => Rc::new(s),
            Err(e) => {
                warn!("cannot register connection: {e}");
                WorkerStats::inc(&stats.closed);
                continue;
            }
        };
        let guard = registry.insert(stream.clone());
        let conn = Conn::new(&config.protocol);
        let buffer_size = config.buffer_size;
        let stats = stats.clone();
        tokio::task::spawn_local(
            async move {
                if let Err(e) = connection(&stream, conn, buffer_size).await {
                    debug!("connection error: {e}");
                }
                drop(guard);
                WorkerStats::inc(&stats.closed);
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    // Closing the listener makes the kernel stop queueing connections to this worker.
    drop(listener);
    // Idle connections see EOF; busy ones finish the request they are in first.
    registry.for_each(|s| {
        let _ = s.get_ref().shutdown(Shutdown::Read);
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

/// Serves one connection until the peer or the protocol closes it.
async fn connection(
    stream: &AsyncFd<TcpStream>,
    mut conn: Conn,
    buffer_size: usize,
) -> io::Result<()> {
    let mut buf = vec![0u8; buffer_size];
    loop {
        let n = read(stream, &mut buf).await?;
        if n == 0 {
            conn.on_eof();
            return write_all(stream, &conn.out).await;
        }
        if conn.is_echo() {
            write_all(stream, &buf[..n]).await?;
            continue;
        }
        let close = conn.on_bytes(&buf[..n]);
        if !conn.out.is_empty() {
            write_all(stream, &conn.out).await?;
            conn.out.clear();
        }
        if close {
            return Ok(());
        }
    }
}

/// Reads once; returns 0 at EOF.
async fn read(stream: &AsyncFd<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
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
async fn write_all(stream: &AsyncFd<TcpStream>, mut data: &[u8]) -> io::Result<()> {
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
