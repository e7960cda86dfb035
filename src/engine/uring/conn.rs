//! One connection of the `uring` engine: its [`Connection`] (phase, output, time) plus what
//! it has in flight on the ring. It never touches the ring itself: each completion is handed
//! to it and it answers with the [`Submit`]s the worker must push, so the whole logic runs
//! (and is tested, with a simulated kernel) without a kernel.
//!
//! What it has in flight is one enum per kind of operation: a multishot recv
//! ([`RecvState`]), at most one send ([`SendState`]), the FIN ([`FinState`]), cancels, and at
//! the end the close ([`Teardown`]). The close is submitted only once nothing else is in
//! flight, so no operation outlives the socket or the buffers it uses.

use super::sendq::{Out, SendQueue};
use crate::connection::{Connection, Input, Limits, Millis, Phase, WorkerStats};

/// Provided buffers a connection may hold in its send queue (echo); more arriving while it
/// holds these are copied out, so that peers that send but do not read cannot take the
/// worker's whole pool.
pub const MAX_HELD_BUFFERS: u16 = 8;

/// Largest last send that gets the FIN linked behind it.
pub const LINK_FIN_MAX: usize = 8 * 1024;

/// The worker's receive buffers as a connection needs them.
pub trait Pool {
    /// The first `len` bytes of buffer `bid`, as a completion filled them.
    fn bytes(&self, bid: u16, len: usize) -> &[u8];
    /// A completion handed buffer `bid` to us.
    fn taken(&mut self, bid: u16);
    /// Buffer `bid` goes back to the kernel.
    fn give(&mut self, bid: u16);
    /// Buffers the kernel can fill now.
    fn available(&self) -> usize;
    /// Buffers in all.
    fn entries(&self) -> usize;
}

/// What the worker must submit for a connection, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// A multishot recv into the provided buffers.
    Recv,
    /// A send of `len` bytes at `ptr` (the front of the queue, which stays put until the
    /// send completes); `fin`: a FIN linked behind it, which must run only if the send
    /// succeeded in full (`MSG_WAITALL`: the kernel sends all of it or fails the link).
    Send {
        /// First byte.
        ptr: *const u8,
        /// Bytes.
        len: u32,
        /// A FIN follows, linked.
        fin: bool,
    },
    /// The FIN alone.
    Fin,
    /// Cancel the multishot recv (reading pauses).
    CancelRecv,
    /// Cancel everything in flight on the socket (the connection is over).
    CancelAll,
    /// Close the socket.
    Close,
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
    /// The front of the queue is being sent.
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

/// The end of the connection on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Not begun.
    No,
    /// Operations in flight were cancelled (or there were none); the close waits for them.
    Cancelled,
    /// The close was submitted; the slot is freed when it completes.
    Closing,
}

/// What a completion or a step needs from the worker.
#[derive(Debug)]
pub struct Env<'a, P: Pool> {
    /// The time.
    pub now: Millis,
    /// The limits.
    pub limits: &'a Limits,
    /// The receive buffers.
    pub pool: &'a mut P,
    /// Counters.
    pub stats: &'a WorkerStats,
    /// Submissions to push, appended to.
    pub submit: &'a mut Vec<Submit>,
}

/// A connection and its operations on the ring.
#[derive(Debug)]
pub struct UConn {
    /// Phase, protocol, output and time.
    pub conn: Connection,
    /// Output not yet sent, in order; the front is in flight while `send` says so.
    queue: SendQueue,
    /// Provided buffers in `queue`.
    held: u16,
    /// The recv.
    pub recv: RecvState,
    /// The send.
    pub send: SendState,
    /// The FIN.
    pub fin: FinState,
    /// Cancel operations in flight.
    cancels: u8,
    /// The end.
    pub teardown: Teardown,
    /// The last recv ended for want of buffers: re-armed only when some come back.
    pub starved: bool,
}

