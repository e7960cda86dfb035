//! Socket calls every layer may need outside an engine's own I/O path: the half-close that
//! sends a FIN, and the full shutdown that completes whatever an operation waits for.

use std::net::Shutdown;
use std::os::fd::AsFd;

use socket2::SockRef;

/// Sends the FIN (`shutdown(SHUT_WR)`): data already queued still goes out first.
pub fn shutdown_write(fd: &impl AsFd) -> std::io::Result<()> {
    SockRef::from(fd).shutdown(Shutdown::Write)
}

/// Shuts a socket down both ways so that an operation waiting on it completes: a read with
/// EOF, a blocked send with EPIPE, an accept with EINVAL. On a listening socket this
/// disconnects it for every process that holds it. A failure (not connected) leaves nothing
/// waiting on the socket, which is what the caller wants, so it is not reported.
pub fn shutdown_both(fd: &impl AsFd) {
    let _ = SockRef::from(fd).shutdown(Shutdown::Both);
}
