//! The `epoll` engine: a tokio current-thread runtime per worker, readiness-based. It is the
//! baseline the io_uring engines are judged against, so it takes the cheapest path tokio
//! offers: sockets wrapped in [`AsyncFd`] and read with plain `read(2)`; a short read means
//! the receive queue is empty, so readiness is cleared without the extra `EAGAIN` read that
//! `TcpStream::read` would cost; writes are tried before waiting for writability. The accept
//! loop and the connection task are shared with `tokio-uring` (`super::tokio_tasks`).
//!
//! Readiness that is already set does not make a task yield, so a peer that keeps its socket
//! full would keep its connection's task running and starve the worker's other connections;
//! every read spends tokio's cooperative budget, which makes such a task yield in turn.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::mpsc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::tokio_tasks::{self, Listener, Stream};
use super::{report_ready, EngineKind, WorkerCtx};
use crate::engine::control::Lifecycle;
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
    let (listener, env) = ctx.into_parts();
    local.block_on(&rt, async move {
        listener.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the std listener, whose fd stays open and unchanged until
        // the AsyncFd drops it.
        let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map_err(io::Error::from)?;
        tokio_tasks::serve(EpollListener(listener), env).await
    })
}

/// A listener registered with the reactor.
struct EpollListener(AsyncFd<TcpListener>);

impl Listener for EpollListener {
    type Stream = EpollStream;

    async fn accept(&self) -> io::Result<(EpollStream, SocketAddr)> {
        let (stream, peer) = loop {
            let mut guard = self.0.readable().await?;
            if let Ok(r) = guard.try_io(|l| accept4(l.get_ref())) {
                break r?;
            }
        };
        // SAFETY: the AsyncFd owns the stream, whose fd stays open and unchanged until the
        // AsyncFd drops it.
        let sock = unsafe { AsyncFd::register(stream) }.map_err(io::Error::from)?;
        Ok((EpollStream(sock), peer))
    }

    fn adopt(stream: TcpStream) -> io::Result<EpollStream> {
        stream.set_nonblocking(true)?;
        // SAFETY: as in `accept`.
        let sock = unsafe { AsyncFd::register(stream) }.map_err(io::Error::from)?;
        Ok(EpollStream(sock))
    }

    async fn stop(&self, _how: Lifecycle) -> bool {
        // Nothing is in flight: dropping the accept and then our descriptor is enough (a
        // successor keeps the socket open with its own).
        false
    }
}

/// Accepts one connection, non-blocking and close-on-exec in the same system call.
fn accept4(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
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

/// A connection registered with the reactor.
struct EpollStream(AsyncFd<TcpStream>);

impl Stream for EpollStream {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        tokio::task::consume_budget().await;
        // Zeroed once; reads then reuse the initialised bytes.
        if buf.len() < buf.capacity() {
            buf.resize(buf.capacity(), 0);
        }
        loop {
            let mut guard = match self.0.readable().await {
                Ok(g) => g,
                Err(e) => return (Err(e), buf),
            };
            match guard.try_io(|s| s.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < buf.len() {
                        // A short read drained the receive queue: skip the read that would
                        // only say EAGAIN. New data raises a new edge; EOF readiness is never
                        // cleared.
                        guard.clear_ready();
                    }
                    return (Ok(n), buf);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return (Err(e), buf),
                Err(_would_block) => {}
            }
        }
    }

    async fn write(&self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<usize>, Vec<u8>) {
        // Try first: the socket usually has room, and waiting costs an epoll round trip.
        match self.0.get_ref().write(&buf[range.clone()]) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            r => return (r, buf),
        }
        loop {
            let mut guard = match self.0.writable().await {
                Ok(g) => g,
                Err(e) => return (Err(e), buf),
            };
            match guard.try_io(|s| s.get_ref().write(&buf[range.clone()])) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(r) => return (r, buf),
                Err(_would_block) => {}
            }
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        crate::engine::socket::shutdown_write(self.0.get_ref())
    }

    fn end_pending(&self) {
        // Readiness futures hold nothing in the kernel, but a pump waiting to read from this
        // socket must see its end.
        crate::engine::socket::shutdown_both(self.0.get_ref());
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.get_ref().as_raw_fd()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
}
