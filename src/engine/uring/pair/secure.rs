//! The TLS side of a [`UPair`] whose client's TLS ends here: the client's records are
//! opened by [`Terminated`] into plaintext for the upstream (its answers queued for the
//! client), the upstream's bytes sealed into records for the client. TLS bytes are copied
//! out of the provided buffer they arrived in, which goes back to the ring at once.

use super::{Env, Pool, UPair, Upstream};
use crate::connection::{CloseReason, WorkerStats};
use crate::proxy::relay::Phase;
use crate::proxy::sni::Hello;
use crate::proxy::terminate::ClientInput;
use crate::proxy::Side;

impl UPair {
    /// `n` bytes in buffer `bid` from `side` of a pair whose client speaks TLS: the
    /// client's records are opened for the upstream (the handshake's answers go back to
    /// the client), the upstream's bytes sealed for the client. The first are copied out of
    /// the buffer, which goes back to the ring at once.
    pub(super) fn on_tls_recv<P: Pool>(
        &mut self,
        side: Side,
        bid: u16,
        n: usize,
        env: &mut Env<P>,
        up: &mut Upstream,
    ) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        let (now, limits) = (env.now, env.limits);
        match side {
            Side::Client => {
                let got = tls.from_client(env.pool.bytes(bid, n));
                env.pool.give(bid);
                let done = tls.handshake_done();
                self.relay
                    .on_input_as(side, now, n, got.plain.len(), limits);
                self.queue_for_client(got.records, env);
                if !got.plain.is_empty() {
                    self.sock(Side::Upstream).push_owned(got.plain);
                }
                match got.end {
                    ClientInput::Open => {}
                    ClientInput::Closed => self.relay.on_eof(Side::Client),
                    ClientInput::Failed => self.relay.abort(CloseReason::Protocol),
                }
                if done && self.relay.phase() == Phase::Routing {
                    let hello = self.tls.as_ref().map_or(Hello::NoName, |t| t.hello());
                    self.route(&hello, env, up);
                }
            }
            Side::Upstream => {
                let mut records = Vec::new();
                tls.to_client(env.pool.bytes(bid, n), &mut records);
                env.pool.give(bid);
                self.relay.on_input_as(side, now, n, records.len(), limits);
                if !records.is_empty() {
                    self.sock(Side::Client).push_owned(records);
                }
            }
        }
        self.step(env);
    }

    /// Records of the server's own for the client (the handshake's, a `close_notify`).
    fn queue_for_client<P: Pool>(&mut self, records: Vec<u8>, env: &mut Env<P>) {
        if !records.is_empty() {
            self.relay
                .on_header(env.now, Side::Upstream, records.len(), env.limits);
            self.sock(Side::Client).push_owned(records);
        }
    }

    /// `side`'s input ended, on a pair whose client speaks TLS: the upstream's end becomes
    /// the client's `close_notify` (the FIN follows it); the client's FIN before its
    /// handshake is done ends the pair.
    pub(super) fn on_tls_eof<P: Pool>(&mut self, side: Side, env: &mut Env<P>) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        match side {
            Side::Upstream => {
                let mut records = Vec::new();
                tls.close(&mut records);
                self.queue_for_client(records, env);
            }
            Side::Client => {
                tls.on_eof();
                if self.relay.phase() == Phase::Routing {
                    self.relay.abort(CloseReason::Protocol);
                }
            }
        }
    }

    /// Counts the TLS handshake and truncation of a pair that ended, if its client spoke
    /// TLS.
    pub fn count_tls(&self, stats: &WorkerStats) {
        if let Some(tls) = &self.tls {
            tls.count(stats);
        }
    }
}
