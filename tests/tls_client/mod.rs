//! What the tests of TLS share: self-signed certificates made with rcgen, and a rustls
//! client over a blocking `TcpStream` with a small receive buffer that can read slowly.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringd::tls::CertPair;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::common::small_blocking_client;

/// A self-signed certificate for one name, its PEM files on disk.
pub struct Cert {
    pub der: CertificateDer<'static>,
    pub pair: CertPair,
    /// The folder of the files, removed with the `Cert`.
    dir: PathBuf,
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate for `name` (and its key), written under the system's temporary folder.
pub fn cert(name: &str) -> Cert {
    cert_for(vec![name.to_string()])
}

/// A certificate for every name of `names` (the more names, the larger it is).
pub fn cert_for(names: Vec<String>) -> Cert {
    static N: AtomicUsize = AtomicUsize::new(0);
    let key = rcgen::KeyPair::generate().expect("key");
    let c = rcgen::CertificateParams::new(names)
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let dir = std::env::temp_dir().join(format!(
        "ringd-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let (cert, key_path): (PathBuf, PathBuf) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.pem()).expect("write certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    Cert {
        der: c.der().clone(),
        pair: CertPair {
            cert,
            key: key_path,
        },
        dir,
    }
}

/// A client trusting `roots` only, offering `alpn`.
pub fn client_config(roots: &[&Cert], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.der.clone()).expect("root");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
}

/// How the server's stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Its `close_notify`, then its FIN.
    Clean,
    /// Its FIN without a `close_notify` before it.
    Truncated,
}

/// A rustls client over a blocking-or-polled `TcpStream`.
pub struct Client {
    pub tls: ClientConnection,
    pub sock: TcpStream,
}

impl Client {
    /// Connects to `addr` asking for `name` and completes the handshake.
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> io::Result<Client> {
        let name = ServerName::try_from(name.to_string()).expect("name");
        let mut c = Client {
            tls: ClientConnection::new(config, name).expect("client"),
            sock: small_blocking_client(addr),
        };
        while c.tls.is_handshaking() {
            match c.tls.complete_io(&mut c.sock) {
                // A signal to this test process (another test's child, say) is not an end.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                done => drop(done?),
            }
        }
        Ok(c)
    }

    /// Sends `data` (then our `close_notify` if `close`) while reading, in small pieces
    /// with pauses if `slow`, until the server's FIN: what came, and how it ended. A reset
    /// or a bad record fails the test.
    pub fn exchange(&mut self, data: &[u8], close: bool, slow: bool) -> (Vec<u8>, End) {
        self.sock.set_nonblocking(true).unwrap();
        let (mut rest, mut got, mut notified, mut closed) = (data, Vec::new(), false, false);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = vec![0u8; if slow { 512 } else { 64 * 1024 }];
        for round in 0u64.. {
            assert!(
                Instant::now() < deadline,
                "stalled after {} bytes",
                got.len()
            );
            if !rest.is_empty() && !self.tls.wants_write() {
                let n = rest.len().min(16 * 1024);
                self.tls.writer().write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            if rest.is_empty() && close && !closed {
                self.tls.send_close_notify();
                closed = true;
            }
            while self.tls.wants_write() {
                match self.tls.write_tls(&mut self.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("send: {e}"),
                }
            }
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    let end = if notified { End::Clean } else { End::Truncated };
                    return (got, end);
                }
                Ok(n) => notified |= self.take(&buf[..n], &mut got),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("after {} bytes: {e}", got.len()),
            }
            if slow && round % 64 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        unreachable!()
    }

    /// Sends `request` and reads `n` bytes of plaintext back (blocking).
    pub fn request(&mut self, request: &[u8], n: usize) -> Vec<u8> {
        self.tls.writer().write_all(request).unwrap();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.sock).unwrap();
        }
        let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
        while got.len() < n {
            let k = match self.sock.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => read.unwrap(),
            };
            assert!(k > 0, "EOF after {} bytes", got.len());
            self.take(&buf[..k], &mut got);
        }
        got
    }

    /// Hands records to rustls and appends the plaintext; true once the server's
    /// `close_notify` came.
    pub fn take(&mut self, mut records: &[u8], got: &mut Vec<u8>) -> bool {
        let mut closed = false;
        while !records.is_empty() {
            self.tls.read_tls(&mut records).expect("records");
            let state = self
                .tls
                .process_new_packets()
                .expect("the server's records");
            let at = got.len();
            got.resize(at + state.plaintext_bytes_to_read(), 0);
            self.tls.reader().read_exact(&mut got[at..]).unwrap();
            closed |= state.peer_has_closed();
        }
        closed
    }
}

/// Reads until the server closes `s` (a reset counts as closed; fails after 10 s): what
/// came before.
pub fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("after {} bytes: {e}", got.len()),
    }
    got
}
