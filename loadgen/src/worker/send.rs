//! Sending: opening connections (and crr transactions), queueing requests up to the
//! pipeline depth, writing them, and ending a connection — with a failure, or because the
//! server closed it, in which case the requests the server left unanswered are sent again.
//! Either way the connection reopens at once; only connects that keep failing back off.

use std::cmp::Reverse;
use std::io::{self, Write};

use mio::{Interest, Token};

use super::conn::Conn;
use super::{Io, Mode, State, Worker};
use crate::client::Pending;
use crate::source;
use crate::stats::ErrorKind;

/// Backoff after the second failed connect in a row; it doubles with each further one.
const FIRST_BACKOFF_MS: u64 = 10;
/// Longest backoff between two connects.
const MAX_BACKOFF_MS: u64 = 1000;
/// How soon a connection waiting for its old socket's held send tries again.
const HELD_RETRY_NS: u64 = 200_000;

impl Worker<'_> {
    /// Opens connection `key` (rr and stream).
    pub(super) fn connect(&mut self, key: usize, now: u64) {
        if let Io::Uring(ring) = &self.io {
            if ring.holds(key) {
                // The old socket's held send has yet to complete: its slot or number stays
                // unused until then. Not a failure; tried again shortly.
                let c = &mut self.conns[key];
                c.retry_at = now + HELD_RETRY_NS;
                self.reopening.push(Reverse((c.retry_at, key)));
                return;
            }
        }
        let c = &mut self.conns[key];
        c.connect_started = now;
        c.session.reset();
        c.write_reset = false;
        self.rec.stats.counters.connects += 1;
        if std::mem::take(&mut c.reopen) {
            self.rec.stats.counters.reconnects += 1;
        }
        let opened = match &mut self.io {
            Io::Epoll { poll, .. } => epoll_connect(poll, c, key),
            // Over TLS the first flight is the handshake's, and its time starts at the
            // connect's completion: not linked.
            Io::Uring(ring) => {
                let linked = self.plan.mode == Mode::Crr && self.plan.tls.is_none();
                ring.connect(c, key, linked)
            }
        };
        match opened {
            Ok(()) => self.conns[key].state = State::Connecting,
            Err(e) => {
                let kind = connect_error_kind(&e);
                self.fail(key, kind, &e, now);
            }
        }
    }

    /// crr: starts one transaction on slot `key`.
    pub(super) fn start_transaction(&mut self, key: usize, now: u64, intended: Option<u64>) {
        if self.stopping || self.quota_reached() {
            return;
        }
        self.connect(key, now);
        if self.conns[key].state != State::Connecting {
            return;
        }
        let intended = intended.unwrap_or(now);
        self.count_sent(intended);
        let spec = self.spec;
        let c = &mut self.conns[key];
        c.session.begin_transaction(&spec, intended, now);
        if let (Io::Uring(ring), true) = (&mut self.io, c.linked) {
            ring.link_transaction(c, key, &spec, now);
        }
    }

    /// Queues as many requests as the pipeline allows (rr, stream) and writes them:
    /// requests to send again first, then new ones.
    pub(super) fn fill(&mut self, key: usize, now: u64) {
        let plan = self.plan;
        match self.conns[key].state {
            State::Open => {}
            // Closed by the server while idle, or failed and past its backoff: reopen for
            // the requests now due (they are sent once it is open).
            State::Closed if self.conns[key].retry_at <= now && self.has_work(key) => {
                return self.connect(key, now)
            }
            _ => return,
        }
        if !self.conns[key].session.ready() {
            // The handshake's flights only; requests once it is done (a read calls again).
            return self.flush(key, now);
        }
        while self.conns[key].session.in_flight() < plan.pipeline {
            let no_new = self.stopping || self.quota_reached();
            let retried = self.conns[key].session.take_retry();
            let p = match retried {
                Some(p) => {
                    // Overdue: it goes at once, whatever was held before.
                    self.conns[key].send_at = 0;
                    p
                }
                None => {
                    if no_new {
                        break;
                    }
                    let intended = match self.interval_ns {
                        Some(iv) => {
                            let c = &mut self.conns[key];
                            match c.backlog.first() {
                                // Due later than bytes waiting to go now, it would hold
                                // them back: it waits for a later fill.
                                Some(t) if t > now && c.session.transmit().is_some() => break,
                                Some(_) => c.backlog.pop(iv).expect("a due time"),
                                None => break,
                            }
                        }
                        None => now,
                    };
                    self.count_sent(intended);
                    // Released ahead of time (a batch window), it leaves when it is due.
                    self.conns[key].send_at = intended;
                    Pending::new(intended, now.max(intended))
                }
            };
            let spec = self.spec;
            self.conns[key].session.queue(&spec, p);
        }
        self.flush(key, now);
    }

    /// Writes pending output until done or the socket is full. Echo bytes are written
    /// straight from the pattern table; HTTP and hello from the request buffer.
    pub(super) fn flush(&mut self, key: usize, now: u64) {
        if let Io::Uring(ring) = &mut self.io {
            return ring.send(&mut self.conns[key], key);
        }
        let c = &mut self.conns[key];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        while let Some(buf) = c.session.transmit() {
            match stream.write(buf) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return self.fail(key, ErrorKind::Reset, &e, now);
                }
                Ok(n) => c.session.written(n, now, &mut self.rec),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.on_write_error(key, &e, now),
            }
        }
    }

    /// A write failed: the server ended the connection. What it sent before that is read
    /// first (it may complete responses); then the end is judged like any other: a reset
    /// with no FIN before it fails the connection, a close (EPIPE: a FIN came first) is
    /// handled as the server closing.
    fn on_write_error(&mut self, key: usize, e: &io::Error, now: u64) {
        let reset = e.kind() == io::ErrorKind::ConnectionReset;
        if !reset && e.kind() != io::ErrorKind::BrokenPipe {
            return self.fail(key, ErrorKind::Reset, e, now);
        }
        self.conns[key].write_reset = reset;
        let generation = self.rec.stats.counters.connects;
        self.on_readable(key, true);
        // Still the same socket, and reading did not end it: nothing will.
        let c = &self.conns[key];
        if self.rec.stats.counters.connects == generation && c.state == State::Open {
            self.fail(key, ErrorKind::Reset, e, now);
        }
    }

    pub(super) fn on_writable(&mut self, key: usize) {
        let now = crate::clock::now_ns();
        let c = &mut self.conns[key];
        if c.state == State::Connecting {
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    let kind = connect_error_kind(&e);
                    return self.fail(key, kind, &e, now);
                }
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(key, ErrorKind::ConnectFailed, &e, now),
            }
            let _ = stream.set_nodelay(true);
            return self.connected(key, now);
        }
        self.flush(key, now);
    }

    /// Connection `key`'s connect completed: it sends (rr and stream: the pipeline; crr:
    /// the transaction's request).
    pub(super) fn connected(&mut self, key: usize, now: u64) {
        let c = &mut self.conns[key];
        c.state = State::Open;
        c.connect_failures = 0;
        if !c.linked {
            c.session.connected(&self.spec, now);
        }
        if self.plan.mode != Mode::Crr {
            return self.fill(key, now);
        }
        if now >= self.shared.warmup_end {
            let _ = self
                .rec
                .stats
                .connect
                .record(now.saturating_sub(c.connect_started).max(1));
        }
        if c.linked {
            // Its request went out linked to the connect.
            return;
        }
        self.flush(key, now);
    }

    /// crr: closes the finished transaction and starts the next one.
    pub(super) fn end_transaction(&mut self, key: usize, now: u64) {
        self.close_notify(key);
        self.close(key);
        if self.stopping || self.quota_reached() {
            // What is left in the backlog is reported as unsent at the end.
            return;
        }
        if let Some(iv) = self.interval_ns {
            let next = self.conns[key].backlog.pop(iv);
            if next.is_some() {
                self.start_transaction(key, now, next);
            }
        } else {
            self.start_transaction(key, now, None);
        }
    }

    /// TLS, before a clean close: the session's `close_notify`, written if the socket takes
    /// it now; the close follows whatever happens.
    pub(super) fn close_notify(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.state != State::Open || !c.session.close_notify() {
            return;
        }
        match (&mut self.io, c.stream.as_mut(), c.session.transmit()) {
            (Io::Epoll { .. }, Some(stream), Some(bytes)) => drop(stream.write(bytes)),
            (Io::Uring(ring), ..) => ring.send(c, key),
            _ => {}
        }
    }

    pub(super) fn close(&mut self, key: usize) {
        let c = &mut self.conns[key];
        // Closing the socket takes it out of the epoll set (nothing else holds it), so no
        // epoll_ctl is spent on it: this is on every reconnect's path.
        drop(c.stream.take());
        if let Io::Uring(ring) = &mut self.io {
            ring.close(c, key);
        }
        c.state = State::Closed;
        c.session.reset();
    }

    /// Counts an error, fails the connection's requests in flight and schedules the
    /// connection to reopen: at once after a failure on an open connection (a reset, a
    /// response cut short, a timeout), after a backoff when connects keep failing.
    pub(super) fn fail(&mut self, key: usize, kind: ErrorKind, err: &io::Error, now: u64) {
        let c = &self.conns[key];
        self.last_error = Some(match c.source {
            Some(src) => format!("{src} to {}: {err}", c.addr),
            None => format!("{}: {err}", c.addr),
        });
        let connecting = c.state != State::Open;
        self.close(key);
        let c = &mut self.conns[key];
        c.session.fail(kind, now, &mut self.rec);
        if connecting {
            c.connect_failures += 1;
        }
        c.retry_at = now + backoff_ms(c.connect_failures) * 1_000_000;
        self.reopening.push(Reverse((c.retry_at, key)));
    }

    /// Reopens the failed connections whose `retry_at` has come, if they have work; one
    /// with none reopens when a request falls due (`fill`, `release_due`).
    pub(super) fn reopen_due(&mut self, now: u64) {
        while let Some(&Reverse((at, key))) = self.reopening.peek() {
            if at > now {
                break;
            }
            self.reopening.pop();
            let c = &self.conns[key];
            if c.state != State::Closed || c.retry_at > now {
                continue;
            }
            if self.plan.mode != Mode::Crr {
                if self.has_work(key) {
                    self.connect(key, now);
                }
            } else if self.stopping {
                // What is left in the backlog is reported as unsent at the end.
            } else if let Some(iv) = self.interval_ns {
                if let Some(t) = self.conns[key].backlog.pop(iv) {
                    self.start_transaction(key, now, Some(t));
                }
            } else {
                self.start_transaction(key, now, None);
            }
        }
    }

    /// The server closed the connection cleanly (a response that said so, HTTP/1.0, an
    /// idle connection closed, or a reused one closed before a byte of the next response):
    /// not an error. Requests it did not answer are sent again on a new connection, opened
    /// at once when there is something to send, else when the next request falls due (a
    /// connection opened only to idle would be closed again).
    pub(super) fn server_closed(&mut self, key: usize, now: u64) {
        if self.plan.mode == Mode::Crr {
            return self.end_transaction(key, now);
        }
        self.close(key);
        let c = &mut self.conns[key];
        c.session.requeue(&mut self.rec);
        c.reopen = true;
        c.retry_at = now;
        if self.has_work(key) {
            self.connect(key, now);
        }
    }

    /// Connection `key` has requests to send: some to send again, or (not stopping) new
    /// ones — always in closed loop, due ones in open loop.
    pub(super) fn has_work(&self, key: usize) -> bool {
        let c = &self.conns[key];
        c.session.has_retries()
            || (!self.stopping
                && !self.quota_reached()
                && (self.interval_ns.is_none() || c.backlog.len > 0))
    }
}

/// Starts connecting `c` (connection `key`) and registers its socket with `poll`.
fn epoll_connect(poll: &mut mio::Poll, c: &mut Conn, key: usize) -> io::Result<()> {
    let mut s = source::connect(c.source, c.addr)?;
    poll.registry()
        .register(&mut s, Token(key), Interest::READABLE | Interest::WRITABLE)?;
    c.stream = Some(s);
    Ok(())
}

/// The wait before the next connect after `connect_failures` failed ones in a row: none
/// after one (a connect that failed once is tried again at once), then 10 ms, 20 ms,
/// 40 ms, … up to a second.
fn backoff_ms(connect_failures: u32) -> u64 {
    match connect_failures {
        0 | 1 => 0,
        n => (FIRST_BACKOFF_MS << (n - 2).min(16)).min(MAX_BACKOFF_MS),
    }
}

pub(super) fn connect_error_kind(e: &io::Error) -> ErrorKind {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        ErrorKind::ConnectRefused
    } else {
        ErrorKind::ConnectFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_repeated_connect_failures_back_off_and_the_backoff_is_capped() {
        let waits: Vec<u64> = (0..12).map(backoff_ms).collect();
        assert_eq!(
            waits,
            [0, 0, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]
        );
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }
}
