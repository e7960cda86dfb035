//! Reading responses: how each protocol's bytes are recognised, verified and recorded as
//! completed requests, for one connection at a time, and what the end of a connection
//! means — a close-delimited response completed, a server closing a connection it was done
//! with, or requests failed.

use std::io::{self, Read};

use ringd_common::ProtocolKind;

use super::{Conn, Mode, Recorder, State, Worker, READS_PER_TURN};
use crate::client::{pattern_mismatches, Response};
use crate::clock::now_ns;
use crate::plan::Plan;
use crate::stats::ErrorKind;

impl Worker<'_> {
    pub(super) fn on_readable(&mut self, key: usize, closed: bool) {
        let plan = self.plan;
        for _ in 0..READS_PER_TURN {
            let now = now_ns();
            let measured = now >= self.shared.warmup_end;
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
            if measured {
                self.rec.stats.counters.bytes_received += n as u64;
            }
            let result = match plan.protocol {
                ProtocolKind::Echo => self.on_echo_bytes(key, n, now),
                ProtocolKind::Http => self.on_http_bytes(key, n, now),
                ProtocolKind::Hello => {
                    self.conns[key].rbuf.extend_from_slice(&self.scratch[..n]);
                    Ok(())
                }
            };
            if let Err(kind) = result {
                let e = io::Error::other(kind.name());
                return self.fail(key, kind, &e, now);
            }
            if self.conns[key].state != State::Open {
                return;
            }
            if plan.mode != Mode::Crr {
                self.fill(key, now);
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

    fn on_echo_bytes(&mut self, key: usize, n: usize, now: u64) -> Result<(), ErrorKind> {
        let c = &mut self.conns[key];
        if self.plan.verify {
            let bad = pattern_mismatches(c.id, c.rx_offset, &self.scratch[..n]) as u64;
            if bad > 0 {
                self.rec.stats.counters.mismatched_bytes += bad;
                return Err(ErrorKind::VerifyMismatch);
            }
        }
        c.rx_offset += n as u64;
        if c.rx_offset > c.tx_written {
            return Err(ErrorKind::UnexpectedResponse);
        }
        while let Some(p) = c.inflight.front().copied() {
            if p.end_offset > c.rx_offset {
                break;
            }
            c.inflight.pop_front();
            c.rx_done = p.end_offset;
            c.answered += 1;
            c.failures = 0;
            self.rec.complete(p, now);
        }
        if self.plan.mode == Mode::Crr && self.conns[key].inflight.is_empty() {
            self.end_transaction(key, now);
        }
        Ok(())
    }

    fn on_http_bytes(&mut self, key: usize, n: usize, now: u64) -> Result<(), ErrorKind> {
        let c = &mut self.conns[key];
        let mut buf = std::mem::take(&mut c.rbuf);
        let from_scratch = buf.is_empty();
        if !from_scratch {
            buf.extend_from_slice(&self.scratch[..n]);
        }
        let data: &[u8] = if from_scratch {
            &self.scratch[..n]
        } else {
            &buf
        };
        let mut pos = 0;
        let mut server_closes = false;
        loop {
            let (used, response) = c
                .reader
                .read(&data[pos..])
                .map_err(|_| ErrorKind::UnexpectedResponse)?;
            pos += used;
            let Some(r) = response else { break };
            http_response(&mut self.rec, self.plan, self.shared.warmup_end, c, r, now)?;
            if r.close {
                // Anything after a response that closes the connection is not for us.
                server_closes = true;
                break;
            }
        }
        if !server_closes {
            if from_scratch {
                buf.extend_from_slice(&self.scratch[pos..n]);
            } else {
                buf.drain(..pos);
            }
            c.rbuf = buf;
        }
        if server_closes {
            self.server_closed(key, now);
        } else if self.plan.mode == Mode::Crr && self.conns[key].inflight.is_empty() {
            self.end_transaction(key, now);
        }
        Ok(())
    }

    fn on_eof(&mut self, key: usize, now: u64) {
        let plan = self.plan;
        let c = &mut self.conns[key];
        if c.write_reset {
            let e = io::Error::from(io::ErrorKind::ConnectionReset);
            return self.fail(key, ErrorKind::Reset, &e, now);
        }
        match plan.protocol {
            ProtocolKind::Hello => {
                if let Some(p) = c.inflight.pop_front() {
                    if c.rbuf.is_empty() {
                        self.rec.stats.counters.failed += 1;
                        let e = io::Error::other("closed without a reply");
                        return self.fail(key, ErrorKind::ShortResponse, &e, now);
                    }
                    if plan.verify && c.rbuf != plan.greeting {
                        self.rec.failed_check(ErrorKind::VerifyMismatch, now);
                    } else {
                        c.failures = 0;
                        self.rec.complete(p, now);
                    }
                    return self.end_transaction(key, now);
                }
            }
            ProtocolKind::Http => {
                // A response whose body lasts until the close is complete now.
                if let Some(r) = c.reader.eof() {
                    if let Err(kind) =
                        http_response(&mut self.rec, plan, self.shared.warmup_end, c, r, now)
                    {
                        let e = io::Error::other(kind.name());
                        return self.fail(key, kind, &e, now);
                    }
                    return self.server_closed(key, now);
                }
            }
            ProtocolKind::Echo => {}
        }
        let c = &self.conns[key];
        let response_begun = match plan.protocol {
            ProtocolKind::Echo => c.rx_offset > c.rx_done,
            ProtocolKind::Http => !c.rbuf.is_empty() || !c.reader.at_start(),
            ProtocolKind::Hello => !c.rbuf.is_empty(),
        };
        if c.inflight.is_empty() || (c.answered > 0 && !response_begun) {
            return self.server_closed(key, now);
        }
        let e = io::Error::from(io::ErrorKind::UnexpectedEof);
        self.fail(key, ErrorKind::ShortResponse, &e, now);
    }
}

/// One whole HTTP response on connection `c`: matched with the oldest request in flight,
/// counted by status, checked, recorded. A failed check fails that request only; the
/// connection goes on.
fn http_response(
    rec: &mut Recorder,
    plan: &Plan,
    warmup_end: u64,
    c: &mut Conn,
    r: Response,
    now: u64,
) -> Result<(), ErrorKind> {
    let Some(p) = c.inflight.pop_front() else {
        return Err(ErrorKind::UnexpectedResponse);
    };
    c.answered += 1;
    c.failures = 0;
    if p.intended >= warmup_end {
        rec.stats.counters.status(r.status);
    }
    if plan
        .expect_status
        .as_ref()
        .is_some_and(|s| !s.contains(r.status))
    {
        rec.failed_check(ErrorKind::UnexpectedStatus, now);
    } else if plan.verify && *c.body_len.get_or_insert(r.body_len) != r.body_len {
        rec.failed_check(ErrorKind::VerifyMismatch, now);
    } else {
        rec.complete(p, now);
    }
    Ok(())
}
