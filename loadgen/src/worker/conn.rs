//! One load connection's state: its socket and phase, the requests it has in flight or must
//! send again, its open-loop backlog, and where it is in the echo stream or the HTTP
//! response being read.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;

use crate::client::ResponseReader;

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    /// When the request should have been sent (open loop) or was first sent (closed loop).
    /// Warm-up or measured is decided by this time.
    pub intended: u64,
    /// When it was first sent (crr: when its connection was started).
    pub sent: u64,
    /// Echo: the stream offset at which its response is complete.
    pub end_offset: u64,
}

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
    /// Established.
    Open,
}

#[derive(Debug)]
pub(super) struct Conn {
    /// Global connection id (also its echo pattern seed).
    pub id: u64,
    /// Index of its target in the plan.
    pub target: usize,
    pub addr: SocketAddr,
    /// The address it connects from (`--source`), the same on every reconnect.
    pub source: Option<IpAddr>,
    pub stream: Option<TcpStream>,
    pub state: State,
    pub connect_started: u64,
    /// When a closed connection may open again: now after a failure on an open one, later
    /// after a failed connect (the backoff).
    pub retry_at: u64,
    /// Consecutive failures (dead-run detection); reset by a response.
    pub failures: u32,
    /// Consecutive failed connects (the backoff); reset by a connect that succeeds.
    pub connect_failures: u32,
    /// The server closed the last socket: the next connect is a reconnect.
    pub reopen: bool,
    /// Responses completed on the current socket: when the server closes a connection
    /// that already answered, the requests it left unanswered are sent again, not failed.
    pub answered: u64,
    /// HTTP and hello: request bytes not yet written.
    pub out: Vec<u8>,
    pub out_pos: usize,
    /// Echo: stream bytes queued for sending, and written so far.
    pub tx_queued: u64,
    pub tx_written: u64,
    /// Echo: stream bytes received, and where the last completed response ended.
    pub rx_offset: u64,
    pub rx_done: u64,
    pub inflight: VecDeque<Pending>,
    /// Requests to send again on the next socket, oldest first.
    pub retry: VecDeque<Pending>,
    /// Open loop: due, not yet sent.
    pub backlog: Backlog,
    /// Open loop: the next due time not yet moved into the backlog.
    pub next_due: u64,
    /// HTTP: bytes of a response head or chunk line not yet whole; hello: the reply.
    pub rbuf: Vec<u8>,
    pub reader: ResponseReader,
    /// HTTP --verify: the body length the first response had.
    pub body_len: Option<u64>,
    /// A write found the connection reset (no FIN seen): once what already arrived is
    /// read, the connection has failed.
    pub write_reset: bool,
    /// Its read budget ran out with bytes left unread: it is in `Worker::unread`.
    pub unread: bool,
}

impl Conn {
    pub fn new(id: u64, target: usize, addr: SocketAddr, head_request: bool, now: u64) -> Self {
        Conn {
            id,
            target,
            addr,
            source: None,
            stream: None,
            state: State::Closed,
            connect_started: 0,
            retry_at: now,
            failures: 0,
            connect_failures: 0,
            reopen: false,
            answered: 0,
            out: Vec::new(),
            out_pos: 0,
            tx_queued: 0,
            tx_written: 0,
            rx_offset: 0,
            rx_done: 0,
            inflight: VecDeque::new(),
            retry: VecDeque::new(),
            backlog: Backlog::default(),
            next_due: 0,
            rbuf: Vec::new(),
            reader: ResponseReader::new(head_request),
            body_len: None,
            write_reset: false,
            unread: false,
        }
    }

    /// Forgets the previous socket's stream state before a new one.
    pub fn reset_stream(&mut self, head_request: bool) {
        self.answered = 0;
        self.out.clear();
        self.out_pos = 0;
        self.tx_queued = 0;
        self.tx_written = 0;
        self.rx_offset = 0;
        self.rx_done = 0;
        self.rbuf.clear();
        self.reader = ResponseReader::new(head_request);
        self.write_reset = false;
    }

    /// Requests sent and not answered: in flight, or waiting to be sent again.
    pub fn outstanding(&self) -> usize {
        self.inflight.len() + self.retry.len()
    }

    /// Moves the requests in flight to the front of the retry queue, in order; returns
    /// how many.
    pub fn requeue_inflight(&mut self) -> u64 {
        let n = self.inflight.len() as u64;
        while let Some(p) = self.inflight.pop_back() {
            self.retry.push_front(p);
        }
        n
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

    #[test]
    fn requeued_requests_keep_their_order_ahead_of_older_retries() {
        let p = |t| Pending {
            intended: t,
            sent: t,
            end_offset: 0,
        };
        let mut c = Conn::new(0, 0, "127.0.0.1:1".parse().unwrap(), false, 0);
        c.retry.push_back(p(9));
        c.inflight.extend([p(1), p(2)]);
        assert_eq!(c.requeue_inflight(), 2);
        let order: Vec<u64> = c.retry.iter().map(|p| p.intended).collect();
        assert_eq!(order, [1, 2, 9]);
        assert_eq!(c.outstanding(), 3);
    }
}
