//! One load connection's client side, with no socket and no clock: the requests it has in
//! flight or must send again, the bytes to write next, how the bytes that come back are
//! framed (echo stream offsets, HTTP responses, the hello reply), checked (`--verify`,
//! `--expect-status`) and recorded with their latency from the intended send time, and what
//! the end of a connection means. The event loop that owns the socket and the clock (the
//! mio worker, or any other engine) drives it.
//!
//! With TLS, a [`Tls`] sits between the socket bytes and all of that: what the engine
//! writes and reads are records, and the framing sees plaintext. Without it, the bytes go
//! straight through, as they always did (no copy, one `Option` check per call).

use std::collections::VecDeque;

use ringd_common::ProtocolKind;

use super::tls::{Tls, TlsClient};
use super::{pattern_mismatches, pattern_window, Response, ResponseReader};
use crate::args::StatusSet;
use crate::stats::{ErrorKind, Recorder};

mod secure;

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// When the request should have been sent (open loop) or was first sent (closed loop).
    /// Warm-up or measured is decided by this time, and latency counts from it.
    pub intended: u64,
    /// When it was first sent (crr: when its connection was started); service time counts
    /// from it.
    pub sent: u64,
    /// Echo: the stream offset at which its response is complete.
    pub end_offset: u64,
}

impl Pending {
    /// A request meant for `intended`, sent at `sent`.
    pub fn new(intended: u64, sent: u64) -> Self {
        Pending {
            intended,
            sent,
            end_offset: 0,
        }
    }
}

/// What every session of a run sends and checks: the part of the plan a connection's
/// client side needs, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// How responses are framed.
    pub protocol: ProtocolKind,
    /// crr: one request per socket, its bytes queued once the connect completes.
    pub crr: bool,
    /// Echo: bytes per request (stream: per chunk).
    pub size: u64,
    /// `--verify`: echoed bytes against the pattern, the hello greeting, and (HTTP) the
    /// same body length every time.
    pub verify: bool,
    /// HTTP and hello: the request bytes, one per target.
    pub payloads: &'a [Vec<u8>],
    /// Hello: the reply `--verify` expects.
    pub greeting: &'a [u8],
    /// HTTP: statuses that count as success; `None` takes any.
    pub expect_status: Option<&'a StatusSet>,
    /// TLS on every socket; `None`: plain TCP.
    pub tls: Option<&'a TlsClient>,
}

/// What the driver does next with the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep reading and writing on it.
    Continue,
    /// The server is done with it (a response said so, a close-delimited body ended, or it
    /// closed a connection that owed nothing): close it, then [`Session::requeue`] in rr
    /// and stream and open a new one for what is left; in crr the transaction is over.
    ServerClosed,
    /// crr: the transaction's response is complete; close the socket.
    TransactionDone,
    /// The connection failed: close it and [`Session::fail`] with this kind; the text says
    /// why, for the run's last error.
    Failed(ErrorKind, &'static str),
}

