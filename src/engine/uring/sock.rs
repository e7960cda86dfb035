//! One socket's operations on the ring: its multishot recv, its send queue with at most one
//! send in flight, and its FIN. Shared by a protocol connection ([`super::conn::UConn`], one
//! socket) and a proxied pair ([`super::pair::UPair`], two). Like them, it never touches the
//! ring: it appends the [`Submit`]s the worker must push. The bytes of a send leave its
//! queue with the [`Submit::Send`] and come back with the send's completion.

use super::sendq::{Out, SendQueue};
use crate::proxy::Side;

/// Provided buffers a socket may hold in its send queue (received bytes sent on as they
/// are); more arriving while it holds these are copied out, so that peers that send but do
/// not read cannot take the worker's whole pool.
pub const MAX_HELD_BUFFERS: u16 = 8;

/// Largest last send that gets the FIN linked behind it (a larger send in one operation would
/// hide its progress from the idle timeout until all of it is in the kernel).
pub const LINK_FIN_MAX: usize = 8 * 1024;

/// The worker's receive buffers as a connection needs them.
pub trait Pool {
    /// The first `len` bytes of buffer `bid`, as a completion filled them.
    fn bytes(&self, bid: u16, len: usize) -> &[u8];
    /// Buffer `bid` goes back to the kernel.
    fn give(&mut self, bid: u16);
    /// Buffers the kernel can fill now.
    fn available(&self) -> usize;
    /// Buffers in all.
    fn entries(&self) -> usize;
}

impl Pool for ringd_ring::BufRing {
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        ringd_ring::BufRing::bytes(self, bid, len)
    }
    fn give(&mut self, bid: u16) {
        ringd_ring::BufRing::give(self, bid)
    }
    fn available(&self) -> usize {
        ringd_ring::BufRing::available(self)
    }
    fn entries(&self) -> usize {
        ringd_ring::BufRing::entries(self)
    }
}

/// What the worker must submit, in order. `Side` names the socket (a protocol connection's
/// one socket is the client's).
#[derive(Debug, PartialEq, Eq)]
pub enum Submit {
    /// A multishot recv into the provided buffers that ends by itself once it has
    /// delivered `room` bytes (where the kernel can cap it), so a peer that sends faster
    /// than it reads cannot make the socket hold more than its bound between the decision to
    /// pause and the cancel.
    Recv {
        /// The socket.
        side: Side,
        /// Bytes the socket may still take in.
        room: usize,
    },
    /// A send of the front of the queue, handed over until the send completes; `fin`: a
    /// FIN linked behind it, which must run only if the send succeeded in full
    /// (`MSG_WAITALL`: the kernel sends all of it or fails the link).
    Send {
        /// The socket.
        side: Side,
        /// The bytes.
        buf: Out,
        /// A FIN follows, linked.
        fin: bool,
    },
    /// The FIN alone.
    Fin(Side),
    /// Cancel the multishot recv (reading pauses).
    CancelRecv(Side),
    /// Cancel everything in flight on the socket (the connection is over).
    CancelAll(Side),
    /// Close the socket; `reset`: with `SO_LINGER` 0 first, so the peer sees a reset (the
    /// connection was cut with output unsent, or its other side was reset).
    Close {
        /// The socket.
        side: Side,
        /// Reset instead of ending cleanly.
        reset: bool,
    },
    /// Proxy: connect the upstream socket.
    Connect,
    /// Proxy: cancel the connect in flight (it took too long).
    CancelConnect,
}

impl Submit {
    /// The socket it is for.
    pub fn side(&self) -> Side {
        match self {
            Submit::Recv { side, .. }
            | Submit::Send { side, .. }
            | Submit::Fin(side)
            | Submit::CancelRecv(side)
            | Submit::CancelAll(side)
            | Submit::Close { side, .. } => *side,
            Submit::Connect | Submit::CancelConnect => Side::Upstream,
        }
    }
}

/// The multishot recv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvState {
    /// Not submitted (or ended).
    Off,
    /// Submitted and receiving.
    Armed,
    /// A cancel of it was submitted; its last completion is still to come.
    Cancelling,
}

/// The send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// No send in flight.
    Idle,
    /// What was the front of the queue is being sent.
    InFlight,
}

/// The FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinState {
    /// Not sent.
    Pending,
    /// Submitted (alone or linked behind a send).
    InFlight,
    /// Done.
    Sent,
}

/// One socket's operations.
#[derive(Debug)]
pub struct SockOps {
    /// Output not yet sent, in order (the bytes of a send in flight are not in it).
    queue: SendQueue,
    /// Provided buffers in `queue` or in flight.
    held: u16,
    /// The recv.
    pub recv: RecvState,
    /// The send.
    pub send: SendState,
    /// The FIN.
    pub fin: FinState,
    /// The last recv ended for want of buffers: re-armed only when some come back.
    pub starved: bool,
}

