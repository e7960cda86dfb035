//! Protocols: the innermost layer of the data path, and pure.
//!
//! A protocol never touches a socket. The connection layer (`crate::connection`) hands it the
//! bytes that arrived, it appends the bytes to send to an output buffer and reports how much
//! input it consumed and whether the connection should close once that output is flushed.
//! "Need more bytes" is simply `consumed < input.len()` with `close == false`, never an error.
//! The one thing a protocol reads besides its input is the date for `http`'s `Date` header
//! (`date`: cached per thread and second, pinned by tests).
//! Every engine drives this same code; the client halves (building requests, framing
//! responses) live in the `loadgen` crate.

mod date;
mod echo;
mod hello;
mod http;

use std::sync::Arc;

#[cfg(test)]
pub(crate) use date::pin as pin_date;
pub use http::{error_response, ErrorStatus, DEFAULT_BODY, MAX_HEADER_BYTES};
pub use ringd_common::{ProtocolKind, DEFAULT_GREETING};

/// Everything a protocol needs to build sessions; shared read-only by every connection.
#[derive(Debug, Clone)]
pub struct ProtocolSpec {
    /// The protocol spoken.
    pub kind: ProtocolKind,
    /// The `hello` reply.
    pub greeting: Arc<[u8]>,
    /// Pre-rendered `http` responses.
    http: Arc<http::Responses>,
    /// Terminate TLS in front of the protocol (`--tls-cert`): the connection layer does it,
    /// and the protocol only ever sees plaintext.
    pub tls: Option<crate::tls::ServerTls>,
}

impl ProtocolSpec {
    /// A spec with the given greeting (for `hello`) and body (for `http`).
    pub fn new(kind: ProtocolKind, greeting: &[u8], http_body: &[u8]) -> Self {
        ProtocolSpec {
            kind,
            greeting: greeting.into(),
            http: Arc::new(http::Responses::new(http_body)),
            tls: None,
        }
    }

    /// A spec with the default greeting and body.
    pub fn with_defaults(kind: ProtocolKind) -> Self {
        Self::new(kind, DEFAULT_GREETING.as_bytes(), DEFAULT_BODY.as_bytes())
    }

    /// A fresh per-connection session.
    pub fn session(&self) -> Session {
        match self.kind {
            ProtocolKind::Echo => Session::Echo,
            ProtocolKind::Hello => Session::Hello(hello::Hello::new(self.greeting.clone())),
            ProtocolKind::Http => Session::Http(http::Http::new(self.http.clone())),
        }
    }
}

/// What a session made of the input it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes of the input that were consumed; the rest must be handed in again, with more
    /// bytes appended, on the next call.
    pub consumed: usize,
    /// Close the connection once the output is flushed; no further input is wanted.
    pub close: bool,
}

impl Outcome {
    /// Consumed `n` bytes, keep going.
    pub fn keep(consumed: usize) -> Self {
        Outcome {
            consumed,
            close: false,
        }
    }

    /// Consumed `n` bytes, close after flushing.
    pub fn close(consumed: usize) -> Self {
        Outcome {
            consumed,
            close: true,
        }
    }
}

/// One connection's protocol state. An enum rather than a trait object so that engines
/// dispatch statically and can special-case echo (send the received buffer back as is).
#[derive(Debug)]
pub enum Session {
    /// See [`ProtocolKind::Echo`].
    Echo,
    /// See [`ProtocolKind::Hello`].
    Hello(hello::Hello),
    /// See [`ProtocolKind::Http`].
    Http(http::Http),
}

impl Session {
    /// True when the output is exactly the input: engines with owned buffers then send the
    /// received buffer itself and never call [`Session::on_input`].
    pub fn is_echo(&self) -> bool {
        matches!(self, Session::Echo)
    }

    /// Hands the session the bytes received so far (including any not consumed last time).
    pub fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Outcome {
        self.on_input_within(input, out, usize::MAX)
    }

    /// Like [`Session::on_input`], but once `out` holds `limit` bytes no further request is
    /// answered: the rest of the input is left unconsumed, to be handed in again when the
    /// output has drained. Bounds the output one read can produce (pipelined requests).
    pub fn on_input_within(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Outcome {
        match self {
            Session::Echo => echo::on_input(input, out),
            Session::Hello(s) => s.on_input(input, out),
            Session::Http(s) => s.on_input(input, out, limit),
        }
    }

    /// Requests (http) or messages (hello) answered so far; echo counts none.
    pub fn answered(&self) -> u64 {
        match self {
            Session::Echo => 0,
            Session::Hello(s) => s.answered(),
            Session::Http(s) => s.answered(),
        }
    }

    /// True for `http`, whose incomplete requests are bounded by the header timeout.
    pub fn is_http(&self) -> bool {
        matches!(self, Session::Http(_))
    }

    /// After the protocol closed: true when the peer has nothing more to send (hello's one
    /// message was read; an HTTP request that said close was whole, with its body), so the
    /// connection may close at once after its reply instead of reading on until the peer's
    /// EOF. Extra bytes seen are the connection's to notice.
    pub fn clean_close(&self) -> bool {
        match self {
            Session::Echo => false,
            Session::Hello(_) => true,
            Session::Http(s) => s.clean_close(),
        }
    }

    /// The server drains. `http` answers the request in progress or the next one with
    /// `Connection: close` and closes after it; `echo` and `hello` go on until their peer or
    /// the protocol ends them.
    pub fn drain(&mut self) {
        if let Session::Http(s) = self {
            s.drain();
        }
    }

    /// An incomplete request ran past the header timeout: what to say before closing
    /// (`http`: a `408`).
    pub fn on_header_timeout(&mut self, out: &mut Vec<u8>) {
        if self.is_http() {
            http::write_error(ErrorStatus::RequestTimeout, &date::now(), out);
        }
    }

    /// The connection is over the server's limit: what to say before closing (`http`: a
    /// `503`).
    pub fn on_rejected(&mut self, out: &mut Vec<u8>) {
        if self.is_http() {
            http::write_error(ErrorStatus::Unavailable, &date::now(), out);
        }
    }

    /// The peer finished sending (EOF). Returns bytes still to send before closing, if any.
    pub fn on_eof(&mut self, out: &mut Vec<u8>) {
        if let Session::Hello(s) = self {
            s.on_eof(out);
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// Feeds `input` to a fresh session in two pieces split at every boundary, the way a
    /// connection would (unconsumed bytes are handed in again with the next piece), and
    /// checks the output and close decision are the same as when it arrives whole.
    pub fn assert_split_invariant(spec: &ProtocolSpec, input: &[u8]) -> (Vec<u8>, bool) {
        let whole = drive(spec, &[input]);
        for cut in 0..=input.len() {
            let split = drive(spec, &[&input[..cut], &input[cut..]]);
            assert_eq!(split, whole, "split at byte {cut} changed the result");
        }
        whole
    }

    /// Drives a session like a connection does; stops at close.
    pub fn drive(spec: &ProtocolSpec, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut session = spec.session();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            let o = session.on_input(&pending, &mut out);
            assert!(o.consumed <= pending.len());
            pending.drain(..o.consumed);
            if o.close {
                return (out, true);
            }
        }
        (out, false)
    }
}
