//! What a tokio-based engine provides: how a socket accepts ([`Listener`]), reads and
//! writes ([`Stream`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;

use crate::engine::control::Lifecycle;

/// A connected socket, with owned buffers handed back by each operation (what completion
/// based I/O needs, and what readiness based I/O can do as well).
pub(crate) trait Stream: 'static {
    /// Reads once into `buf` (its capacity is the most read); the bytes are `buf[..n]`;
    /// 0 is EOF.
    fn read(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Writes some of `buf[range]`; returns how much the kernel took.
    fn write(
        &self,
        buf: Vec<u8>,
        range: Range<usize>,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Sends the FIN.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Makes operations still in flight on the socket complete (a dropped tokio-uring
    /// operation stays in the kernel, holding the descriptor, until it does).
    fn end_pending(&self);

    /// Makes the close a reset (`SO_LINGER` 0): what is unsent is dropped and the peer
    /// learns the connection was cut.
    fn reset(&self) {
        // SAFETY: the socket object keeps the descriptor open for the duration of the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.raw_fd()) };
        let _ = socket2::SockRef::from(&fd).set_linger(Some(std::time::Duration::ZERO));
    }

    /// The socket's descriptor.
    fn raw_fd(&self) -> std::os::fd::RawFd;

    /// The address the peer connected to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A worker's listening socket.
pub(crate) trait Listener {
    /// What it accepts.
    type Stream: Stream;

    /// Accepts one connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;

    /// Takes over a connected socket (proxy mode's upstream connection).
    fn adopt(stream: std::net::TcpStream) -> io::Result<Self::Stream>;

    /// Stops accepting as `how` says, with an accept in flight. Resolves to true when that
    /// accept will complete because of it (and must be awaited: it may bring one more
    /// connection), false when it can simply be dropped.
    fn stop(&self, how: Lifecycle) -> impl Future<Output = bool>;
}
