//! The `tokio-uring` engine: a tokio-uring runtime per worker. Accept, recv and send are
//! io_uring operations that take ownership of their buffer and hand it back with the
//! completion, so each connection reuses one receive buffer and one output buffer for its
//! whole life; echo sends the received buffer itself. The accept loop and the connection
//! task are shared with `epoll` (`super::tokio_tasks`).
//!
//! A dropped tokio-uring future leaves its operation in the kernel, with its buffer and a
//! reference on the socket, until it completes. So nothing here is cancelled by dropping
//! alone: a connection that abandons an operation shuts its socket down (the operation then
//! completes at once); a drain shuts the listener down, which fails the accept in flight;
//! and a hand-over, which must leave the listener working for a successor, cancels that
//! accept on the worker's own ring with `IORING_REGISTER_SYNC_CANCEL`.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};
use tracing::warn;

use super::tokio_tasks::{self, Listener, Stream};
use super::{report_ready, EngineKind, WorkerCtx};
use crate::engine::control::Lifecycle;
use crate::error::Error;

/// Submission queue entries per worker ring.
const SQ_ENTRIES: u32 = 1024;

/// Runs one worker on a tokio-uring runtime.
pub fn run(ctx: WorkerCtx, ready: mpsc::Sender<Result<(), Error>>) -> io::Result<()> {
    // A completion queue four times the submission queue absorbs bursts from many
    // connections; COOP_TASKRUN avoids interrupting the worker for task work it will run at
    // its next wait anyway (the ring is only used from this thread).
    let (built, ring) = {
        let _setup = crate::engine::availability::ring_setup_lock();
        let before = crate::engine::availability::io_uring_fds();
        let built = tokio_uring::Runtime::new(
            tokio_uring::builder().entries(SQ_ENTRIES).uring_builder(
                tokio_uring::uring_builder()
                    .setup_cqsize(SQ_ENTRIES * 4)
                    .setup_coop_taskrun(),
            ),
        );
        let mine: Vec<RawFd> = crate::engine::availability::io_uring_fds()
            .difference(&before)
            .copied()
            .collect();
        (built, (mine.len() == 1).then(|| mine[0]))
    };
    if built.is_ok() && ring.is_none() {
        warn!("cannot tell this worker's ring descriptor; an upgrade will cancel its accept only at exit");
    }
    let Some(rt) = report_ready(&ready, ctx.id, EngineKind::TokioUring, built) else {
        return Ok(());
    };
    let (listener, env) = ctx.into_parts();
    rt.block_on(async move {
        let listener = UringListener {
            inner: TcpListener::from_std(listener),
            ring,
        };
        tokio_tasks::serve(listener, env).await
    })
}

/// A listener accepting through the worker's ring.
struct UringListener {
    /// The socket.
    inner: TcpListener,
    /// The runtime's ring descriptor, to cancel an accept in flight on a hand-over.
    ring: Option<RawFd>,
}

impl Listener for UringListener {
    type Stream = UringStream;

    async fn accept(&self) -> io::Result<(UringStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        Ok((UringStream(stream), peer))
    }

    fn adopt(stream: std::net::TcpStream) -> io::Result<UringStream> {
        Ok(UringStream(TcpStream::from_std(stream)))
    }

    async fn stop(&self, how: Lifecycle) -> bool {
        let fd = self.inner.as_raw_fd();
        if !how.keeps_listeners() {
            // Fails the accept in flight (EINVAL) and stops the kernel queueing connections.
            socket_shutdown(fd);
            return true;
        }
        let Some(ring) = self.ring else {
            return false;
        };
        // The accept may not have reached the kernel yet (tokio-uring submits when the
        // runtime next waits): cancel until the kernel has found it.
        for _ in 0..1000 {
            match cancel_ops_on(ring, fd) {
                Ok(true) => return true,
                Ok(false) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                Err(e) => {
                    warn!("cannot cancel the accept on the hand-over: {e}; it ends at exit");
                    return false;
                }
            }
        }
        warn!("the accept to cancel on the hand-over was never found; it ends at exit");
        false
    }
}

/// `shutdown(SHUT_RDWR)` on a descriptor tokio-uring owns.
fn socket_shutdown(fd: RawFd) {
    // SAFETY: the caller's socket object keeps `fd` open for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    crate::engine::socket::shutdown_both(&fd);
}

/// `struct io_uring_sync_cancel_reg` (linux/io_uring.h).
#[repr(C)]
struct SyncCancelReg {
    addr: u64,
    fd: i32,
    flags: u32,
    timeout: [i64; 2],
    opcode: u8,
    pad: [u8; 7],
    pad2: [u64; 3],
}

/// `IORING_REGISTER_SYNC_CANCEL` (Linux 6.0).
const IORING_REGISTER_SYNC_CANCEL: libc::c_uint = 24;
/// Cancel every matching request, not just the first.
const IORING_ASYNC_CANCEL_ALL: u32 = 1 << 0;
/// Match requests by the descriptor they operate on.
const IORING_ASYNC_CANCEL_FD: u32 = 1 << 1;

/// Cancels every operation on `fd` in the ring `ring`, synchronously: once this returns,
/// each has completed (with a connection it had already taken, or `ECANCELED`). False when
/// there was none.
fn cancel_ops_on(ring: RawFd, fd: RawFd) -> io::Result<bool> {
    let reg = SyncCancelReg {
        addr: 0,
        fd,
        flags: IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL,
        // No timeout.
        timeout: [-1, -1],
        opcode: 0,
        pad: [0; 7],
        pad2: [0; 3],
    };
    // SAFETY: io_uring_register(2) with a valid pointer to a correctly laid out
    // `io_uring_sync_cancel_reg` that outlives the call; `ring` is this thread's runtime
    // ring, open while the runtime lives.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring,
            IORING_REGISTER_SYNC_CANCEL,
            &reg as *const SyncCancelReg,
            1,
        )
    };
    // With IORING_ASYNC_CANCEL_ALL the kernel answers how many it cancelled (0: none).
    match r {
        r if r >= 0 => Ok(r > 0),
        _ => match io::Error::last_os_error() {
            // Nothing was in flight.
            e if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            e => Err(e),
        },
    }
}

/// A connection on the worker's ring.
struct UringStream(TcpStream);

impl Stream for UringStream {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        // tokio-uring reads into the spare capacity.
        buf.clear();
        self.0.read(buf).await
    }

    async fn write(&self, buf: Vec<u8>, range: Range<usize>) -> (io::Result<usize>, Vec<u8>) {
        let (res, slice) = self.0.write(buf.slice(range)).submit().await;
        (res, slice.into_inner())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }

    fn end_pending(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }

    fn raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        // SAFETY: the stream keeps the descriptor open for the duration of the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0.as_raw_fd()) };
        socket2::SockRef::from(&fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }
}
