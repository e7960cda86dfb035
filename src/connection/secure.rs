//! TLS on the connection layer: the glue between a [`Connection`] and its [`Tls`].
//!
//! Ciphertext the engine read goes to rustls, the plaintext it yields to the protocol (or,
//! for echo, straight back to rustls), and the protocol's output is sealed into records
//! before the engine sees it, so every engine drives a TLS connection exactly as a plain
//! one (and never gets [`Input::Echo`]).
//!
//! Counting against `--max-pending-output`: `out` and `unsent` hold records, so the output
//! bound counts ciphertext; `pending` (unanswered input) counts plaintext. During one event
//! the protocol appends plaintext to `out` after the records already there, and
//! [`Connection::seal`] encrypts that tail before the event returns: between events `out`
//! holds records only. A closing connection's `close_notify` is queued behind its last
//! record, so the FIN (sent once `queued()` is 0) follows it.

use super::{CloseReason, Connection, Input, Limits, Millis, Phase, WorkerStats};
use crate::protocol::ProtocolSpec;
use crate::tls::{Received, Tls};

/// A connection's TLS state, if `spec` terminates TLS: its handshake is due by `now` plus
/// the handshake timeout.
pub(super) fn start(spec: &ProtocolSpec, now: Millis) -> Option<Box<Tls>> {
    spec.tls.as_ref().map(|server| {
        let ms = server
            .handshake_timeout
            .as_millis()
            .min(u128::from(u32::MAX)) as Millis;
        Tls::new(server, if ms > 0 { now + ms } else { 0 })
    })
}

impl Connection {
    /// [`Connection::handle_input`] of an open TLS connection. Out of line, so that the
    /// plain path stays small enough to inline.
    #[inline(never)]
    pub(super) fn tls_input(&mut self, now: Millis, data: &[u8], limits: &Limits) -> Input {
        let Some(mut tls) = self.tls.take() else {
            return Input::Dropped;
        };
        let mark = self.out.len();
        let mut rest = data;
        let mut plain = Vec::new();
        while !rest.is_empty() && self.phase == Phase::Open {
            plain.clear();
            let got = tls.read(&mut rest, &mut plain);
            if !plain.is_empty() {
                if self.session.is_echo() {
                    tls.write(&plain);
                } else {
                    self.feed(now, &plain, limits);
                }
            }
            match got {
                Received::Records => {}
                Received::CloseNotify => {
                    self.input_ended();
                    break;
                }
                Received::Failed => {
                    self.extra_input = true;
                    self.close_after_flush(CloseReason::Protocol);
                }
            }
        }
        self.extra_input |= !rest.is_empty();
        self.tls = Some(tls);
        self.seal(mark);
        self.update_throttle(limits);
        Input::Consumed
    }

    /// Encrypts the plaintext the protocol appended to `out` after `mark`, queues the
    /// `close_notify` of a closing connection, and moves every record ready into `out`.
    #[inline]
    pub(super) fn seal(&mut self, mark: usize) {
        if self.tls.is_some() {
            self.seal_records(mark);
        }
    }

