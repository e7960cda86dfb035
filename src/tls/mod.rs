//! TLS termination, between the bytes an engine moves and the protocol. rustls is sans-IO
//! like the rest of the data path: the connection layer (`crate::connection`) hands a
//! [`Tls`] the ciphertext the engine read and gets plaintext for the protocol; it hands it
//! the protocol's output and gets records, which go out through the same ordered output as
//! everything else. No engine has TLS code of its own.
//!
//! [`ServerTls`] is built once at start (`--tls-cert`, `--tls-key`); each connection has one
//! [`Tls`] from its accept to its close.

mod config;

use std::io::{Read, Write};

pub use config::{CertPair, ServerTls, TlsError, ALPN_HTTP1, DEFAULT_HANDSHAKE_TIMEOUT};

/// Where a connection's handshake is, and how it ended (`ringd_tls_handshakes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Not done yet.
    Pending,
    /// Done: keys agreed, application data flows.
    Done,
    /// Ended before it was done: a malformed or refused hello (no shared version or
    /// cipher suite, an unknown ALPN name), or the peer went away.
    Failed,
    /// Not done within `--tls-handshake-timeout`.
    TimedOut,
}

impl Handshake {
    /// The outcomes counted, in counter order.
    pub const COUNTED: [Handshake; 3] = [Handshake::Done, Handshake::Failed, Handshake::TimedOut];

    /// The metrics label (`result`).
    pub fn label(self) -> &'static str {
        match self {
            Handshake::Done => "ok",
            Handshake::Failed | Handshake::Pending => "failed",
            Handshake::TimedOut => "timeout",
        }
    }

    /// Position in [`Handshake::COUNTED`]; a handshake still pending when its connection
    /// ends counts as failed.
    pub fn index(self) -> usize {
        match self {
            Handshake::Done => 0,
            Handshake::Failed | Handshake::Pending => 1,
            Handshake::TimedOut => 2,
        }
    }
}

/// What a piece of ciphertext handed to [`Tls::read`] brought besides plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Records (or part of one), perhaps plaintext.
    Records,
    /// The peer's `close_notify`: a clean end of its input.
    CloseNotify,
    /// The peer broke the protocol (or the handshake failed): the alert rustls queued is
    /// the last thing to send.
    Failed,
}

/// One connection's TLS state: rustls' server connection and what the counters need.
#[derive(Debug)]
pub struct Tls {
    /// rustls' state machine; its own buffers hold at most one incomplete record in and the
    /// records not yet taken by [`Tls::flush`] out.
    conn: rustls::ServerConnection,
    /// Where the handshake is.
    handshake: Handshake,
    /// When the handshake must be done by, on the worker's clock (0: never).
    deadline: u64,
    /// Our `close_notify` is queued, or will never be sent.
    notified: bool,
    /// The peer sent its `close_notify`.
    peer_notified: bool,
    /// The peer's input ended without its `close_notify` (`ringd_tls_truncations_total`).
    truncated: bool,
}

impl Tls {
    /// A server connection of `server`, whose handshake must be done by `deadline` (0:
    /// never).
    pub fn new(server: &ServerTls, deadline: u64) -> Box<Self> {
        let mut conn = rustls::ServerConnection::new(server.config.clone())
            // Depends on the configuration alone, which `ServerTls::load` made one from.
            .expect("a checked TLS configuration makes connections");
        // The connection layer bounds its output (`--max-pending-output`) itself.
        conn.set_buffer_limit(None);
        Box::new(Tls {
            conn,
            handshake: Handshake::Pending,
            deadline,
            notified: false,
            peer_notified: false,
            truncated: false,
        })
    }

    /// Where the handshake is.
    pub fn handshake(&self) -> Handshake {
        self.handshake
    }

    /// The TLS version agreed, as OpenSSL names it (`TLSv1.3`), once the handshake chose
    /// one.
    pub fn version_name(&self) -> Option<&'static str> {
        match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            _ => None,
        }
    }

    /// The name the client asked for (SNI), once its ClientHello is read.
    pub fn server_name(&self) -> Option<&str> {
        self.conn.server_name()
    }

    /// True when the peer's input ended without its `close_notify`.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The handshake's deadline while it is pending.
    #[inline]
    pub fn deadline(&self) -> Option<u64> {
        (self.handshake == Handshake::Pending && self.deadline > 0).then_some(self.deadline)
    }

    /// The handshake was not done in time.
    pub fn timed_out(&mut self) {
        self.handshake = Handshake::TimedOut;
        self.notified = true;
    }

    /// Takes ciphertext from the front of `input` (rustls takes at most a few records at a
    /// time: call again while `input` is not empty) and appends the plaintext it held to
    /// `plain`.
    pub fn read(&mut self, input: &mut &[u8], plain: &mut Vec<u8>) -> Received {
        if self.conn.read_tls(input).is_err() {
            return self.failed();
        }
        let state = match self.conn.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                tracing::debug!("TLS: {e}");
                return self.failed();
            }
        };
        if self.handshake == Handshake::Pending && !self.conn.is_handshaking() {
            self.handshake = Handshake::Done;
        }
        let n = state.plaintext_bytes_to_read();
        let closed = state.peer_has_closed();
        if n > 0 {
            let at = plain.len();
            plain.resize(at + n, 0);
            if self.conn.reader().read_exact(&mut plain[at..]).is_err() {
                // rustls said these bytes are there to read.
                plain.truncate(at);
                return self.failed();
            }
        }
        if closed {
            self.peer_notified = true;
            return Received::CloseNotify;
        }
        Received::Records
    }

    fn failed(&mut self) -> Received {
        if self.handshake == Handshake::Pending {
            self.handshake = Handshake::Failed;
        }
        // The alert rustls queued ends the stream; a close_notify after it means nothing.
        self.notified = true;
        Received::Failed
    }

    /// The peer's FIN came; `open` while the connection still expected its input. Before
    /// the handshake is done that is a failed handshake; after it, without the peer's
    /// `close_notify`, a truncation (which an attacker can cause, so it is counted).
    pub fn on_eof(&mut self, open: bool) {
        match self.handshake {
            Handshake::Pending => self.handshake = Handshake::Failed,
            Handshake::Done if open && !self.peer_notified => self.truncated = true,
            _ => {}
        }
    }

    /// Encrypts `plain` into records (buffered in rustls until [`Tls::flush`]).
    /// Plaintext written before the handshake is done waits for it.
    pub fn write(&mut self, plain: &[u8]) {
        // With no buffer limit a write takes everything it is given.
        let _ = self.conn.writer().write_all(plain);
    }

    /// Queues our `close_notify` behind every record written so far, once, if the
    /// handshake is done (before it, there is nothing to close cleanly).
    pub fn close(&mut self) {
        if !self.notified && self.handshake == Handshake::Done {
            self.conn.send_close_notify();
        }
        self.notified = true;
    }

    /// Appends every record ready to send to `out`.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