impl UConn {
    /// A connection that has nothing in flight yet; call [`UConn::step`] to start it.
    pub fn new(conn: Connection) -> Self {
        UConn {
            conn,
            queue: SendQueue::default(),
            held: 0,
            recv: RecvState::Off,
            send: SendState::Idle,
            fin: FinState::Pending,
            cancels: 0,
            teardown: Teardown::No,
            starved: false,
        }
    }

    /// True while an operation other than the close is in flight.
    pub fn busy(&self) -> bool {
        self.recv != RecvState::Off
            || self.send == SendState::InFlight
            || self.fin == FinState::InFlight
            || self.cancels > 0
    }

    /// A recv completion.
    pub fn on_recv<P: Pool>(&mut self, res: i32, more: bool, bid: Option<u16>, env: &mut Env<P>) {
        if !more {
            self.recv = RecvState::Off;
        }
        if res > 0 {
            let n = res as usize;
            let Some(bid) = bid else {
                // The kernel names the buffer of every buffer-select recv with data.
                tracing::warn!("recv completion without a buffer id");
                self.conn.on_error();
                return self.step(env);
            };
            env.pool.taken(bid);
            WorkerStats::add(&env.stats.bytes_in, n as u64);
            match self
                .conn
                .on_input(env.now, env.pool.bytes(bid, n), env.limits)
            {
                Input::Echo if self.held < MAX_HELD_BUFFERS && spare(env.pool) => {
                    self.held += 1;
                    self.queue.push_back(Out::Buf {
                        bid,
                        off: 0,
                        len: n,
                    });
                }
                Input::Echo => {
                    let data = env.pool.bytes(bid, n).to_vec();
                    env.pool.give(bid);
                    self.queue.push_back(Out::Owned { data, off: 0 });
                }
                Input::Consumed { answered } => {
                    WorkerStats::add(&env.stats.requests, answered);
                    env.pool.give(bid);
                }
                Input::Dropped => env.pool.give(bid),
            }
        } else if res == 0 {
            self.conn.on_eof();
        } else if res == -libc::ENOBUFS {
            WorkerStats::inc(&env.stats.recv_enobufs);
            self.starved = true;
        } else if res != -libc::ECANCELED {
            tracing::debug!("recv failed: {}", std::io::Error::from_raw_os_error(-res));
            self.conn.on_error();
        }
        self.step(env);
    }

    /// A send completion.
    pub fn on_send<P: Pool>(&mut self, res: i32, env: &mut Env<P>) {
        self.send = SendState::Idle;
        if res < 0 {
            if res != -libc::ECANCELED {
                tracing::debug!("send failed: {}", std::io::Error::from_raw_os_error(-res));
            }
            self.conn.on_error();
            return self.step(env);
        }
        let mut sent = res as usize;
        WorkerStats::add(&env.stats.bytes_out, sent as u64);
        self.conn.on_sent(env.now, sent, env.limits);
        while let Some(front) = self.queue.front_mut() {
            let n = sent.min(front.remaining());
            front.advance(n);
            sent -= n;
            if front.remaining() > 0 {
                break;
            }
            self.pop_front(env.pool);
        }
        self.step(env);
    }

