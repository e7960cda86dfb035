//! Connections: between the engine (which moves bytes) and the protocol (which decides what
//! they mean). A [`Connection`] is one state machine with no I/O: the engine tells it what
//! happened (bytes arrived, bytes were sent, EOF, an error, the time, a drain) and asks it
//! what to do (send this output, send the FIN, keep reading or not, close, when to call back).
//! Every engine drives this same code, so a response is never cut, a `408` or `503` goes out
//! in order behind whatever was already queued, and idle means the same everywhere.
//!
//! A connection's life, one [`Phase`] at a time:
//!
//! | phase | reads | sends | leaves when |
//! |---|---|---|---|
//! | `Open` | yes (paused above `--max-pending-output`) | responses | the protocol closes, EOF, a timeout, a drain's grace ends → `Closing`; an error or a stalled reader → `Closed` |
//! | `Closing` | no (input dropped) | what is queued | the kernel took the last byte: the engine sends the FIN → `Lingering` (or `Closed` if the peer already sent its FIN) |
//! | `Lingering` | yes, dropped | nothing | the peer's EOF, or the linger deadline → `Closed` |
//! | `Closed` | no | no | the engine closes the socket |
//!
//! The close reason is set on the first step out of `Open`; a cut (abort) replaces it.
//!
//! # Driving a connection
//!
//! Events go in through `handle_*`, actions come out of [`Connection::poll_action`], and
//! every engine keeps one order, after each batch of events:
//!
//! 1. **Events**: [`handle_input`](Connection::handle_input) (bytes read; answers
//!    [`Input::Echo`] when the engine must send those very bytes back),
//!    [`handle_sent`](Connection::handle_sent) (the kernel accepted bytes),
//!    [`handle_eof`](Connection::handle_eof), [`handle_error`](Connection::handle_error),
//!    [`handle_fin_sent`](Connection::handle_fin_sent),
//!    [`handle_input_unread`](Connection::handle_input_unread),
//!    [`handle_drain`](Connection::handle_drain), and
//!    [`handle_timeout`](Connection::handle_timeout) once the time passed
//!    [`poll_timeout`](Connection::poll_timeout); [`abort`](Connection::abort) cuts it.
//! 2. **Actions**: [`poll_action`](Connection::poll_action) until it answers `None` or
//!    [`Action::Close`]: send this output (in order), send the FIN, close the socket.
//! 3. **Reading**: read while [`reading`](Connection::reading) says so, at most
//!    [`room`](Connection::room) bytes where the engine can cap a read.
//! 4. **Time**: call back at [`poll_timeout`](Connection::poll_timeout).

mod secure;
pub mod stats;
pub mod timeouts;

use crate::protocol::{ProtocolSpec, Session};
use crate::tls::Tls;
pub use stats::{CloseReason, WorkerStats};
pub use timeouts::{Clock, Limits, Millis};

/// Where a connection is in its life (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests and sending responses.
    Open,
    /// No more input wanted; the output is flushed, then the FIN is sent.
    Closing,
    /// The FIN is sent; input is read and dropped until the peer's EOF or the linger
    /// deadline, so that closing never resets a peer that still reads our last bytes.
    Lingering,
    /// Done: the engine closes the socket.
    Closed,
}

/// What the engine does next for a connection (see [`Connection::poll_action`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `data` after everything handed out before, and report what the kernel takes
    /// with [`Connection::handle_sent`]; it completes `answered` requests.
    Send {
        /// The bytes.
        data: Vec<u8>,
        /// Requests this output answers (for the counters).
        answered: u64,
    },
    /// Every byte is sent and the connection reads on after its FIN (a lingering close):
    /// send the FIN (`shutdown(SHUT_WR)`), then [`Connection::handle_fin_sent`]. Asked again
    /// at every poll until then.
    Fin,
    /// Close the socket, and with it send the FIN; `reset` (`SO_LINGER` 0 first): the
    /// connection was cut with output unsent, and the peer must not take what it got for a
    /// whole reply.
    Close {
        /// Reset instead of a clean close.
        reset: bool,
    },
}

/// What became of input handed to [`Connection::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Echo: the engine sends these very bytes back (from its own buffer); they count as
    /// unsent output from now on.
    Echo,
    /// The protocol consumed it; any output comes from [`Connection::poll_action`].
    Consumed,
    /// Not wanted any more (the connection is closing): dropped.
    Dropped,
}