/// One connection's client side across every socket it opens.
///
/// Call order, for each socket:
/// 1. [`Session::reset`] before it connects, and when it closes (the requests in flight or
///    to retry stay; resetting twice does nothing more).
/// 2. crr: [`Session::begin_transaction`] before the connect. [`Session::connected`] once
///    it completes (TLS: the handshake starts; crr: the request is queued). rr and
///    stream: then [`Session::queue`] up to the pipeline depth, [`Session::take_retry`]
///    first.
/// 3. While [`Session::transmit`] has bytes, write them and report each write to
///    [`Session::written`].
/// 4. Every read to [`Session::received`], the end of the stream to [`Session::eof`]; act
///    on the [`Next`] they return.
/// 5. A socket error or a timeout: [`Session::fail`]. A server close in rr or stream:
///    [`Session::requeue`], then a new socket if [`Session::has_retries`] or there are new
///    requests to send.
/// 6. Closing a socket cleanly (a crr transaction done, the end of the run): first
///    [`Session::close_notify`], and what [`Session::transmit`] then has is written if the
///    socket takes it.
///
/// Times are nanoseconds on the driver's clock; every figure goes to the [`Recorder`]
/// passed in.
#[derive(Debug)]
pub struct Session {
    /// Global connection id: the seed of its echo pattern.
    id: u64,
    /// Index of its target, and of its request in [`Spec::payloads`].
    target: usize,
    /// HTTP `HEAD`: responses carry no body.
    head: bool,
    /// Sent on this socket and not answered, oldest first.
    inflight: VecDeque<Pending>,
    /// To send again on the next socket, oldest first.
    retry: VecDeque<Pending>,
    /// Responses completed on this socket: when the server closes a connection that
    /// already answered, the requests it left unanswered are sent again, not failed.
    answered: u64,
    /// Failures since the last response (dead-run detection).
    failures: u32,
    /// HTTP and hello: request bytes, and how many are written.
    out: Vec<u8>,
    out_pos: usize,
    /// Echo: stream bytes queued for sending, and written so far.
    tx_queued: u64,
    tx_written: u64,
    /// Echo: stream bytes received, and where the last completed response ended.
    rx_offset: u64,
    rx_done: u64,
    /// HTTP: bytes of a response head or chunk line not yet whole; hello: the reply.
    rbuf: Vec<u8>,
    reader: ResponseReader,
    /// HTTP --verify: the body length the first response had (kept across sockets).
    body_len: Option<u64>,
    /// TLS: the socket's, from its connect to its close. While it is there, `out_pos` and
    /// `tx_written` count plaintext sealed into records, and what is written is records.
    tls: Option<Box<Tls>>,
}

impl Session {
    pub fn new(id: u64, target: usize, head: bool) -> Self {
        Session {
            id,
            target,
            head,
            inflight: VecDeque::new(),
            retry: VecDeque::new(),
            answered: 0,
            failures: 0,
            out: Vec::new(),
            out_pos: 0,
            tx_queued: 0,
            tx_written: 0,
            rx_offset: 0,
            rx_done: 0,
            rbuf: Vec::new(),
            reader: ResponseReader::new(head),
            body_len: None,
            tls: None,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn target(&self) -> usize {
        self.target
    }

    /// Forgets the socket's stream state: bytes not written, a response partly read.
    pub fn reset(&mut self) {
        self.answered = 0;
        self.out.clear();
        self.out_pos = 0;
        self.tx_queued = 0;
        self.tx_written = 0;
        self.rx_offset = 0;
        self.rx_done = 0;
        self.rbuf.clear();
        self.reader = ResponseReader::new(self.head);
        self.tls = None;
    }

    /// rr and stream: queues request `p` and its bytes on the open socket.
    pub fn queue(&mut self, spec: &Spec, mut p: Pending) {
        match spec.protocol {
            ProtocolKind::Echo => {
                self.tx_queued += spec.size;
                p.end_offset = self.tx_queued;
            }
            _ => self.out.extend_from_slice(&spec.payloads[self.target]),
        }
        self.inflight.push_back(p);
        self.seal();
    }

    /// crr: the transaction's request, in flight from the start of its connect.
    pub fn begin_transaction(&mut self, spec: &Spec, intended: u64, now: u64) {
        self.inflight.push_back(Pending {
            intended,
            sent: now,
            end_offset: spec.size,
        });
    }

    /// The socket connected at `now`: TLS starts its handshake (its ClientHello is the
    /// first thing to write); crr queues the transaction's request.
    pub fn connected(&mut self, spec: &Spec, now: u64) {
        if let Some(client) = spec.tls {
            self.tls = Some(Tls::new(client, self.target, now));
        }
        if !spec.crr {
            return;
        }
        match spec.protocol {
            ProtocolKind::Echo => self.tx_queued = spec.size,
            _ => self.out.extend_from_slice(&spec.payloads[self.target]),
        }
        self.seal();
    }

    /// The oldest request to send again, if any.
    pub fn take_retry(&mut self) -> Option<Pending> {
        self.retry.pop_front()
    }

    pub fn has_retries(&self) -> bool {
        !self.retry.is_empty()
    }

    /// New requests may be queued: no TLS handshake is under way (a request queued during
    /// one would carry the handshake in its latency).
    pub fn ready(&self) -> bool {
        self.tls.as_ref().is_none_or(|t| t.handshake_done())
    }

    /// Requests sent on this socket and not answered.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Requests sent and not answered: in flight, or waiting to be sent again.
    pub fn outstanding(&self) -> usize {
        self.inflight.len() + self.retry.len()
    }

    /// When the oldest request in flight was sent (timeouts count from it).
    pub fn oldest_sent(&self) -> Option<u64> {
        self.inflight.front().map(|p| p.sent)
    }

    /// The intended send times of every request not answered.
    pub fn unanswered(&self) -> impl Iterator<Item = u64> + '_ {
        self.inflight.iter().chain(&self.retry).map(|p| p.intended)
    }

    /// Failed since its last response.
    pub fn failing(&self) -> bool {
        self.failures > 0
    }

    /// The bytes to write next: the request buffer, or the echo pattern straight from its
    /// table (TLS: the records sealed); `None` when everything queued is written.
    pub fn transmit(&self) -> Option<&[u8]> {
        if let Some(tls) = &self.tls {
            return tls.pending();
        }
        if self.out_pos < self.out.len() {
            Some(&self.out[self.out_pos..])
        } else if self.tx_written < self.tx_queued {
            let left = self.tx_queued - self.tx_written;
            Some(pattern_window(self.id, self.tx_written, left))
        } else {
            None
        }
    }

    /// `n` bytes of [`Session::transmit`] were written.
    pub fn written(&mut self, n: usize, now: u64, rec: &mut Recorder) {
        if let Some(tls) = self.tls.as_mut() {
            tls.written(n);
            self.seal();
        } else if self.out_pos < self.out.len() {
            self.out_pos += n;
            if self.out_pos >= self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            }
        } else {
            self.tx_written += n as u64;
        }
        rec.bytes_sent(n as u64, now);
    }