    /// A FIN completion.
    pub fn on_fin<P: Pool>(&mut self, res: i32, env: &mut Env<P>) {
        if res == -libc::ECANCELED {
            // The send it was linked to did not complete in full: it goes out on its own
            // once the rest is sent.
            self.fin = FinState::Pending;
        } else if res < 0 {
            self.fin = FinState::Pending;
            tracing::debug!(
                "shutdown failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
            self.conn.on_error();
        } else {
            self.fin = FinState::Sent;
            self.conn.on_fin(env.now, env.limits);
        }
        self.step(env);
    }

    /// A cancel completion (the cancelled operations report on their own).
    pub fn on_cancel<P: Pool>(&mut self, env: &mut Env<P>) {
        self.cancels = self.cancels.saturating_sub(1);
        self.step(env);
    }

    /// The worker's clock passed `env.now`: acts on the connection's deadlines if due.
    pub fn on_time<P: Pool>(&mut self, env: &mut Env<P>) {
        if self
            .conn
            .poll_timeout(env.limits)
            .is_some_and(|d| d <= env.now)
        {
            self.conn.handle_timeout(env.now, env.limits);
            self.step(env);
        }
    }

    /// The server drains.
    pub fn on_drain<P: Pool>(&mut self, env: &mut Env<P>) {
        self.conn.drain(env.now);
        self.step(env);
    }

    /// Buffers came back after the recv ran out: read again.
    pub fn on_buffers<P: Pool>(&mut self, env: &mut Env<P>) {
        self.starved = false;
        self.step(env);
    }

    /// Submits what the connection's state asks for now: its output, the FIN, the recv (or
    /// its cancel), and at the end the cancels and the close.
    pub fn step<P: Pool>(&mut self, env: &mut Env<P>) {
        if self.conn.phase() == Phase::Closed {
            return self.tear_down(env);
        }
        if let Some(data) = self.conn.take_output() {
            self.queue.push_back(Out::Owned { data, off: 0 });
        }
        if self.send == SendState::Idle && self.fin == FinState::Pending {
            match self.queue.front() {
                Some(front) => {
                    let bytes = match front {
                        Out::Buf { bid, off, len } => &env.pool.bytes(*bid, *len)[*off..],
                        Out::Owned { data, off } => &data[*off..],
                    };
                    // The last of a closing connection's output: the FIN goes with it if it
                    // is small (a large send in one operation would hide its progress from
                    // the idle timeout until all of it is in the kernel).
                    let fin = self.queue.len() == 1
                        && self.conn.phase() == Phase::Closing
                        && bytes.len() <= LINK_FIN_MAX;
                    env.submit.push(Submit::Send {
                        ptr: bytes.as_ptr(),
                        len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                        fin,
                    });
                    self.send = SendState::InFlight;
                    if fin {
                        self.fin = FinState::InFlight;
                    }
                }
                None if self.conn.wants_fin() => {
                    env.submit.push(Submit::Fin);
                    self.fin = FinState::InFlight;
                }
                None => {}
            }
        }
        match self.recv {
            RecvState::Off if self.conn.reading() && !self.starved => {
                env.submit.push(Submit::Recv);
                self.recv = RecvState::Armed;
            }
            RecvState::Armed if self.conn.phase() == Phase::Open && !self.conn.reading() => {
                env.submit.push(Submit::CancelRecv);
                self.recv = RecvState::Cancelling;
                self.cancels += 1;
            }
            _ => {}
        }
    }

    /// The connection is over: drop unsent output, cancel what is in flight, close once
    /// nothing is.
    fn tear_down<P: Pool>(&mut self, env: &mut Env<P>) {
        let keep = usize::from(self.send == SendState::InFlight);
        while self.queue.len() > keep {
            if let Some(Out::Buf { bid, .. }) = self.queue.pop_back() {
                self.held -= 1;
                env.pool.give(bid);
            }
        }
        if self.teardown == Teardown::No {
            self.teardown = Teardown::Cancelled;
            if self.busy() {
                env.submit.push(Submit::CancelAll);
                self.cancels += 1;
            }
        }
        if self.teardown == Teardown::Cancelled && !self.busy() {
            while !self.queue.is_empty() {
                self.pop_front(env.pool);
            }
            env.submit.push(Submit::Close);
            self.teardown = Teardown::Closing;
        }
    }

    /// Removes the front of the queue (sent, or dropped with nothing in flight).
    fn pop_front<P: Pool>(&mut self, pool: &mut P) {
        match self.queue.pop_front() {
            Some(Out::Buf { bid, .. }) => {
                self.held -= 1;
                pool.give(bid);
            }
            Some(Out::Owned { data, .. }) => self.conn.recycle(data),
            None => {}
        }
    }
}

/// True while the pool has buffers to spare for holding (a quarter stays for receiving).
fn spare<P: Pool>(pool: &P) -> bool {
    pool.available() > pool.entries() / 4
}

#[cfg(test)]
mod tests;