/// One connection's protocol state, buffers, phase and time.
#[derive(Debug)]
pub struct Connection {
    /// The protocol state machine.
    session: Session,
    /// TLS in front of the protocol: `out`, `unsent` and `queued()` then count records
    /// (ciphertext), `pending` counts plaintext (see `secure`).
    tls: Option<Box<Tls>>,
    /// Input the protocol has not consumed yet (an incomplete request).
    pending: Vec<u8>,
    /// Output not yet handed to the engine.
    out: Vec<u8>,
    /// Output handed to the engine and not yet reported sent.
    unsent: usize,
    /// Where it is in its life.
    phase: Phase,
    /// Why it ends; set on the first step out of `Open`.
    reason: Option<CloseReason>,
    /// The peer sent its FIN.
    peer_done: bool,
    /// Reading is paused until enough output drains.
    throttled: bool,
    /// Last time bytes moved either way.
    last_active: Millis,
    /// When the incomplete request now waiting began (0: none).
    request_since: Millis,
    /// When the drain began (0: no drain).
    drain_since: Millis,
    /// When the lingering close ends.
    linger_until: Millis,
    /// Requests answered and not yet reported with their output.
    answered: u64,
    /// Bytes received, all told.
    bytes_in: u64,
    /// Bytes the kernel accepted for sending, all told.
    bytes_out: u64,

    /// `pending` may hold whole requests the protocol left unanswered because the output was
    /// over `--max-pending-output`: they are answered as the output drains.
    held_back: bool,
    /// Aborted with output still unsent: the peer must see a reset, not a clean end.
    cut: bool,
    /// Input came that the protocol did not take (beyond a close, or after it).
    extra_input: bool,
    /// The engine reads on while the output of a closing connection goes out, so input that
    /// comes after the close decision reaches [`Connection::handle_input`] (see
    /// [`Connection::sees_late_input`]).
    reads_while_closing: bool,
}

impl Connection {
    /// A new connection speaking `spec`, accepted at `now`. Its buffers allocate on first
    /// use, so an idle echo connection costs only this struct.
    pub fn new(spec: &ProtocolSpec, now: Millis) -> Self {
        let session = spec.session();
        // An HTTP client must begin its first request within the header timeout, or a
        // connection that never says a word is kept for the whole idle timeout.
        let request_since = if session.is_http() { now } else { 0 };
        Connection {
            session,
            tls: secure::start(spec, now),
            pending: Vec::new(),
            out: Vec::new(),
            unsent: 0,
            phase: Phase::Open,
            reason: None,
            peer_done: false,
            throttled: false,
            last_active: now,
            request_since,
            drain_since: 0,
            linger_until: 0,
            answered: 0,
            bytes_in: 0,
            bytes_out: 0,
            held_back: false,
            cut: false,
            extra_input: false,
            reads_while_closing: false,
        }
    }

    /// A connection over `--max-connections`: it says so (http: `503`) and closes.
    /// Over TLS it closes without a word: a reply would need a handshake first.
    pub fn rejected(spec: &ProtocolSpec, now: Millis) -> Self {
        let mut c = Connection::new(spec, now);
        c.tls = None;
        if spec.tls.is_some() {
            c.close_after_flush(CloseReason::Rejected);
            return c;
        }
        c.session.on_rejected(&mut c.out);
        c.close_after_flush(CloseReason::Rejected);
        c
    }

    /// Where it is in its life.
    #[inline]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Why it ended (or is ending); a connection that never left `Open` ended by its peer.
    pub fn close_reason(&self) -> CloseReason {
        self.reason.unwrap_or(CloseReason::Peer)
    }

    /// Bytes received and bytes sent (accepted by the kernel) so far, for the access log.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    /// See [`Session::is_echo`]: [`Connection::handle_input`] answers [`Input::Echo`].
    #[inline]
    pub fn is_echo(&self) -> bool {
        self.session.is_echo()
    }

    /// Output handed to the engine and not yet reported sent, plus output not yet taken.
    #[inline]
    pub fn queued(&self) -> usize {
        self.unsent + self.out.len()
    }

    /// Input received and not answered yet (an incomplete request, or requests held back
    /// while the output is at its bound).
    #[inline]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// True while the engine should read: open, not paused and before the peer's FIN, or
    /// lingering.
    #[inline]
    pub fn reading(&self) -> bool {
        match self.phase {
            Phase::Open => !self.throttled && !self.peer_done,
            Phase::Lingering => true,
            Phase::Closing | Phase::Closed => false,
        }
    }

    /// Bytes the connection may still take in before it holds `--max-pending-output`
    /// (unsent output plus unanswered input): an engine that can cap a read at this (uring's
    /// multishot recv with a total length) never holds more than the bound and one buffer.
    #[inline]
    pub fn room(&self, limits: &Limits) -> usize {
        limits
            .max_pending
            .saturating_sub(self.queued() + self.pending.len())
    }

    /// True when the engine should send the FIN (`shutdown(SHUT_WR)`) now: closing, and
    /// the kernel has accepted every byte of output.
    #[inline]
    fn wants_fin(&self) -> bool {
        self.phase == Phase::Closing && self.queued() == 0
    }

    /// Bytes arrived at `now`.
    pub fn handle_input(&mut self, now: Millis, data: &[u8], limits: &Limits) -> Input {
        self.bytes_in += data.len() as u64;
        if self.phase != Phase::Open {
            self.extra_input |= !data.is_empty();
            return Input::Dropped;
        }
        self.last_active = now;
        if self.tls.is_some() {
            return self.tls_input(now, data, limits);
        }
        if self.session.is_echo() {
            self.unsent += data.len();
            self.update_throttle(limits);
            return Input::Echo;
        }
        self.feed(now, data, limits);
        Input::Consumed
    }