    /// Bytes read from the socket: frames, checks and records the responses they complete.
    pub fn received(&mut self, spec: &Spec, data: &[u8], now: u64, rec: &mut Recorder) -> Next {
        rec.bytes_received(data.len() as u64, now);
        if self.tls.is_some() {
            return self.records(spec, data, now, rec);
        }
        self.plaintext(spec, data, now, rec)
    }

    /// Plaintext from the server: frames, checks and records the responses it completes.
    pub(super) fn plaintext(
        &mut self,
        spec: &Spec,
        data: &[u8],
        now: u64,
        rec: &mut Recorder,
    ) -> Next {
        match spec.protocol {
            ProtocolKind::Echo => self.echo_bytes(spec, data, now, rec),
            ProtocolKind::Http => self.http_bytes(spec, data, now, rec),
            ProtocolKind::Hello => {
                self.rbuf.extend_from_slice(data);
                Next::Continue
            }
        }
    }

    fn echo_bytes(&mut self, spec: &Spec, data: &[u8], now: u64, rec: &mut Recorder) -> Next {
        if spec.verify {
            let bad = pattern_mismatches(self.id, self.rx_offset, data) as u64;
            if bad > 0 {
                rec.stats.counters.mismatched_bytes += bad;
                return failed(ErrorKind::VerifyMismatch);
            }
        }
        self.rx_offset += data.len() as u64;
        if self.rx_offset > self.tx_written {
            return failed(ErrorKind::UnexpectedResponse);
        }
        while let Some(p) = self.inflight.front().copied() {
            if p.end_offset > self.rx_offset {
                break;
            }
            self.inflight.pop_front();
            self.rx_done = p.end_offset;
            self.answered += 1;
            self.failures = 0;
            rec.complete(p.intended, p.sent, now);
        }
        self.after_responses(spec)
    }

