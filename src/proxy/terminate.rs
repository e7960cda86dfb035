//! TLS terminated in proxy mode (`--protocol proxy --tls-cert … --tls-key …`): the client's
//! side of a proxied connection speaks TLS, the upstream's plaintext. No I/O, like the
//! [`super::Relay`] it sits beside: the engine hands it the ciphertext the client sent and
//! the plaintext the upstream sent, and queues what it returns on the other socket, in
//! order (records for the client after those already queued, plaintext for the upstream).
//!
//! Call order: [`Terminated::from_client`] for each read from the client, until
//! [`Terminated::handshake_done`] (then the engine chooses and connects the upstream);
//! [`Terminated::to_client`] for each read from the upstream; [`Terminated::close`] when
//! the upstream's input ends (its `close_notify`, then the engine's FIN, go to the client);
//! [`Terminated::on_eof`] when the client's FIN comes; [`Terminated::count`] at the end.

use super::sni::Hello;
use crate::connection::WorkerStats;
use crate::tls::{Handshake, Received, ServerTls, Tls};

/// What the client's ciphertext held.
#[derive(Debug, Default)]
pub struct FromClient {
    /// Plaintext for the upstream.
    pub plain: Vec<u8>,
    /// Records for the client (the handshake's, or the alert that ends it).
    pub records: Vec<u8>,
    /// How the client's input goes on.
    pub end: ClientInput,
}

/// How the client's TLS input goes on after some ciphertext.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ClientInput {
    /// More may come.
    #[default]
    Open,
    /// Its `close_notify` came: its input is over (a FIN for the upstream).
    Closed,
    /// It broke TLS (or the handshake failed): the connection ends.
    Failed,
}

/// The TLS side of one proxied connection.
#[derive(Debug)]
pub struct Terminated {
    /// rustls' server connection.
    tls: Box<Tls>,
}

impl Terminated {
    /// A connection of `server` (its handshake deadline is the relay's).
    pub fn new(server: &ServerTls) -> Self {
        Terminated {
            tls: Tls::new(server, 0),
        }
    }

    /// Takes `data`, the client's ciphertext.
    pub fn from_client(&mut self, mut data: &[u8]) -> FromClient {
        let mut out = FromClient::default();
        while !data.is_empty() && out.end == ClientInput::Open {
            out.end = match self.tls.read(&mut data, &mut out.plain) {
                Received::Records => ClientInput::Open,
                Received::CloseNotify => ClientInput::Closed,
                Received::Failed => ClientInput::Failed,
            };
        }
        self.tls.flush(&mut out.records);
        out
    }

    /// True once the handshake is done: plaintext flows.
    pub fn handshake_done(&self) -> bool {
        self.tls.handshake() == Handshake::Done
    }

    /// The name the client asked for, for SNI routes.
    pub fn hello(&self) -> Hello {
        match self.tls.server_name() {
            Some(name) => Hello::Name(name.to_ascii_lowercase()),
            None => Hello::NoName,
        }
    }

    /// The TLS version agreed, for the PROXY header (`TLSv1.3`).
    pub fn version_name(&self) -> Option<&'static str> {
        self.tls.version_name()
    }

    /// Seals `plain`, the upstream's bytes, into records for the client, appended to
    /// `records`.
    pub fn to_client(&mut self, plain: &[u8], records: &mut Vec<u8>) {
        self.tls.write(plain);
        self.tls.flush(records);
    }

    /// The upstream's input ended: the client's `close_notify` is appended to `records`
    /// (once, and only after a completed handshake).
    pub fn close(&mut self, records: &mut Vec<u8>) {
        self.tls.close();
        self.tls.flush(records);
    }

    /// The client's FIN came (a truncation unless its `close_notify` came first).
    pub fn on_eof(&mut self) {
        self.tls.on_eof(true);
    }

    /// The handshake was not done in time.
    pub fn timed_out(&mut self) {
        self.tls.timed_out();
    }

    /// Counts the handshake's outcome and a truncation in `stats`, once, at the end.
    pub fn count(&self, stats: &WorkerStats) {
        WorkerStats::inc(&stats.tls_handshakes[self.tls.handshake().index()]);
        if self.tls.truncated() {
            WorkerStats::inc(&stats.tls_truncations);
        }
    }
}
