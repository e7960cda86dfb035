//! A session's TLS side: plaintext sealed into records as the socket takes them, records
//! read and opened into the plaintext the framing sees, and the `close_notify` of a clean
//! close. Without TLS none of this runs.

use super::{Next, Session, Spec};
use crate::client::pattern_window;
use crate::client::tls::Incoming;
use crate::stats::{ErrorKind, Recorder};

impl Session {
    /// TLS: seals queued plaintext into records while few are waiting to be written.
    #[inline]
    pub(super) fn seal(&mut self) {
        let Some(tls) = self.tls.as_mut() else { return };
        while tls.has_room() {
            let n = if self.out_pos < self.out.len() {
                let n = tls.seal(&self.out[self.out_pos..]);
                self.out_pos += n;
                if self.out_pos >= self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                }
                n
            } else if self.tx_written < self.tx_queued {
                let left = self.tx_queued - self.tx_written;
                let n = tls.seal(pattern_window(self.id, self.tx_written, left));
                self.tx_written += n as u64;
                n
            } else {
                0
            };
            if n == 0 {
                break;
            }
        }
    }

    /// TLS: queues a `close_notify` behind what was sealed, if the handshake is done; true
    /// if there is one to write. Without TLS, false.
    pub fn close_notify(&mut self) -> bool {
        self.tls.as_mut().is_some_and(|tls| tls.close())
    }

    /// TLS: records read from the socket, decrypted; the plaintext they carry goes to the
    /// framing, piece by piece, as plain bytes would.
    pub(super) fn records(
        &mut self,
        spec: &Spec,
        mut data: &[u8],
        now: u64,
        rec: &mut Recorder,
    ) -> Next {
        let Some(mut tls) = self.tls.take() else {
            return Next::Continue;
        };
        let mut next = Next::Continue;
        while !data.is_empty() && next == Next::Continue {
            let (incoming, handshake) = tls.read(&mut data, now);
            if let Some((took, resumed)) = handshake {
                rec.handshake(took, resumed, now);
            }
            loop {
                let piece = tls.plaintext();
                if piece.is_empty() {
                    break;
                }
                let n = piece.len();
                next = self.plaintext(spec, piece, now, rec);
                tls.consume(n);
                if next != Next::Continue {
                    break;
                }
            }
            next = match (next, incoming) {
                (Next::Continue, Incoming::Failed(why)) => Next::Failed(ErrorKind::Tls, why),
                // rustls takes a close_notify for one only once application data may
                // flow; before, it is an alert that fails the handshake.
                (Next::Continue, Incoming::CloseNotify) => {
                    self.tls = Some(tls);
                    return self.end_of_stream(spec, now, rec, true);
                }
                (next, _) => next,
            };
        }
        self.tls = Some(tls);
        if next == Next::Continue {
            // The handshake may have let plaintext through, or made room for more.
            self.seal();
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use ringd_common::ProtocolKind;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::ServerConnection;

    use super::*;
    use crate::client::{Pending, TlsClient, Trust};

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

    fn server() -> ServerConnection {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        ServerConnection::new(Arc::new(config)).unwrap()
    }

    fn client(http: bool) -> TlsClient {
        TlsClient::new(&["localhost".into()], &Trust::Insecure, http, false, None).unwrap()
    }

    fn spec<'a>(protocol: ProtocolKind, payloads: &'a [Vec<u8>], tls: &'a TlsClient) -> Spec<'a> {
        Spec {
            protocol,
            crr: false,
            size: 100,
            verify: true,
            payloads,
            greeting: b"",
            expect_status: None,
            tls: Some(tls),
        }
    }

    /// Moves records both ways until neither side has any; `answer` turns the plaintext the
    /// server got into its reply. Returns what the session last said.
    fn exchange(
        s: &mut Session,
        spec: &Spec,
        server: &mut ServerConnection,
        rec: &mut Recorder,
        answer: impl Fn(&[u8]) -> Vec<u8>,
    ) -> Next {
        loop {
            let mut moved = false;
            while let Some(out) = s.transmit() {
                let records = out.to_vec();
                s.written(records.len(), 1, rec);
                let mut input = &records[..];
                while !input.is_empty() {
                    server.read_tls(&mut input).unwrap();
                    server.process_new_packets().unwrap();
                }
                let mut plain = Vec::new();
                let _ = server.reader().read_to_end(&mut plain);
                server.writer().write_all(&answer(&plain)).unwrap();
                moved = true;
            }
            while server.wants_write() {
                let mut records = Vec::new();
                server.write_tls(&mut records).unwrap();
                let next = s.received(spec, &records, 2, rec);
                if next != Next::Continue {
                    return next;
                }
                moved = true;
            }
            if !moved {
                return Next::Continue;
            }
        }
    }

    #[test]
    fn echo_through_tls_is_verified_and_its_handshake_recorded() {
        let tls = client(false);
        let spec = spec(ProtocolKind::Echo, &[], &tls);
        let (mut s, mut rec) = (Session::new(3, 0, false), Recorder::new(0, 0));
        let mut server = server();
        s.connected(&spec, 0);
        assert_eq!(
            s.transmit().map(|b| b[0]),
            Some(0x16),
            "a handshake record first"
        );
        for t in 0..3 {
            s.queue(&spec, Pending::new(t, t));
        }
        let next = exchange(&mut s, &spec, &mut server, &mut rec, <[u8]>::to_vec);
        assert_eq!(next, Next::Continue);
        let c = &rec.stats.counters;
        assert_eq!((c.completed, c.failed, c.mismatched_bytes), (3, 0, 0));
        assert_eq!((c.tls_handshakes, c.tls_resumed), (1, 0));
        assert_eq!(rec.stats.handshake.len(), 1);
        // What went out was records: more than the 300 bytes of plaintext.
        assert!(c.bytes_sent > 300, "{c:?}");
    }

    #[test]
    fn a_reply_the_close_delimits_needs_the_close_notify() {
        let tls = client(true);
        let payloads = [GET.to_vec()];
        let spec = spec(ProtocolKind::Http, &payloads, &tls);
        let reply = |plain: &[u8]| match plain.is_empty() {
            true => Vec::new(),
            false => b"HTTP/1.1 200 OK\r\n\r\nuntil the close".to_vec(),
        };
        // Its close_notify ends the body: the response is whole.
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(0, 0));
        let mut server = server();
        s.connected(&spec, 0);
        s.queue(&spec, Pending::new(0, 0));
        assert_eq!(
            exchange(&mut s, &spec, &mut server, &mut rec, reply),
            Next::Continue
        );
        server.send_close_notify();
        let next = exchange(&mut s, &spec, &mut server, &mut rec, reply);
        assert_eq!(
            (next, rec.stats.counters.completed),
            (Next::ServerClosed, 1)
        );
        // A FIN alone may be a truncation: the response fails.
        s.reset();
        let mut server = self::server();
        s.connected(&spec, 0);
        s.queue(&spec, Pending::new(0, 0));
        assert_eq!(
            exchange(&mut s, &spec, &mut server, &mut rec, reply),
            Next::Continue
        );
        let next = s.eof(&spec, 3, &mut rec);
        assert!(
            matches!(next, Next::Failed(ErrorKind::ShortResponse, _)),
            "{next:?}"
        );
        assert_eq!(rec.stats.counters.completed, 1);
    }

    #[test]
    fn an_end_before_the_handshake_is_a_tls_error() {
        let tls = client(true);
        let payloads = [GET.to_vec()];
        let spec = spec(ProtocolKind::Http, &payloads, &tls);
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(0, 0));
        s.connected(&spec, 0);
        s.queue(&spec, Pending::new(0, 0));
        assert!(s.transmit().is_some(), "the ClientHello goes out first");
        assert!(
            !s.close_notify(),
            "nothing to close cleanly before the handshake"
        );
        let next = s.eof(&spec, 1, &mut rec);
        assert!(matches!(next, Next::Failed(ErrorKind::Tls, _)), "{next:?}");
        let next = s.received(&spec, b"HTTP/1.1 200 OK\r\n\r\n", 1, &mut rec);
        assert!(matches!(next, Next::Failed(ErrorKind::Tls, _)), "{next:?}");
    }

    #[test]
    fn partial_writes_keep_the_record_buffer_bounded() {
        let tls = client(false);
        let payloads = [vec![7u8; 100]];
        let spec = spec(ProtocolKind::Echo, &payloads, &tls);
        let (mut s, mut rec) = (Session::new(0, 0, false), Recorder::new(0, 0));
        let mut server = server();
        s.connected(&spec, 0);
        exchange(&mut s, &spec, &mut server, &mut rec, |_| Vec::new());
        let t = s.tls.as_mut().unwrap();
        assert!(t.handshake_done());
        // A socket that always leaves the last 1,000 bytes for later, while more is sealed.
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..200 {
            while t.has_room() {
                t.seal(&chunk);
            }
            let n = t.pending().unwrap().len();
            t.written(n - 1000);
        }
        assert!(t.wire_capacity() < 1 << 20, "{}", t.wire_capacity());
    }
}