    /// Requests answered since the last call (for the worker's counters).
    fn take_answered(&mut self) -> u64 {
        std::mem::take(&mut self.answered)
    }

    /// Hands `data` (after any pending input) to the protocol, which answers requests until
    /// the output reaches `--max-pending-output`; what it leaves waits in `pending`.
    fn feed(&mut self, now: Millis, data: &[u8], limits: &Limits) {
        let before = self.session.answered();
        let limit = limits.max_pending.saturating_sub(self.unsent);
        let o = if self.pending.is_empty() {
            // Fast path: whole requests in one read need no copy.
            let o = self.session.on_input_within(data, &mut self.out, limit);
            if o.consumed < data.len() {
                self.pending.extend_from_slice(&data[o.consumed..]);
            }
            o
        } else {
            self.pending.extend_from_slice(data);
            let o = self
                .session
                .on_input_within(&self.pending, &mut self.out, limit);
            self.pending.drain(..o.consumed);
            o
        };
        let answered = self.session.answered() - before;
        self.answered += answered;
        self.held_back = !self.pending.is_empty() && self.out.len() >= limit;
        if o.close {
            self.extra_input |= !self.pending.is_empty();
            self.pending = Vec::new();
            let reason = if self.drain_since > 0 {
                CloseReason::Drain
            } else {
                CloseReason::Protocol
            };
            self.close_after_flush(reason);
        } else if self.peer_done && !self.held_back {
            // Every request that came before the peer's FIN is answered.
            self.end_of_input();
        } else if self.pending.is_empty() {
            self.request_since = 0;
        } else if self.request_since == 0 || answered > 0 {
            // A new request began (the header clock runs from its first byte).
            self.request_since = now;
        }
        self.update_throttle(limits);
    }

