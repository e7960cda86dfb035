//! One load connection as the mio event loop holds it: its socket and phase, its reconnect
//! backoff and open-loop schedule, around the [`Session`] that is its client side (the
//! requests, the bytes, the responses).

use ringd_ring::Descriptor;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;

use crate::client::Session;

/// Open loop: the due times a connection has not sent yet. They are its schedule, one every
/// interval, so a start and a count hold any number of them in constant memory.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Backlog {
    /// The oldest due time.
    pub first: u64,
    /// Due times from `first` on, one interval apart.
    pub len: u64,
}

impl Backlog {
    /// Adds the next due time (always the previous one plus the interval).
    pub fn push(&mut self, at: u64) {
        if self.len == 0 {
            self.first = at;
        }
        self.len += 1;
    }

    /// The oldest due time, left in place.
    pub fn first(&self) -> Option<u64> {
        (self.len > 0).then_some(self.first)
    }

    /// Takes the oldest due time.
    pub fn pop(&mut self, interval: u64) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let t = self.first;
        self.first += interval;
        self.len -= 1;
        Some(t)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum State {
    /// No socket; (re)connect at `retry_at`.
    Closed,
    /// Connect in progress.
    Connecting,
    Open,
}

#[derive(Debug)]
pub(super) struct Conn {
    /// Its requests, their bytes and its responses.
    pub session: Session,
    pub addr: SocketAddr,
    /// The address it connects from (`--source`), the same on every reconnect.
    pub source: Option<IpAddr>,
    /// epoll: the socket.
    pub stream: Option<TcpStream>,
    /// io_uring: the socket, and the generation its operations carry (bumped when it
    /// closes, so that a late completion for a closed socket is known as such).
    pub fd: Option<Descriptor>,
    pub gen: u32,
    /// io_uring: a send is in flight; its bytes are the first [`Session::transmit`] has.
    pub sending: bool,
    /// io_uring crr: the transaction's send and first recv go out linked to its connect.
    pub linked: bool,
    pub state: State,
    pub connect_started: u64,
    /// When a closed connection may open again: now after a failure on an open one, later
    /// after a failed connect (the backoff).
    pub retry_at: u64,
    /// Consecutive failed connects (the backoff); reset by a connect that succeeds.
    pub connect_failures: u32,
    /// The server closed the last socket: the next connect is a reconnect.
    pub reopen: bool,
    /// Open loop: due, not yet sent.
    pub backlog: Backlog,
    /// Open loop: the next due time not yet moved into the backlog.
    pub next_due: u64,
    /// Open loop on io_uring with a batch window: the intended time of the newest request
    /// queued; a send pushed before it waits in the kernel until then.
    pub send_at: u64,
    /// A write found the connection reset (no FIN seen): once what already arrived is
    /// read, the connection has failed.
    pub write_reset: bool,
    /// Its read budget ran out with bytes left unread: it is in `Worker::unread`.
    pub unread: bool,
}

impl Conn {
    pub fn new(session: Session, addr: SocketAddr, now: u64) -> Self {
        Conn {
            session,
            addr,
            source: None,
            stream: None,
            fd: None,
            gen: 0,
            sending: false,
            linked: false,
            state: State::Closed,
            connect_started: 0,
            retry_at: now,
            connect_failures: 0,
            reopen: false,
            backlog: Backlog::default(),
            next_due: 0,
            send_at: 0,
            write_reset: false,
            unread: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_is_the_schedule() {
        let mut b = Backlog::default();
        assert_eq!(b.pop(10), None);
        b.push(100);
        b.push(110);
        b.push(120);
        assert_eq!(b.pop(10), Some(100));
        assert_eq!(b.pop(10), Some(110));
        b.push(130);
        assert_eq!((b.first, b.len), (120, 2));
        assert_eq!(b.pop(10), Some(120));
        assert_eq!(b.pop(10), Some(130));
        assert_eq!(b.pop(10), None);
    }
}
