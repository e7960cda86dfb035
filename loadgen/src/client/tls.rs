//! TLS between a load connection's socket bytes and its plaintext client side. rustls is
//! sans-IO: the [`Session`](super::Session) hands a [`Tls`] the records its engine read and
//! gets plaintext for its framing; it hands it request bytes and gets records, which the
//! engine writes as it writes plain bytes. The engines have no TLS code.
//!
//! [`TlsClient`] is built once from the command line (`--tls`, `https://`, `--cacert`,
//! `--insecure`, `--tls-sni`, `--tls-resume`); each socket has one [`Tls`] from its connect
//! to its close.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind};
use rustls::{RootCertStore, SignatureScheme, SupportedProtocolVersion};

/// ALPN name offered when the run speaks HTTP.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Ciphertext a socket may have waiting to be written before no more plaintext is sealed:
/// four full records. More waits in the session, as plaintext.
const WIRE_LIMIT: usize = 4 * 16 * 1024;
/// Most plaintext sealed in one call to rustls: one full record.
const SEAL_CHUNK: usize = 16 * 1024;

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Against the CA certificates of this PEM file (`--cacert`).
    CaFile(std::path::PathBuf),
    /// Not at all (`--insecure`).
    Insecure,
}

/// A TLS protocol version (`--tls-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

/// What every TLS socket of a run uses: rustls' client configuration and the server name
/// each target is asked for (SNI) and checked against.
#[derive(Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// Per target, in target order.
    names: Vec<ServerName<'static>>,
}

impl TlsClient {
    /// A client for targets named `names` (SNI, and the name the certificate must hold),
    /// offering ALPN `http/1.1` when `http`, resuming sessions only when `resume`, and
    /// protocol version `only` alone if given (else 1.3 and 1.2). Reads and checks the CA
    /// file now, so that a bad one is an error before anything starts.
    pub fn new(
        names: &[String],
        trust: &Trust,
        http: bool,
        resume: bool,
        only: Option<TlsVersion>,
    ) -> Result<Self, String> {
        // `ring` has no post-quantum key exchange, which is why its provider is deprecated;
        // it needs no cmake and no system library, which is why it is used.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&SupportedProtocolVersion] = match only {
            Some(TlsVersion::V1_2) => &[&rustls::version::TLS12],
            Some(TlsVersion::V1_3) => &[&rustls::version::TLS13],
            None => rustls::DEFAULT_VERSIONS,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?;
        let mut config = match trust {
            Trust::CaFile(path) => builder
                .with_root_certificates(roots(path)?)
                .with_no_client_auth(),
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth(),
        };
        if http {
            config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        }
        if !resume {
            config.resumption = Resumption::disabled();
        }
        let config = Arc::new(config);
        let names = names
            .iter()
            .map(|n| {
                let name = ServerName::try_from(n.as_str())
                    .map_err(|_| format!("bad TLS server name {n:?} (try --tls-sni NAME)"))?
                    .to_owned();
                // What a socket's connection is made of is checked here, once: every later
                // one is made the same way.
                ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| format!("TLS for {n:?}: {e}"))?;
                Ok(name)
            })
            .collect::<Result<_, String>>()?;
        Ok(TlsClient { config, names })
    }
}

/// The CA certificates of a PEM file.
fn roots(path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let mut store = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("--cacert {shown}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--cacert {shown}: {e}"))?;
        store
            .add(cert)
            .map_err(|e| format!("--cacert {shown}: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!(
            "--cacert {shown}: no certificate in it (PEM expected)"
        ));
    }
    Ok(store)
}

/// `--insecure`: any certificate is taken for any name. Handshake signatures are still
/// checked with the key the certificate holds, so the handshake costs what a checked one
/// does, bar the chain.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a piece of ciphertext handed to [`Tls::read`] brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Records, or part of one; plaintext, if any, is in [`Tls::plaintext`].
    Records,
    /// The server's `close_notify`: a clean end of its stream.
    CloseNotify,
    /// The handshake failed or the server broke the protocol; the text says how.
    Failed(&'static str),
}

/// One socket's TLS: rustls' client connection, the records waiting to be written, and
/// when its handshake started.
#[derive(Debug)]
pub struct Tls {
    conn: ClientConnection,
    /// Records to write, from `wire_pos` on.
    wire: Vec<u8>,
    wire_pos: usize,
    /// When the socket connected (ns): the handshake's start.
    started: u64,
    /// The handshake is done (and was recorded).
    done: bool,
}