    /// Output to send, in order after everything taken before; `None` when there is none.
    fn take_output(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            return None;
        }
        self.unsent += self.out.len();
        Some(std::mem::take(&mut self.out))
    }

    /// The next thing the engine must do, in order: close (once closed; nothing else is
    /// asked then), send output, send the FIN. A connection that will not read after its
    /// FIN closes at once instead: the close sends the FIN right after the last byte, and
    /// spares a `shutdown` (which on io_uring goes through a kernel worker thread).
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.phase == Phase::Closed {
            return Some(Action::Close { reset: self.cut });
        }
        if let Some(data) = self.take_output() {
            let answered = self.take_answered();
            return Some(Action::Send { data, answered });
        }
        if !self.wants_fin() {
            return None;
        }
        if self.lingers() {
            return Some(Action::Fin);
        }
        self.phase = Phase::Closed;
        Some(Action::Close { reset: false })
    }

    /// Gives back a sent output buffer so its allocation serves the next output.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.out.capacity() == 0 {
            buf.clear();
            self.out = buf;
        }
    }

    /// The kernel accepted `n` bytes of output at `now`.
    pub fn handle_sent(&mut self, now: Millis, n: usize, limits: &Limits) {
        debug_assert!(n <= self.unsent, "sent more than was queued");
        self.unsent = self.unsent.saturating_sub(n);
        self.bytes_out += n as u64;
        self.last_active = now;
        self.update_throttle(limits);
        if self.phase != Phase::Open || self.throttled {
            return;
        }
        if self.held_back {
            // Requests that came in one read with others wait no more than their turn.
            let mark = self.out.len();
            self.feed(now, &[], limits);
            self.seal(mark);
        } else if self.queued() == 0 && self.request_since > 0 {
            // The header clock counts only time in which the request could arrive: while
            // output was queued the server was not reading it.
            self.request_since = now;
        }
    }

    /// The peer sent its FIN. A half-closed peer may still read: the requests it sent
    /// before are answered first (those held back while output was at its bound too), then
    /// whatever the protocol still has to say (hello's greeting), then the connection closes.
    pub fn handle_eof(&mut self) {
        let mark = self.out.len();
        if let Some(tls) = &mut self.tls {
            tls.on_eof(self.phase == Phase::Open);
        }
        self.input_ended();
        self.seal(mark);
    }

    /// No more input comes (the peer's FIN, or its `close_notify`).
    fn input_ended(&mut self) {
        self.peer_done = true;
        match self.phase {
            Phase::Open if self.held_back => {}
            Phase::Open => self.end_of_input(),
            Phase::Lingering => self.phase = Phase::Closed,
            Phase::Closing | Phase::Closed => {}
        }
    }

    /// The socket failed (reset, broken pipe): closed at once, unsent output dropped. An
    /// error while lingering is the peer's reset after it had everything: not an error.
    pub fn handle_error(&mut self) {
        match self.phase {
            Phase::Lingering => self.phase = Phase::Closed,
            _ => self.abort(CloseReason::Error),
        }
    }

    /// Ends the connection at once, without flushing; `reason` says what cut it.
    pub fn abort(&mut self, reason: CloseReason) {
        if self.phase != Phase::Closed {
            // A connection turned away stays counted as such, whatever ends it.
            if self.reason != Some(CloseReason::Rejected) {
                self.reason = Some(reason);
            }
            self.cut = self.queued() > 0;
            self.phase = Phase::Closed;
        }
    }

    /// The engine sent the FIN at `now` (after [`Action::Fin`]).
    pub fn handle_fin_sent(&mut self, now: Millis, limits: &Limits) {
        if self.phase != Phase::Closing {
            return;
        }
        if self.queued() > 0 {
            // The FIN ran ahead of output it was to follow: the peer must not take what it
            // got for the whole reply.
            return self.abort(CloseReason::Error);
        }
        if self.lingers() {
            self.phase = Phase::Lingering;
            self.linger_until = now + limits.linger_ms;
        } else {
            self.phase = Phase::Closed;
        }
    }

    /// True when, after its FIN, the connection must read on until the peer's EOF (a
    /// lingering close) before closing: unless the peer already sent its FIN, or the
    /// protocol closed after a whole exchange and nothing more came (hello's reply, an HTTP
    /// request that said close). Closing while the peer may still send would answer its
    /// bytes with a reset, which can destroy the reply it has not read yet; an engine whose
    /// read is still armed may end it with the FIN (`SHUT_RDWR`) when this is false.
    pub fn lingers(&self) -> bool {
        let clean = self.reads_while_closing
            && self.reason == Some(CloseReason::Protocol)
            && !self.extra_input
            && self.session.clean_close();
        !self.peer_done && !clean
    }

    /// Declares that the engine keeps reading while a closing connection's output goes out
    /// (uring's multishot recv stays armed), so that bytes the peer sends after the close
    /// decision are seen, and a whole exchange with nothing after it may close without a
    /// lingering read. An engine that stops reading while closing never calls this: bytes it
    /// did not read would turn its close into a reset, so it always lingers.
    pub fn sees_late_input(&mut self) {
        self.reads_while_closing = true;
    }

    /// Input may be waiting that the engine did not read (a closing connection whose recv
    /// is paused or found no buffer): the close must linger, as after any extra input.
    pub fn handle_input_unread(&mut self) {
        self.extra_input = true;
    }

    /// The server drains, from `now`: `http` answers its next request with
    /// `Connection: close`, and a connection idle for the drain's grace closes; `echo` and
    /// `hello` go on until their peer or the protocol ends them (or the shutdown deadline).
    pub fn handle_drain(&mut self, now: Millis) {
        if self.phase == Phase::Open && self.drain_since == 0 {
            self.drain_since = now;
            self.session.drain();
        }
    }

    /// When [`Connection::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self, limits: &Limits) -> Option<Millis> {
        let after = |since: Millis, ms: Millis| (since > 0 && ms > 0).then(|| since + ms);
        match self.phase {
            Phase::Open => {
                let idle = after(self.last_active, limits.idle_ms);
                let header = match self.session.is_http() && self.queued() == 0 {
                    true => after(self.request_since, limits.header_ms),
                    false => None,
                };
                let grace = match self.idle_in_drain() {
                    true => Some(self.drain_since.max(self.last_active) + limits.drain_grace_ms),
                    false => None,
                };
                let handshake = self.tls.as_ref().and_then(|t| t.deadline());
                [idle, header, grace, handshake].into_iter().flatten().min()
            }
            Phase::Closing => after(self.last_active, limits.idle_ms),
            Phase::Lingering => Some(self.linger_until),
            Phase::Closed => None,
        }
    }

    /// Acts on the deadlines that passed by `now`: a `408` queued behind the output already
    /// there, a close after a drain's grace or an idle timeout, the end of a lingering close,
    /// or, when nothing has moved for the idle timeout while output waits (a peer that does
    /// not read), an abort.
    pub fn handle_timeout(&mut self, now: Millis, limits: &Limits) {
        let passed = |since: Millis, ms: Millis| since > 0 && ms > 0 && now >= since + ms;
        let mark = self.out.len();
        match self.phase {
            Phase::Open if self.handshake_overdue(now) => self.handshake_timed_out(),
            Phase::Open => {
                if self.session.is_http()
                    && self.queued() == 0
                    && passed(self.request_since, limits.header_ms)
                {
                    if !self.pending.is_empty() {
                        // A request began and did not end in time. A connection that
                        // never began one is closed without a word, as nginx does: a 408
                        // there would only confuse a client that opened it in advance.
                        self.pending = Vec::new();
                        self.session.on_header_timeout(&mut self.out);
                    }
                    self.close_after_flush(CloseReason::HeaderTimeout);
                } else if passed(self.last_active, limits.idle_ms) {
                    if self.queued() == 0 {
                        self.close_after_flush(CloseReason::Idle);
                    } else {
                        self.abort(CloseReason::Idle);
                    }
                } else if self.idle_in_drain()
                    && now >= self.drain_since.max(self.last_active) + limits.drain_grace_ms
                {
                    self.close_after_flush(CloseReason::Drain);
                }
            }
            Phase::Closing => {
                if passed(self.last_active, limits.idle_ms) {
                    self.abort(CloseReason::Idle);
                }
            }
            Phase::Lingering => {
                if now >= self.linger_until {
                    self.phase = Phase::Closed;
                }
            }
            Phase::Closed => {}
        }
        self.seal(mark);
    }

    /// Draining `http`, with no request in progress and nothing to send: a keep-alive
    /// connection between requests, which the drain closes after its grace.
    fn idle_in_drain(&self) -> bool {
        self.drain_since > 0
            && self.session.is_http()
            && self.pending.is_empty()
            && self.queued() == 0
    }

    /// No more input will come and none is left to answer: an incomplete request is
    /// dropped, the protocol says its last word, and the connection closes after the flush.
    fn end_of_input(&mut self) {
        self.session.on_eof(&mut self.out);
        self.pending = Vec::new();
        self.close_after_flush(CloseReason::Peer);
    }

    fn close_after_flush(&mut self, reason: CloseReason) {
        if self.phase == Phase::Open {
            self.reason.get_or_insert(reason);
            self.phase = Phase::Closing;
            self.throttled = false;
        }
    }

    fn update_throttle(&mut self, limits: &Limits) {
        let queued = self.queued();
        // At the bound the protocol answers nothing more (it stops at `>=`): reading on would
        // only pile input up in `pending`.
        if !self.throttled && queued >= limits.max_pending {
            self.throttled = true;
        } else if self.throttled && queued <= limits.max_pending / 2 {
            self.throttled = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolKind;

    fn limits() -> Limits {
        Limits::for_tests(1000, 300, 64 * 1024)
    }

    fn http() -> Connection {
        Connection::new(&ProtocolSpec::with_defaults(ProtocolKind::Http), 1)
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8_lossy(v).into_owned()
    }

    /// Takes the output and reports all of it sent at `now`.
    fn flush(c: &mut Connection, now: Millis) -> Vec<u8> {
        let out = c.take_output().unwrap_or_default();
        c.handle_sent(now, out.len(), &limits());
        out
    }

    /// The connection's close is a reset.
    fn was_cut(c: &mut Connection) -> bool {
        matches!(c.poll_action(), Some(Action::Close { reset: true }))
    }

    #[test]
    fn actions_come_in_order_and_a_closed_connection_asks_only_its_close() {
        let l = limits();
        let mut c = http();
        assert_eq!(c.poll_action(), None, "nothing to do before a request");
        c.handle_input(
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &l,
        );
        let Some(Action::Send { data, answered }) = c.poll_action() else {
            panic!("the response comes first");
        };
        assert_eq!(answered, 1);
        assert_eq!(
            c.poll_action(),
            None,
            "no FIN before the kernel took the output"
        );
        c.handle_sent(2, data.len(), &l);
        assert_eq!(
            c.poll_action(),
            Some(Action::Fin),
            "an engine that stopped reading"
        );
        assert_eq!(c.poll_action(), Some(Action::Fin), "asked until it is sent");
        c.handle_fin_sent(3, &l);
        assert_eq!(c.phase(), Phase::Lingering);
        assert_eq!(c.poll_action(), None);
        c.handle_eof();
        assert_eq!(c.poll_action(), Some(Action::Close { reset: false }));

        // Reading on while closing, a whole exchange closes at once: the close is the FIN.
        let mut c = http();
        c.sees_late_input();
        c.handle_input(
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &l,
        );
        let Some(Action::Send { data, .. }) = c.poll_action() else {
            panic!("the response comes first");
        };
        c.handle_sent(2, data.len(), &l);
        assert_eq!(c.poll_action(), Some(Action::Close { reset: false }));
        assert_eq!(c.phase(), Phase::Closed);

        // An aborted connection sends nothing more, not even output it had.
        let mut c = http();
        c.handle_input(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &l);
        c.handle_error();
        assert_eq!(c.poll_action(), Some(Action::Close { reset: true }));
        let mut c = http();
        c.handle_error();
        assert_eq!(c.poll_action(), Some(Action::Close { reset: false }));
    }

    #[test]
    fn keeps_partial_input_and_closes_after_flush() {
        let l = limits();
        let mut c = http();
        assert_eq!(c.handle_input(5, b"GET / HT", &l), Input::Consumed);
        assert_eq!(c.take_answered(), 0);
        assert_eq!(c.take_output(), None);
        assert_eq!(
            c.poll_timeout(&l),
            Some(301),
            "header deadline of the first request: from the accept"
        );
        assert_eq!(
            c.handle_input(6, b"TP/1.1\r\nHost: x\r\n\r\nGET", &l),
            Input::Consumed
        );
        assert_eq!(c.take_answered(), 1);
        assert_eq!(
            c.poll_timeout(&l),
            Some(1006),
            "idle: no header clock while output waits"
        );
        assert!(flush(&mut c, 7).starts_with(b"HTTP/1.1 200 OK"));
        // The header clock of the second request runs from when the server reads again.
        assert_eq!(c.poll_timeout(&l), Some(307));
        let fed = c.handle_input(
            8,
            b" / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &l,
        );
        assert_eq!(fed, Input::Consumed);
        assert_eq!(c.take_answered(), 1);
        assert_eq!(c.phase(), Phase::Closing);
        assert!(!c.wants_fin(), "the response is not sent yet");
        let out = c.take_output().unwrap();
        c.handle_sent(9, out.len() - 1, &l);
        assert!(!c.wants_fin(), "one byte is not sent yet");
        c.handle_sent(9, 1, &l);
        assert!(c.wants_fin());
        assert!(
            c.lingers(),
            "an engine that stopped reading cannot know nothing came"
        );
        c.sees_late_input();
        assert!(!c.lingers(), "a whole exchange, nothing more came");
        c.handle_fin_sent(9, &l);
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(c.close_reason(), CloseReason::Protocol);
    }

    #[test]
    fn reading_pauses_when_output_is_exactly_at_the_bound() {
        // The bound is exactly two responses to `GET /`.
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut probe = http();
        probe.handle_input(1, get, &limits());
        let one = probe.take_output().unwrap().len();
        let l = Limits::for_tests(0, 0, 2 * one);
        let mut c = http();
        c.handle_input(1, &get.repeat(3), &l);
        assert_eq!(c.take_output().unwrap().len(), 2 * one);
        // The peer reads nothing: the output stays unsent, at the bound.
        assert!(!c.reading(), "nothing more can be answered: stop reading");
        assert!(c.pending.len() <= get.len());
    }

    #[test]
    fn a_fin_ahead_of_output_is_a_cut() {
        let l = limits();
        let mut c = http();
        c.handle_input(
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &l,
        );
        let out = c.take_output().unwrap();
        c.handle_sent(2, out.len() - 1, &l);
        c.handle_fin_sent(3, &l);
        assert_eq!(c.phase(), Phase::Closed);
        assert!(
            was_cut(&mut c),
            "one byte never went out: a reset, not a clean end"
        );
    }

    #[test]
    fn lingers_when_the_peer_may_still_send() {
        let l = limits();
        // Bytes after the request that said close.
        let mut c = http();
        c.handle_input(
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /next",
            &l,
        );
        flush(&mut c, 2);
        assert!(c.lingers());
        c.handle_fin_sent(2, &l);
        assert_eq!(c.phase(), Phase::Lingering);
        assert!(c.reading());
        assert_eq!(c.handle_input(3, b"more", &l), Input::Dropped);
        c.handle_eof();
        assert_eq!(c.phase(), Phase::Closed);
        // Bytes after the close decision.
        let mut c = http();
        c.handle_input(
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &l,
        );
        assert_eq!(c.handle_input(2, b"late", &l), Input::Dropped);
        assert!(c.lingers());
        // A body still to come, an error, a drain, a timeout: the peer may be sending.
        let mut c = http();
        c.handle_input(
            1,
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 9\r\n\r\n",
            &l,
        );
        assert!(c.lingers());
        let mut c = http();
        c.handle_input(1, b"BAD\r\n\r\n", &l);
        assert!(c.lingers());
        let mut c = http();
        c.handle_drain(1);
        c.handle_timeout(5000, &l);
        assert!(c.lingers());
    }

    #[test]
    fn header_timeout_waits_for_a_blocked_response_then_queues_408_behind_it() {
        let l = limits();
        let mut c = http();
        c.handle_input(10, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /slow", &l);
        let first = c.take_output().unwrap();
        // The peer reads nothing: the server does not read either, so the header clock of
        // the second request does not run (only the idle one).
        assert_eq!(c.poll_timeout(&l), Some(1010));
        c.handle_timeout(900, &l);
        assert_eq!(c.phase(), Phase::Open);
        c.handle_sent(400, first.len(), &l);
        assert_eq!(
            c.poll_timeout(&l),
            Some(700),
            "the header clock starts when output drains"
        );
        c.handle_timeout(700, &l);
        assert_eq!(c.phase(), Phase::Closing);
        assert_eq!(c.close_reason(), CloseReason::HeaderTimeout);
        let second = c.take_output().unwrap();
        assert!(text(&first).starts_with("HTTP/1.1 200 OK"));
        assert!(
            text(&second).starts_with("HTTP/1.1 408 "),
            "{}",
            text(&second)
        );
        c.handle_sent(701, second.len(), &l);
        assert!(c.wants_fin());
    }

    #[test]
    fn pipelined_output_is_bounded_and_answered_as_it_drains() {
        // 100-byte budget; each response is ~100 bytes: one read of 10 requests answers
        // about one at a time.
        let l = Limits::for_tests(0, 0, 100);
        let mut c = http();
        c.handle_input(1, &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10), &l);
        let mut responses = 0;
        let mut rounds = 0;
        while let Some(out) = c.take_output() {
            assert!(out.len() < 300, "{} bytes of output at once", out.len());
            responses += text(&out).matches("HTTP/1.1 200").count();
            c.handle_sent(2, out.len(), &l);
            rounds += 1;
        }
        assert_eq!(responses, 10, "every request answered in the end");
        assert!(rounds >= 4, "answered in {rounds} rounds");
        assert_eq!(c.take_answered(), 10);
    }

    #[test]
    fn a_half_closed_peer_gets_the_requests_held_back() {
        // One read of ten requests against a bound of about one response, then the FIN.
        let l = Limits::for_tests(0, 0, 100);
        let mut c = http();
        c.handle_input(1, &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10), &l);
        c.handle_eof();
        assert_eq!(c.phase(), Phase::Open, "requests are still owed");
        assert!(!c.reading(), "nothing more comes after the FIN");
        let mut responses = 0;
        while let Some(out) = c.take_output() {
            responses += text(&out).matches("HTTP/1.1 200").count();
            c.handle_sent(2, out.len(), &l);
        }
        assert_eq!(responses, 10);
        assert!(c.wants_fin(), "closes once all are answered");
        assert_eq!(c.close_reason(), CloseReason::Peer);
    }

    #[test]
    fn a_silent_http_connection_closes_at_the_header_timeout_without_a_word() {
        let l = limits();
        let mut c = http();
        assert_eq!(c.poll_timeout(&l), Some(301), "from the accept");
        c.handle_timeout(301, &l);
        assert_eq!(c.phase(), Phase::Closing);
        assert_eq!(c.take_output(), None, "it asked nothing: no 408");
        assert_eq!(c.close_reason(), CloseReason::HeaderTimeout);
        // Echo waits for its peer as long as the idle timeout allows.
        let e = Connection::new(&ProtocolSpec::with_defaults(ProtocolKind::Echo), 1);
        assert_eq!(e.poll_timeout(&l), Some(1001));
    }

    #[test]
    fn room_is_what_is_left_of_the_bound() {
        let l = Limits::for_tests(0, 0, 100);
        let mut c = Connection::new(&ProtocolSpec::with_defaults(ProtocolKind::Echo), 1);
        assert_eq!(c.room(&l), 100);
        c.handle_input(1, &[0; 70], &l);
        assert_eq!(c.room(&l), 30);
        c.handle_input(1, &[0; 50], &l);
        assert_eq!(c.room(&l), 0, "over the bound: nothing, not a wrap");
        let mut h = http();
        h.handle_input(1, b"GET / HTTP/1.1\r\nX: ", &l);
        assert_eq!(h.room(&l), 100 - 19, "unanswered input counts");
    }

    #[test]
    fn a_rejected_connection_stays_rejected() {
        let l = limits();
        let mut c = Connection::rejected(&ProtocolSpec::with_defaults(ProtocolKind::Http), 1);
        c.handle_error();
        assert_eq!(c.close_reason(), CloseReason::Rejected);
        assert!(was_cut(&mut c), "the 503 was not sent");
        let mut c = http();
        c.handle_input(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &l);
        c.handle_timeout(5000, &l);
        assert!(was_cut(&mut c), "the response was stuck");
        let mut c = http();
        c.handle_timeout(5000, &l);
        assert!(!was_cut(&mut c), "nothing was queued");
    }

    #[test]
    fn idle_means_no_bytes_either_way() {
        let l = limits();
        let mut c = http();
        c.handle_input(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &l);
        let out = c.take_output().unwrap();
        // A slow reader takes the response a byte at a time, far past the idle timeout.
        for t in 1..out.len() as Millis {
            c.handle_sent(t * 500, 1, &l);
            c.handle_timeout(t * 500 + 999, &l);
            assert_eq!(c.phase(), Phase::Open, "cut while bytes flow");
        }
        c.handle_sent(100_000, 1, &l);
        assert_eq!(c.poll_timeout(&l), Some(101_000));
        c.handle_timeout(101_000, &l);
        assert_eq!(c.phase(), Phase::Closing, "truly idle: closed gracefully");
        assert_eq!(c.close_reason(), CloseReason::Idle);
        assert!(c.wants_fin());
    }

    #[test]
    fn stalled_reader_is_cut_after_the_idle_timeout() {
        let l = limits();
        let mut c = http();
        c.handle_input(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &l);
        let _out = c.take_output().unwrap();
        c.handle_timeout(1001, &l);
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(c.close_reason(), CloseReason::Idle);
    }

    #[test]
    fn throttles_above_max_pending_and_resumes_at_half() {
        let l = Limits::for_tests(0, 0, 100);
        let mut c = Connection::new(&ProtocolSpec::with_defaults(ProtocolKind::Echo), 1);
        assert_eq!(c.handle_input(1, &[0; 80], &l), Input::Echo);
        assert!(c.reading());
        c.handle_input(1, &[0; 40], &l);
        assert!(!c.reading(), "120 queued > 100");
        c.handle_sent(2, 60, &l);
        assert!(!c.reading(), "60 queued > 50");
        c.handle_sent(2, 10, &l);
        assert!(c.reading(), "50 queued: resumed");
    }

    #[test]
    fn drain_answers_the_next_request_with_close() {
        let l = limits();
        let mut c = http();
        c.handle_input(1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &l);
        flush(&mut c, 2);
        c.handle_drain(3);
        assert_eq!(
            c.poll_timeout(&l),
            Some(1002),
            "idle (1002) before the grace (1003)"
        );
        c.handle_input(500, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &l);
        let out = flush(&mut c, 501);
        assert!(
            text(&out).contains("Connection: close\r\n"),
            "{}",
            text(&out)
        );
        assert_eq!(c.phase(), Phase::Closing);
        assert_eq!(c.close_reason(), CloseReason::Drain);
    }

    #[test]
    fn drain_closes_an_idle_connection_after_the_grace() {
        let l = Limits::for_tests(0, 0, 1024);
        let mut c = http();
        c.handle_drain(100);
        assert_eq!(c.poll_timeout(&l), Some(1100));
        c.handle_timeout(1099, &l);
        assert_eq!(c.phase(), Phase::Open);
        c.handle_timeout(1100, &l);
        assert_eq!(c.phase(), Phase::Closing);
        assert_eq!(c.close_reason(), CloseReason::Drain);
        // Echo is served on until its peer closes.
        let mut e = Connection::new(&ProtocolSpec::with_defaults(ProtocolKind::Echo), 1);
        e.handle_drain(100);
        e.handle_timeout(5000, &l);
        assert_eq!(e.phase(), Phase::Open);
    }

    #[test]
    fn rejected_says_503_then_closes() {
        let l = limits();
        let mut c = Connection::rejected(&ProtocolSpec::with_defaults(ProtocolKind::Http), 1);
        assert_eq!(c.phase(), Phase::Closing);
        assert!(text(&flush(&mut c, 2)).starts_with("HTTP/1.1 503 "));
        assert!(c.wants_fin());
        assert_eq!(c.close_reason(), CloseReason::Rejected);
        let mut c = Connection::rejected(&ProtocolSpec::with_defaults(ProtocolKind::Echo), 1);
        assert!(c.wants_fin(), "echo has nothing to say");
        c.handle_fin_sent(2, &l);
        assert_eq!(
            c.phase(),
            Phase::Lingering,
            "then reads until the peer's EOF"
        );
    }

    #[test]
    fn eof_flushes_hello_then_closes_without_lingering() {
        let l = limits();
        let mut c = Connection::new(&ProtocolSpec::with_defaults(ProtocolKind::Hello), 1);
        c.handle_eof();
        assert_eq!(c.phase(), Phase::Closing);
        assert_eq!(flush(&mut c, 2), b"Hello, world!");
        c.handle_fin_sent(2, &l);
        assert_eq!(c.phase(), Phase::Closed, "the peer already sent its FIN");
        assert_eq!(c.close_reason(), CloseReason::Peer);
    }

    #[test]
    fn lingering_ends_at_its_deadline() {
        let l = limits();
        let mut c = Connection::new(&ProtocolSpec::with_defaults(ProtocolKind::Hello), 1);
        // More than the one message hello reads: the rest may still be coming.
        c.handle_input(1, &[b'x'; 1500], &l);
        flush(&mut c, 2);
        c.handle_fin_sent(3, &l);
        assert_eq!(c.poll_timeout(&l), Some(2003));
        c.handle_timeout(2002, &l);
        assert_eq!(c.phase(), Phase::Lingering);
        c.handle_timeout(2003, &l);
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(c.close_reason(), CloseReason::Protocol);
    }

    #[test]
    fn reasons() {
        let l = limits();
        let mut c = http();
        c.handle_input(
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &l,
        );
        c.handle_timeout(5000, &l);
        assert_eq!(
            c.close_reason(),
            CloseReason::Idle,
            "a stalled final response"
        );
        let mut c = http();
        c.handle_input(
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &l,
        );
        c.handle_error();
        assert_eq!(c.phase(), Phase::Closed);
        assert_eq!(
            c.close_reason(),
            CloseReason::Error,
            "the response did not get through"
        );
        let mut c = http();
        c.handle_input(
            1,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &l,
        );
        flush(&mut c, 2);
        c.handle_fin_sent(2, &l);
        c.handle_error();
        assert_eq!(
            c.close_reason(),
            CloseReason::Protocol,
            "a reset after everything went out"
        );
    }
}
