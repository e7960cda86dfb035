//! One connection of the `uring` engine: its [`Connection`] (phase, output, time) plus what
//! its socket has in flight on the ring ([`SockOps`]). It never touches the ring itself: each
//! completion is handed to it and it answers with the [`Submit`]s the worker must push, so
//! the whole logic runs (and is tested, with a simulated kernel) without a kernel.
//!
//! What it has in flight is one enum per kind of operation: a multishot recv, at most one
//! send, the FIN, cancels, and at the end the close ([`Teardown`]). The close is submitted
//! only once nothing else is in flight, so no operation outlives the socket or the buffers it
//! uses.

use super::sendq::Out;
use super::sock::{Pool, SockOps, Submit};
use crate::connection::{Action, Connection, Input, Limits, Millis, Phase, WorkerStats};
use crate::proxy::Side;

/// The end of a connection on the ring.
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
    /// Its socket's operations.
    pub sock: SockOps,
    /// Cancel operations in flight.
    cancels: u8,
    /// The end.
    pub teardown: Teardown,
}

/// The connection's only socket.
const SIDE: Side = Side::Client;

impl UConn {
    /// A connection that has nothing in flight yet; call [`UConn::step`] to start it.
    pub fn new(mut conn: Connection) -> Self {
        // The recv stays armed until the close, so late input is seen.
        conn.sees_late_input();
        UConn {
            conn,
            sock: SockOps::default(),
            cancels: 0,
            teardown: Teardown::No,
        }
    }

    /// When the connection next needs [`UConn::on_time`].
    pub fn poll_timeout(&self, limits: &Limits) -> Option<Millis> {
        self.conn.poll_timeout(limits)
    }

    /// Why the connection ended.
    pub fn close_reason(&self) -> crate::connection::CloseReason {
        self.conn.close_reason()
    }

    /// True while an operation other than the close is in flight.
    pub fn busy(&self) -> bool {
        self.sock.busy() || self.cancels > 0
    }

    /// A recv completion.
    pub fn on_recv<P: Pool>(&mut self, res: i32, more: bool, bid: Option<u16>, env: &mut Env<P>) {
        if !more {
            self.sock.recv = super::sock::RecvState::Off;
        }
        if res > 0 {
            let n = res as usize;
            let Some(bid) = bid else {
                // The kernel names the buffer of every buffer-select recv with data.
                tracing::warn!("recv completion without a buffer id");
                self.conn.handle_error();
                return self.step(env);
            };
            WorkerStats::add(&env.stats.bytes_in, n as u64);
            match self
                .conn
                .handle_input(env.now, env.pool.bytes(bid, n), env.limits)
            {
                Input::Echo => self.sock.push_received(bid, n, env.pool),
                Input::Consumed | Input::Dropped => env.pool.give(bid),
            }
        } else if res == 0 {
            self.conn.handle_eof();
        } else if res == -libc::ENOBUFS {
            WorkerStats::inc(&env.stats.recv_enobufs);
            self.sock.starved = true;
            if self.conn.phase() != Phase::Open {
                // Bytes are waiting that a closing connection will not read now.
                self.conn.handle_input_unread();
            }
        } else if res != -libc::ECANCELED {
            tracing::debug!("recv failed: {}", std::io::Error::from_raw_os_error(-res));
            self.conn.handle_error();
        }
        self.step(env);
    }

    /// A send completion, with the bytes it was given.
    pub fn on_send<P: Pool>(&mut self, res: i32, buf: Out, env: &mut Env<P>) {
        if res < 0 {
            self.sock.on_sent(0, buf, env.pool, &mut drop);
            if res != -libc::ECANCELED {
                tracing::debug!("send failed: {}", std::io::Error::from_raw_os_error(-res));
            }
            self.conn.handle_error();
            return self.step(env);
        }
        let sent = res as usize;
        WorkerStats::add(&env.stats.bytes_out, sent as u64);
        self.conn.handle_sent(env.now, sent, env.limits);
        let conn = &mut self.conn;
        self.sock
            .on_sent(sent, buf, env.pool, &mut |v| conn.recycle(v));
        self.step(env);
    }

    /// A FIN completion.
    pub fn on_fin<P: Pool>(&mut self, res: i32, env: &mut Env<P>) {
        use super::sock::FinState;
        if res == -libc::ECANCELED {
            // The send it was linked to did not complete in full: it goes out on its own
            // once the rest is sent.
            self.sock.fin = FinState::Pending;
        } else if res < 0 {
            self.sock.fin = FinState::Pending;
            tracing::debug!(
                "shutdown failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
            self.conn.handle_error();
        } else {
            self.sock.fin = FinState::Sent;
            self.conn.handle_fin_sent(env.now, env.limits);
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
        self.conn.handle_drain(env.now);
        self.step(env);
    }

    /// Buffers came back after the recv ran out: read again.
    pub fn on_buffers<P: Pool>(&mut self, env: &mut Env<P>) {
        self.sock.starved = false;
        self.step(env);
    }

    /// Submits what the connection's state asks for now: its output, the FIN, the recv (or
    /// its cancel), and at the end the cancels and the close.
    pub fn step<P: Pool>(&mut self, env: &mut Env<P>) {
        if self.conn.phase() == Phase::Closing && self.sock.recv != super::sock::RecvState::Armed {
            // The recv was paused (output at its bound) or starved: bytes may be waiting
            // unread, and a close without lingering would answer them with a reset.
            self.conn.handle_input_unread();
        }
        let mut fin = false;
        while let Some(action) = self.conn.poll_action() {
            match action {
                Action::Close { reset } => return self.tear_down(reset, env),
                Action::Send { data, answered } => {
                    WorkerStats::add(&env.stats.requests, answered);
                    self.sock.push_owned(data);
                }
                Action::Fin => {
                    fin = true;
                    break;
                }
            }
        }
        // A connection that reads nothing more after its reply needs no FIN of its own:
        // the close sends it (see `Connection::poll_action`). One that lingers has its FIN
        // linked behind its last send.
        let closing = self.conn.phase() == Phase::Closing;
        let lingers = closing && self.conn.lingers();
        self.sock.start_send(SIDE, lingers, env.submit);
        if fin {
            self.sock.start_fin(SIDE, env.submit);
        }
        let pause = self.conn.phase() == Phase::Open && !self.conn.reading();
        let room = self.conn.room(env.limits);
        if self
            .sock
            .steer_recv(SIDE, self.conn.reading(), pause, room, env.submit)
        {
            self.cancels += 1;
        }
    }

    /// The connection is over: drop unsent output, cancel what is in flight, close once
    /// nothing is.
    fn tear_down<P: Pool>(&mut self, reset: bool, env: &mut Env<P>) {
        self.sock.drop_unsent(env.pool);
        if self.teardown == Teardown::No {
            self.teardown = Teardown::Cancelled;
            if self.busy() {
                env.submit.push(Submit::CancelAll(SIDE));
                self.cancels += 1;
            }
        }
        if self.teardown == Teardown::Cancelled && !self.busy() {
            env.submit.push(Submit::Close { side: SIDE, reset });
            self.teardown = Teardown::Closing;
        }
    }
}

#[cfg(test)]
mod tests;