    #[inline(never)]
    fn seal_records(&mut self, mark: usize) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        if self.out.len() > mark {
            tls.write(&self.out[mark..]);
            self.out.truncate(mark);
        }
        if self.phase == Phase::Closing {
            tls.close();
        }
        tls.flush(&mut self.out);
    }

    /// The TLS handshake's deadline passed by `now`.
    pub(super) fn handshake_overdue(&self, now: Millis) -> bool {
        self.tls
            .as_ref()
            .and_then(|t| t.deadline())
            .is_some_and(|d| now >= d)
    }

    /// Ends a connection whose handshake was not done in time (the header timeout's twin,
    /// counted under the same close reason): closed after its queued records, or cut when
    /// the peer does not even read those.
    pub(super) fn handshake_timed_out(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.timed_out();
        }
        if self.queued() == 0 {
            self.close_after_flush(CloseReason::HeaderTimeout);
        } else {
            self.abort(CloseReason::HeaderTimeout);
        }
    }

    /// Counts a TLS connection's handshake and truncation in `stats`; the engine calls it
    /// once, when the connection ends.
    pub fn count_tls(&self, stats: &WorkerStats) {
        if let Some(tls) = &self.tls {
            WorkerStats::inc(&stats.tls_handshakes[tls.handshake().index()]);
            if tls.truncated() {
                WorkerStats::inc(&stats.tls_truncations);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    use super::super::{Action, Connection, Input, Limits, Phase};
    use crate::connection::CloseReason;
    use crate::protocol::{ProtocolKind, ProtocolSpec};
    use crate::tls::{CertPair, Handshake, ServerTls};

    /// A server spec for `kind` over TLS (handshake timeout 500 ms) and a client trusting it.
    fn setup(kind: ProtocolKind) -> (ProtocolSpec, ClientConnection) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["unit.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "ringd-unit-tls-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pair = CertPair {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        let mut spec = ProtocolSpec::with_defaults(kind);
        let http = kind == ProtocolKind::Http;
        let tls = ServerTls::load(&[pair], http, Duration::from_millis(500));
        let _ = std::fs::remove_dir_all(&dir);
        spec.tls = Some(tls.unwrap());
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("unit.test").unwrap();
        (spec, ClientConnection::new(Arc::new(config), name).unwrap())
    }

    /// Hands the client's records to the server.
    fn to_server(c: &mut Connection, client: &mut ClientConnection, l: &Limits) -> Input {
        let mut records = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut records).unwrap();
        }
        c.handle_input(2, &records, l)
    }

    /// Takes the server's output (without reporting it sent) into the client; the
    /// plaintext and whether a `close_notify` came.
    fn to_client(c: &mut Connection, client: &mut ClientConnection) -> (Vec<u8>, bool, usize) {
        let (mut plain, mut closed, mut n) = (Vec::new(), false, 0);
        while let Some(Action::Send { data, .. }) = c.poll_action() {
            n += data.len();
            let mut rest = &data[..];
            while !rest.is_empty() {
                client.read_tls(&mut rest).unwrap();
                let state = client.process_new_packets().unwrap();
                let at = plain.len();
                plain.resize(at + state.plaintext_bytes_to_read(), 0);
                client.reader().read_exact(&mut plain[at..]).unwrap();
                closed |= state.peer_has_closed();
            }
        }
        (plain, closed, n)
    }

    fn handshake(c: &mut Connection, client: &mut ClientConnection, l: &Limits) {
        for _ in 0..10 {
            if !client.is_handshaking() {
                break;
            }
            to_server(c, client, l);
            let (_, _, n) = to_client(c, client);
            c.handle_sent(3, n, l);
        }
        to_server(c, client, l);
        assert_eq!(c.tls.as_ref().unwrap().handshake(), Handshake::Done);
    }

    #[test]
    fn echo_is_decrypted_and_sealed_again_never_echoed_raw() {
        let l = Limits::for_tests(1000, 300, 64 * 1024);
        let (spec, mut client) = setup(ProtocolKind::Echo);
        let mut c = Connection::new(&spec, 1);
        handshake(&mut c, &mut client, &l);
        client.writer().write_all(b"ping").unwrap();
        assert_eq!(to_server(&mut c, &mut client, &l), Input::Consumed);
        let (plain, closed, _) = to_client(&mut c, &mut client);
        assert_eq!((plain.as_slice(), closed), (&b"ping"[..], false));
    }

    #[test]
    fn close_notify_follows_the_last_response_and_the_fin_follows_it() {
        let l = Limits::for_tests(1000, 300, 64 * 1024);
        let (spec, mut client) = setup(ProtocolKind::Http);
        let mut c = Connection::new(&spec, 1);
        handshake(&mut c, &mut client, &l);
        let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        client.writer().write_all(request).unwrap();
        to_server(&mut c, &mut client, &l);
        assert_eq!(c.phase(), Phase::Closing);
        let (plain, closed, n) = to_client(&mut c, &mut client);
        assert!(plain.starts_with(b"HTTP/1.1 200 OK"));
        assert!(closed, "close_notify after the response");
        assert_eq!(c.poll_action(), None, "no FIN before the records are sent");
        c.handle_sent(4, n - 1, &l);
        assert_eq!(
            c.poll_action(),
            None,
            "one byte of close_notify is not sent"
        );
        c.handle_sent(4, 1, &l);
        assert!(matches!(
            c.poll_action(),
            Some(Action::Fin | Action::Close { reset: false })
        ));
        assert_eq!(c.close_reason(), CloseReason::Protocol);
    }

    #[test]
    fn the_output_bound_counts_records() {
        let l = Limits::for_tests(1000, 300, 1000);
        let (spec, mut client) = setup(ProtocolKind::Echo);
        let mut c = Connection::new(&spec, 1);
        handshake(&mut c, &mut client, &l);
        client.writer().write_all(&[7; 1000]).unwrap();
        to_server(&mut c, &mut client, &l);
        assert!(c.queued() > 1000, "{} bytes of records queued", c.queued());
        assert!(!c.reading(), "at the bound: reading pauses");
        assert_eq!(c.room(&l), 0);
        let (plain, _, n) = to_client(&mut c, &mut client);
        assert_eq!(plain.len(), 1000);
        c.handle_sent(5, n, &l);
        assert!(c.reading(), "drained: reading resumes");
    }

    #[test]
    fn a_handshake_not_done_in_time_is_ended() {
        let l = Limits::for_tests(10_000, 0, 64 * 1024);
        let (spec, mut client) = setup(ProtocolKind::Echo);
        let mut c = Connection::new(&spec, 1);
        assert_eq!(
            c.poll_timeout(&l),
            Some(501),
            "the handshake's deadline comes first"
        );
        to_server(&mut c, &mut client, &l);
        c.handle_timeout(500, &l);
        assert_eq!(c.phase(), Phase::Open);
        c.handle_timeout(501, &l);
        assert_ne!(c.phase(), Phase::Open);
        assert_eq!(c.close_reason(), CloseReason::HeaderTimeout);
        assert_eq!(c.tls.as_ref().unwrap().handshake(), Handshake::TimedOut);
    }
}