    fn http_bytes(&mut self, spec: &Spec, data: &[u8], now: u64, rec: &mut Recorder) -> Next {
        // The common case, a read that starts with a response, parses `data` in place; only
        // a head or chunk line cut by the read is kept.
        let mut buf = std::mem::take(&mut self.rbuf);
        let from_data = buf.is_empty();
        if !from_data {
            buf.extend_from_slice(data);
        }
        let bytes: &[u8] = if from_data { data } else { &buf };
        let mut pos = 0;
        loop {
            let Ok((used, response)) = self.reader.read(&bytes[pos..]) else {
                return failed(ErrorKind::UnexpectedResponse);
            };
            pos += used;
            let Some(r) = response else { break };
            if let Err(kind) = self.http_response(spec, r, now, rec) {
                return failed(kind);
            }
            if r.close {
                // Anything after a response that closes the connection is not for us.
                return Next::ServerClosed;
            }
        }
        if from_data {
            buf.extend_from_slice(&data[pos..]);
        } else {
            buf.drain(..pos);
        }
        self.rbuf = buf;
        self.after_responses(spec)
    }

    /// crr: the transaction is over once nothing is in flight.
    fn after_responses(&self, spec: &Spec) -> Next {
        if spec.crr && self.inflight.is_empty() {
            Next::TransactionDone
        } else {
            Next::Continue
        }
    }

    /// One whole HTTP response: matched with the oldest request in flight, counted by
    /// status, checked, recorded. A failed check fails that request only; the connection
    /// goes on. A response nothing asked for fails the connection.
    fn http_response(
        &mut self,
        spec: &Spec,
        r: Response,
        now: u64,
        rec: &mut Recorder,
    ) -> Result<(), ErrorKind> {
        let Some(p) = self.inflight.pop_front() else {
            return Err(ErrorKind::UnexpectedResponse);
        };
        self.answered += 1;
        self.failures = 0;
        if p.intended >= rec.warmup_end {
            rec.stats.counters.status(r.status);
        }
        if spec.expect_status.is_some_and(|s| !s.contains(r.status)) {
            rec.failed_check(ErrorKind::UnexpectedStatus, now);
        } else if spec.verify && *self.body_len.get_or_insert(r.body_len) != r.body_len {
            rec.failed_check(ErrorKind::VerifyMismatch, now);
        } else {
            rec.complete(p.intended, p.sent, now);
        }
        Ok(())
    }

    /// The server closed its side: what that completes (a hello reply, a close-delimited
    /// body), and whether it was the server being done or a response cut short. TLS: an
    /// end before the handshake is done fails it; one without the server's `close_notify`
    /// completes nothing (a truncation would pass for a whole reply).
    pub fn eof(&mut self, spec: &Spec, now: u64, rec: &mut Recorder) -> Next {
        match &self.tls {
            None => self.end_of_stream(spec, now, rec, true),
            Some(tls) if !tls.handshake_done() => Next::Failed(ErrorKind::Tls, CLOSED_IN_HANDSHAKE),
            Some(_) => self.end_of_stream(spec, now, rec, false),
        }
    }

    /// The end of the server's stream; `delimits` when it may end a response delimited by
    /// the close (a plain FIN, a TLS `close_notify`).
    pub(super) fn end_of_stream(
        &mut self,
        spec: &Spec,
        now: u64,
        rec: &mut Recorder,
        delimits: bool,
    ) -> Next {
        const TRUNCATED: Next = Next::Failed(
            ErrorKind::ShortResponse,
            "unexpected end of file (no TLS close_notify)",
        );
        match spec.protocol {
            ProtocolKind::Hello if !delimits && !self.inflight.is_empty() => return TRUNCATED,
            ProtocolKind::Hello => {
                if let Some(p) = self.inflight.pop_front() {
                    if self.rbuf.is_empty() {
                        rec.stats.counters.failed += 1;
                        return Next::Failed(ErrorKind::ShortResponse, "closed without a reply");
                    }
                    if spec.verify && self.rbuf != spec.greeting {
                        rec.failed_check(ErrorKind::VerifyMismatch, now);
                    } else {
                        self.failures = 0;
                        rec.complete(p.intended, p.sent, now);
                    }
                    return Next::TransactionDone;
                }
            }
            ProtocolKind::Http => {
                // A response whose body lasts until the close is complete now.
                if let Some(r) = self.reader.eof() {
                    if !delimits {
                        return TRUNCATED;
                    }
                    return match self.http_response(spec, r, now, rec) {
                        Ok(()) => Next::ServerClosed,
                        Err(kind) => failed(kind),
                    };
                }
            }
            ProtocolKind::Echo => {}
        }
        let response_begun = match spec.protocol {
            ProtocolKind::Echo => self.rx_offset > self.rx_done,
            ProtocolKind::Http => !self.rbuf.is_empty() || !self.reader.at_start(),
            ProtocolKind::Hello => !self.rbuf.is_empty(),
        };
        if self.inflight.is_empty() || (self.answered > 0 && !response_begun) {
            return Next::ServerClosed;
        }
        Next::Failed(ErrorKind::ShortResponse, "unexpected end of file")
    }

