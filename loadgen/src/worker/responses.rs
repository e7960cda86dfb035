//! Reading: a connection's bytes and the end of its stream handed to its session, within a
//! read budget per turn, and what the session says to do next carried out — fill the
//! pipeline again, end a crr transaction, reopen after a server close, or fail.

use std::io::{self, Read};

use super::{Mode, State, Worker, READS_PER_TURN};
use crate::client::Next;
use crate::clock::now_ns;
use crate::stats::ErrorKind;

impl Worker<'_> {
    pub(super) fn on_readable(&mut self, key: usize, closed: bool) {
        for _ in 0..READS_PER_TURN {
            let now = now_ns();
            let c = &mut self.conns[key];
            if c.state != State::Open {
                return;
            }
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A reset after the server's FIN: it closed, then refused what came after.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return self.on_eof(key, now),
                Err(e) => return self.fail(key, ErrorKind::Reset, &e, now),
            };
            if n == 0 {
                return self.on_eof(key, now);
            }
            let data = &self.scratch[..n];
            let next = c.session.received(&self.spec, data, now, &mut self.rec);
            if next != Next::Continue {
                return self.carry_out(key, next, now);
            }
            if self.plan.mode != Mode::Crr {
                self.fill(key, now);
            } else {
                // TLS: the handshake's next flight, or the request it held back.
                self.flush(key, now);
            }
            // A short read emptied the receive queue; a new edge comes with new data. If the
            // peer already closed, read on to see the EOF.
            if n < self.scratch.len() && !closed {
                return;
            }
        }
        // Budget spent with (possibly) more to read: come back after the other connections.
        let c = &mut self.conns[key];
        if !c.unread {
            c.unread = true;
            self.unread.push((key, closed));
        }
    }

    /// Gives every connection whose read budget ran out last turn its next turn.
    pub(super) fn read_unread(&mut self) {
        // Connections live for the whole run (crr reuses its slot), so every key is valid.
        for (key, closed) in std::mem::take(&mut self.unread) {
            self.conns[key].unread = false;
            self.on_readable(key, closed);
        }
    }

    pub(super) fn on_eof(&mut self, key: usize, now: u64) {
        let c = &mut self.conns[key];
        if c.write_reset {
            let e = io::Error::from(io::ErrorKind::ConnectionReset);
            return self.fail(key, ErrorKind::Reset, &e, now);
        }
        let next = c.session.eof(&self.spec, now, &mut self.rec);
        self.carry_out(key, next, now);
    }

    /// Does what the session asked for after a read or the end of the stream.
    pub(super) fn carry_out(&mut self, key: usize, next: Next, now: u64) {
        match next {
            Next::Continue => {}
            Next::ServerClosed => self.server_closed(key, now),
            Next::TransactionDone => self.end_transaction(key, now),
            Next::Failed(kind, why) => self.fail(key, kind, &io::Error::other(why), now),
        }
    }
}
