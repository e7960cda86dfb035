//! Reading responses: how each protocol's bytes are recognised, verified and recorded as
//! completed requests, for one connection at a time.

use std::io::{self, Read};

use crate::client::{parse_http_response, pattern_mismatches};
use ringd::protocol::ProtocolKind;

use super::{Mode, State, Worker, READS_PER_TURN};
use crate::clock::now_ns;
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
        if c.rx_offset > c.tx_offset {
            return Err(ErrorKind::UnexpectedResponse);
        }
        while let Some(p) = c.inflight.front().copied() {
            if p.end_offset > c.rx_offset {
                break;
            }
            c.inflight.pop_front();
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
        let data: &[u8] = if buf.is_empty() {
            &self.scratch[..n]
        } else {
            buf.extend_from_slice(&self.scratch[..n]);
            &buf
        };
        let mut pos = 0;
        let mut result = Ok(());
        while pos < data.len() {
            match parse_http_response(&data[pos..], false) {
                Ok(Some(r)) => {
                    pos += r.len;
                    let Some(p) = c.inflight.pop_front() else {
                        result = Err(ErrorKind::UnexpectedResponse);
                        break;
                    };
                    if r.status != 200 {
                        self.rec.stats.counters.failed += 1;
                        result = Err(ErrorKind::UnexpectedResponse);
                        break;
                    }
                    if self.plan.verify && *c.body_len.get_or_insert(r.body_len) != r.body_len {
                        self.rec.stats.counters.failed += 1;
                        result = Err(ErrorKind::VerifyMismatch);
                        break;
                    }
                    self.rec.complete(p, now);
                }
                Ok(None) => break,
                Err(_) => {
                    result = Err(ErrorKind::UnexpectedResponse);
                    break;
                }
            }
        }
        if result.is_ok() {
            let rest = data[pos..].to_vec();
            buf.clear();
            buf.extend_from_slice(&rest);
            c.rbuf = buf;
            if self.plan.mode == Mode::Crr && c.inflight.is_empty() {
                self.end_transaction(key, now);
            }
        }
        result
    }

    fn on_eof(&mut self, key: usize, now: u64) {
        let plan = self.plan;
        let c = &mut self.conns[key];
        if plan.protocol == ProtocolKind::Hello {
            if let Some(p) = c.inflight.pop_front() {
                if plan.verify && c.rbuf != plan.greeting {
                    self.rec.stats.counters.failed += 1;
                    let e = io::Error::other("wrong greeting");
                    return self.fail(key, ErrorKind::VerifyMismatch, &e, now);
                }
                if c.rbuf.is_empty() {
                    self.rec.stats.counters.failed += 1;
                    let e = io::Error::other("closed without a reply");
                    return self.fail(key, ErrorKind::ShortResponse, &e, now);
                }
                self.rec.complete(p, now);
                return self.end_transaction(key, now);
            }
        }
        if c.inflight.is_empty() {
            // The server closed an idle connection (e.g. HTTP/1.0): reopen, not an error.
            self.close(key);
            if plan.mode == Mode::Crr {
                return self.end_transaction(key, now);
            }
            return self.connect(key, now);
        }
        let e = io::Error::from(io::ErrorKind::UnexpectedEof);
        self.fail(key, ErrorKind::ShortResponse, &e, now);
    }
}