    /// The connection failed: counts the error, and every request in flight as failed.
    pub fn fail(&mut self, kind: ErrorKind, now: u64, rec: &mut Recorder) {
        rec.error(kind, now);
        rec.stats.counters.failed += self.inflight.len() as u64;
        self.inflight.clear();
        self.failures += 1;
    }

    /// The server closed cleanly: the requests it left unanswered go to the front of the
    /// retry queue, in order, counted as retried.
    pub fn requeue(&mut self, rec: &mut Recorder) {
        rec.stats.counters.retried += self.inflight.len() as u64;
        while let Some(p) = self.inflight.pop_back() {
            self.retry.push_front(p);
        }
    }
}

/// Why a connection whose server went before the TLS handshake was done failed.
const CLOSED_IN_HANDSHAKE: &str = "TLS: the server closed the connection during the handshake";

fn failed(kind: ErrorKind) -> Next {
    Next::Failed(kind, kind.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::pattern_byte;

    const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    fn spec<'a>(protocol: ProtocolKind, payloads: &'a [Vec<u8>]) -> Spec<'a> {
        Spec {
            protocol,
            crr: false,
            size: 4,
            verify: true,
            payloads,
            greeting: b"Hello",
            expect_status: None,
            tls: None,
        }
    }

    fn pattern(id: u64, from: u64, len: u64) -> Vec<u8> {
        (from..from + len).map(|i| pattern_byte(id, i)).collect()
    }

    /// Queues a request and writes everything queued.
    fn send(s: &mut Session, spec: &Spec, p: Pending, rec: &mut Recorder) {
        s.queue(spec, p);
        while let Some(n) = s.transmit().map(<[u8]>::len) {
            s.written(n, p.sent, rec);
        }
    }

    #[test]
    fn echo_responses_complete_at_their_offsets_timed_from_the_intended_send() {
        let spec = spec(ProtocolKind::Echo, &[]);
        let (mut s, mut rec) = (Session::new(7, 0, false), Recorder::new(0, 0));
        s.queue(&spec, Pending::new(100, 150));
        s.queue(&spec, Pending::new(200, 200));
        assert_eq!(s.transmit(), Some(&pattern(7, 0, 8)[..]));
        s.written(8, 200, &mut rec);
        assert_eq!(s.transmit(), None);
        let echo = pattern(7, 0, 8);
        assert_eq!(
            s.received(&spec, &echo[..6], 1000, &mut rec),
            Next::Continue
        );
        assert_eq!(rec.stats.counters.completed, 1);
        assert_eq!(
            (rec.stats.latency.max(), rec.stats.service.max()),
            (900, 850)
        );
        assert_eq!(
            s.received(&spec, &echo[6..], 1300, &mut rec),
            Next::Continue
        );
        assert_eq!(rec.stats.counters.completed, 2);
        assert_eq!(rec.stats.latency.max(), 1100);
        assert_eq!(s.in_flight(), 0);
        let c = &rec.stats.counters;
        assert_eq!((c.bytes_sent, c.bytes_received), (8, 8));
    }

    #[test]
    fn echo_that_differs_or_runs_ahead_fails_the_connection() {
        let spec = spec(ProtocolKind::Echo, &[]);
        let (mut s, mut rec) = (Session::new(1, 0, false), Recorder::new(0, 0));
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        let mut echo = pattern(1, 0, 4);
        echo[2] ^= 0xff;
        let next = s.received(&spec, &echo, 10, &mut rec);
        assert_eq!(
            next,
            Next::Failed(ErrorKind::VerifyMismatch, "verify_mismatch")
        );
        assert_eq!(rec.stats.counters.mismatched_bytes, 1);
        s.fail(ErrorKind::VerifyMismatch, 10, &mut rec);
        assert_eq!(rec.stats.counters.failed, 1);
        assert_eq!(rec.stats.counters.errors_of(ErrorKind::VerifyMismatch), 1);
        assert!(s.failing());

        s.reset();
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        let next = s.received(&spec, &pattern(1, 0, 5), 20, &mut rec);
        assert_eq!(next, failed(ErrorKind::UnexpectedResponse));
    }

    #[test]
    fn a_response_that_closes_sends_the_requests_behind_it_again() {
        let payloads = [b"GET / HTTP/1.1\r\n\r\n".to_vec()];
        let spec = spec(ProtocolKind::Http, &payloads);
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(0, 0));
        for t in [1, 2, 3] {
            send(&mut s, &spec, Pending::new(t, t), &mut rec);
        }
        let mut data = OK.to_vec();
        data.extend_from_slice(OK_CLOSE);
        data.extend_from_slice(OK);
        assert_eq!(s.received(&spec, &data, 10, &mut rec), Next::ServerClosed);
        assert_eq!(rec.stats.counters.completed, 2);
        s.requeue(&mut rec);
        assert_eq!(rec.stats.counters.retried, 1);
        assert_eq!(s.take_retry(), Some(Pending::new(3, 3)));
        assert!(!s.has_retries());
    }

    #[test]
    fn requeued_requests_keep_their_order_ahead_of_older_retries() {
        let payloads = [b"GET / HTTP/1.1\r\n\r\n".to_vec()];
        let spec = spec(ProtocolKind::Http, &payloads);
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(0, 0));
        s.queue(&spec, Pending::new(9, 9));
        s.requeue(&mut rec);
        s.queue(&spec, Pending::new(1, 1));
        s.queue(&spec, Pending::new(2, 2));
        s.requeue(&mut rec);
        assert_eq!(s.unanswered().collect::<Vec<_>>(), [1, 2, 9]);
        assert_eq!(s.outstanding(), 3);
        assert_eq!(rec.stats.counters.retried, 3);
    }

    #[test]
    fn a_status_outside_expect_status_fails_the_request_and_not_the_connection() {
        let payloads = [b"GET / HTTP/1.1\r\n\r\n".to_vec()];
        let success = StatusSet::success();
        let spec = Spec {
            expect_status: Some(&success),
            ..spec(ProtocolKind::Http, &payloads)
        };
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(0, 0));
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        let error = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(s.received(&spec, error, 10, &mut rec), Next::Continue);
        // A head cut by the read is kept until it is whole.
        assert_eq!(s.received(&spec, &OK[..20], 11, &mut rec), Next::Continue);
        assert_eq!(s.received(&spec, &OK[20..], 12, &mut rec), Next::Continue);
        let c = &rec.stats.counters;
        assert_eq!((c.failed, c.completed), (1, 1));
        assert_eq!(c.errors_of(ErrorKind::UnexpectedStatus), 1);
        assert_eq!((c.status_codes[500], c.status_codes[200]), (1, 1));
    }

    #[test]
    fn the_end_of_the_stream_completes_ends_or_cuts_short() {
        let payloads = [b"GET / HTTP/1.1\r\n\r\n".to_vec()];
        let spec = spec(ProtocolKind::Http, &payloads);
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(0, 0));
        // A body that lasts until the close.
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        let until_close = b"HTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(s.received(&spec, until_close, 5, &mut rec), Next::Continue);
        assert_eq!(s.eof(&spec, 6, &mut rec), Next::ServerClosed);
        assert_eq!(rec.stats.counters.completed, 1);
        // An answered connection closed before a byte of the next response: a reconnect.
        s.reset();
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        assert_eq!(s.received(&spec, OK, 7, &mut rec), Next::Continue);
        assert_eq!(s.eof(&spec, 8, &mut rec), Next::ServerClosed);
        // A response cut short fails the connection, even one that follows an answer.
        let mut s = Session::new(0, 0, false);
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        send(&mut s, &spec, Pending::new(0, 0), &mut rec);
        let mut data = OK.to_vec();
        data.extend_from_slice(&OK[..OK.len() - 1]);
        assert_eq!(s.received(&spec, &data, 9, &mut rec), Next::Continue);
        assert_eq!(
            s.eof(&spec, 10, &mut rec),
            Next::Failed(ErrorKind::ShortResponse, "unexpected end of file")
        );
    }

    #[test]
    fn crr_hello_is_one_transaction_per_socket() {
        let payloads = [b"hello".to_vec()];
        let spec = Spec {
            crr: true,
            ..spec(ProtocolKind::Hello, &payloads)
        };
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(0, 0));
        s.begin_transaction(&spec, 5, 5);
        assert_eq!(
            s.transmit(),
            None,
            "nothing is sent before the connect completes"
        );
        s.connected(&spec, 0);
        assert_eq!(s.transmit(), Some(&b"hello"[..]));
        s.written(5, 6, &mut rec);
        assert_eq!(s.received(&spec, b"Hello", 7, &mut rec), Next::Continue);
        assert_eq!(s.eof(&spec, 8, &mut rec), Next::TransactionDone);
        assert_eq!(rec.stats.counters.completed, 1);
        // The wrong greeting fails the check; no reply at all fails the connection.
        s.reset();
        s.begin_transaction(&spec, 10, 10);
        s.connected(&spec, 0);
        assert_eq!(s.received(&spec, b"Bye", 11, &mut rec), Next::Continue);
        assert_eq!(s.eof(&spec, 12, &mut rec), Next::TransactionDone);
        assert_eq!(rec.stats.counters.errors_of(ErrorKind::VerifyMismatch), 1);
        s.reset();
        s.begin_transaction(&spec, 20, 20);
        s.connected(&spec, 0);
        let next = s.eof(&spec, 21, &mut rec);
        assert_eq!(
            next,
            Next::Failed(ErrorKind::ShortResponse, "closed without a reply")
        );
        assert_eq!(rec.stats.counters.failed, 2);
    }

    #[test]
    fn crr_echo_ends_its_transaction_with_its_response() {
        let spec = Spec {
            crr: true,
            ..spec(ProtocolKind::Echo, &[])
        };
        let (mut s, mut rec) = (Session::new(3, 0, false), Recorder::new(0, 0));
        s.begin_transaction(&spec, 0, 0);
        s.connected(&spec, 0);
        assert_eq!(s.transmit(), Some(&pattern(3, 0, 4)[..]));
        s.written(4, 1, &mut rec);
        let echo = pattern(3, 0, 4);
        assert_eq!(s.received(&spec, &echo[..3], 2, &mut rec), Next::Continue);
        assert_eq!(
            s.received(&spec, &echo[3..], 3, &mut rec),
            Next::TransactionDone
        );
    }

    #[test]
    fn warm_up_requests_are_counted_apart() {
        let spec = spec(ProtocolKind::Echo, &[]);
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(1000, 0));
        send(&mut s, &spec, Pending::new(999, 999), &mut rec);
        send(&mut s, &spec, Pending::new(1000, 1000), &mut rec);
        s.received(&spec, &pattern(0, 0, 8), 2000, &mut rec);
        let c = &rec.stats.counters;
        assert_eq!((c.warmup_completed, c.completed), (1, 1));
        assert_eq!(rec.stats.latency.len(), 1);
    }
}