impl Default for SockOps {
    fn default() -> Self {
        SockOps {
            queue: SendQueue::default(),
            held: 0,
            recv: RecvState::Off,
            send: SendState::Idle,
            fin: FinState::Pending,
            starved: false,
        }
    }
}

impl SockOps {
    /// True while a recv, send or FIN is in flight.
    pub fn busy(&self) -> bool {
        self.recv != RecvState::Off
            || self.send == SendState::InFlight
            || self.fin == FinState::InFlight
    }

    /// True while output waits to be sent or is being sent.
    pub fn has_unsent(&self) -> bool {
        !self.queue.is_empty() || self.send == SendState::InFlight
    }

    /// Received bytes (`n` in buffer `bid`) to send on this socket: the buffer itself, no
    /// copy, unless this socket holds [`MAX_HELD_BUFFERS`] already or the pool is down to its
    /// last quarter; then a copy, and the buffer goes back at once.
    pub fn push_received<P: Pool>(&mut self, bid: u16, n: usize, pool: &mut P) {
        if self.held < MAX_HELD_BUFFERS && pool.available() > pool.entries() / 4 {
            self.held += 1;
            self.queue.push_back(Out::Provided {
                bid,
                off: 0,
                len: n,
            });
        } else {
            let data = pool.bytes(bid, n).to_vec();
            pool.give(bid);
            self.queue.push_back(Out::Bytes { data, off: 0 });
        }
    }

    /// Bytes to send after everything queued.
    pub fn push_owned(&mut self, data: Vec<u8>) {
        self.queue.push_back(Out::Bytes { data, off: 0 });
    }

    /// Bytes to send before everything queued (nothing may be in flight).
    pub fn push_front_owned(&mut self, data: Vec<u8>) {
        debug_assert_eq!(self.send, SendState::Idle);
        self.queue.push_front(Out::Bytes { data, off: 0 });
    }

    /// Starts sending the front of the queue if nothing is in flight and the FIN is not
    /// sent. `fin_after`: the connection closes once the queue is sent, so a small last send
    /// carries the FIN linked behind it.
    pub fn start_send(&mut self, side: Side, fin_after: bool, submit: &mut Vec<Submit>) {
        if self.send != SendState::Idle || self.fin != FinState::Pending {
            return;
        }
        let Some(buf) = self.queue.pop_front() else {
            return;
        };
        let fin = fin_after && self.queue.is_empty() && buf.remaining() <= LINK_FIN_MAX;
        submit.push(Submit::Send { side, buf, fin });
        self.send = SendState::InFlight;
        if fin {
            self.fin = FinState::InFlight;
        }
    }

    /// Sends the FIN alone, if nothing is in flight or queued and it was not sent yet.
    pub fn start_fin(&mut self, side: Side, submit: &mut Vec<Submit>) {
        if self.send == SendState::Idle && self.queue.is_empty() && self.fin == FinState::Pending {
            submit.push(Submit::Fin(side));
            self.fin = FinState::InFlight;
        }
    }

    /// The send in flight is over, `sent` bytes of `buf` went out (0 when it failed): the
    /// rest goes back to the front of the queue; spent buffers go back to the pool, spent
    /// output vectors to `recycle`.
    pub fn on_sent<P: Pool>(
        &mut self,
        sent: usize,
        mut buf: Out,
        pool: &mut P,
        recycle: &mut impl FnMut(Vec<u8>),
    ) {
        self.send = SendState::Idle;
        buf.advance(sent.min(buf.remaining()));
        if buf.remaining() > 0 {
            self.queue.push_front(buf);
        } else {
            self.release(buf, pool, recycle);
        }
    }

    /// Keeps the recv armed while `want` (taking in at most `room` bytes), and (`pause`)
    /// cancels it while reading must pause. Returns true when it submitted a cancel.
    pub fn steer_recv(
        &mut self,
        side: Side,
        want: bool,
        pause: bool,
        room: usize,
        submit: &mut Vec<Submit>,
    ) -> bool {
        match self.recv {
            RecvState::Off if want && !self.starved => {
                submit.push(Submit::Recv { side, room });
                self.recv = RecvState::Armed;
                false
            }
            RecvState::Armed if pause => {
                submit.push(Submit::CancelRecv(side));
                self.recv = RecvState::Cancelling;
                true
            }
            _ => false,
        }
    }

    /// The connection is over: unsent output is dropped (a send in flight keeps its bytes
    /// until its completion brings them back).
    pub fn drop_unsent<P: Pool>(&mut self, pool: &mut P) {
        while let Some(out) = self.queue.pop_back() {
            self.release(out, pool, &mut drop);
        }
    }

    fn release<P: Pool>(&mut self, out: Out, pool: &mut P, recycle: &mut impl FnMut(Vec<u8>)) {
        match out {
            Out::Provided { bid, .. } => {
                self.held -= 1;
                pool.give(bid);
            }
            Out::Bytes { data, .. } => recycle(data),
        }
    }
}