impl Tls {
    /// Starts the handshake with target `target` of `client`, at `now`: the ClientHello
    /// is the first thing [`Tls::pending`] has.
    pub fn new(client: &TlsClient, target: usize, now: u64) -> Box<Self> {
        let conn = ClientConnection::new(client.config.clone(), client.names[target].clone())
            // Depends on the configuration and the name alone, both checked by
            // `TlsClient::new`, which made one connection of each.
            .expect("a checked TLS configuration makes connections");
        let mut tls = Box::new(Tls {
            conn,
            wire: Vec::new(),
            wire_pos: 0,
            started: now,
            done: false,
        });
        tls.flush();
        tls
    }

    /// The handshake is done.
    pub fn handshake_done(&self) -> bool {
        self.done
    }

    /// Records to write next, if any.
    pub fn pending(&self) -> Option<&[u8]> {
        (self.wire_pos < self.wire.len()).then(|| &self.wire[self.wire_pos..])
    }

    /// `n` bytes of [`Tls::pending`] were written.
    pub fn written(&mut self, n: usize) {
        self.wire_pos += n;
        if self.wire_pos >= self.wire.len() {
            self.wire.clear();
            self.wire_pos = 0;
        } else if self.wire_pos >= self.wire.len() - self.wire_pos {
            // Partial writes while more is sealed behind them: drop the written front once
            // it is at least as long as what is left, so the buffer stays near its bound.
            self.wire.drain(..self.wire_pos);
            self.wire_pos = 0;
        }
    }

    /// The record buffer's size in memory.
    #[cfg(test)]
    pub fn wire_capacity(&self) -> usize {
        self.wire.capacity()
    }

    /// True while more plaintext may be sealed: the records waiting are few.
    pub fn has_room(&self) -> bool {
        self.wire.len() - self.wire_pos < WIRE_LIMIT
    }

    /// Seals the front of `plain` into records; returns how much it took (0 when rustls
    /// holds all it will before the handshake is done).
    pub fn seal(&mut self, plain: &[u8]) -> usize {
        let chunk = &plain[..plain.len().min(SEAL_CHUNK)];
        let n = self.conn.writer().write(chunk).unwrap_or(0);
        self.flush();
        n
    }

    /// Queues our `close_notify` behind every record sealed so far, if the handshake is
    /// done (before it there is nothing to close cleanly); true if it did.
    pub fn close(&mut self) -> bool {
        if !self.done {
            return false;
        }
        self.conn.send_close_notify();
        self.flush();
        true
    }

    /// Takes ciphertext from the front of `input` (rustls takes at most a few records at a
    /// time: call again while `input` is not empty). A handshake that completes is
    /// returned as how long it took and whether it resumed a session.
    pub fn read(&mut self, input: &mut &[u8], now: u64) -> (Incoming, Option<(u64, bool)>) {
        if self.conn.read_tls(input).is_err() {
            return (Incoming::Failed("TLS: a record too large"), None);
        }
        let state = match self.conn.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                // The alert rustls queued is not sent: the socket closes at once.
                return (Incoming::Failed(describe(&e)), None);
            }
        };
        let mut handshake = None;
        if !self.done && !self.conn.is_handshaking() {
            self.done = true;
            let resumed = self.conn.handshake_kind() == Some(HandshakeKind::Resumed);
            handshake = Some((now.saturating_sub(self.started).max(1), resumed));
        }
        self.flush();
        match state.peer_has_closed() {
            true => (Incoming::CloseNotify, handshake),
            false => (Incoming::Records, handshake),
        }
    }

    /// The plaintext rustls holds, in pieces: call [`Tls::consume`] with each piece's
    /// length before asking for the next; empty when there is none.
    pub fn plaintext(&mut self) -> &[u8] {
        // An error here is the peer's EOF without a close_notify, which the socket's own
        // end reports.
        self.conn.reader().into_first_chunk().unwrap_or(&[])
    }

    /// `n` bytes of [`Tls::plaintext`] were handled.
    pub fn consume(&mut self, n: usize) {
        self.conn.reader().consume(n);
    }

    /// Appends every record rustls has ready to the bytes to write.
    fn flush(&mut self) {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.wire) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// A failed handshake or a broken record, in a few words (the run's last error).
fn describe(e: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(_) => "TLS: the server's certificate was refused",
        E::AlertReceived(_) => "TLS: the server sent an alert",
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "TLS: the server sent something that is not TLS as expected"
        }
        E::PeerIncompatible(_) => "TLS: no version, cipher suite or group in common",
        E::NoApplicationProtocol => "TLS: no ALPN protocol in common",
        E::DecryptError => "TLS: a record did not decrypt",
        _ => "TLS: the handshake or a record failed",
    }
}
