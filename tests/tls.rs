//! TLS termination on every engine, against a rustls client over a plain `TcpStream`:
//! handshakes (ALPN, SNI), echo, hello and http over TLS, and the close: every byte, then
//! the server's `close_notify`, then its FIN, with a 4 KiB server send buffer and a client
//! that reads slowly through a 4 KiB receive buffer. Also what must close a connection and
//! be counted without harming the server: garbage instead of a ClientHello, a refused ALPN
//! name, a handshake that stalls, a peer that truncates. Certificates are made here with
//! rcgen.

#[macro_use]
mod matrix;
mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringd::connection::WorkerStats;
use ringd::protocol::ProtocolSpec;
use ringd::tls::{CertPair, ServerTls};
use ringd::{EngineKind, ProtocolKind, Service};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// A self-signed certificate for one name, its PEM files on disk.
struct Cert {
    der: CertificateDer<'static>,
    pair: CertPair,
    /// The folder of the files, removed with the `Cert`.
    dir: PathBuf,
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate for `name` (and its key), written under the system's temporary folder.
fn cert(name: &str) -> Cert {
    static N: AtomicUsize = AtomicUsize::new(0);
    let key = rcgen::KeyPair::generate().expect("key");
    let c = rcgen::CertificateParams::new(vec![name.to_string()])
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

/// A one-worker server speaking `kind` over TLS with `certs` (the first the default), a
/// 4 KiB send buffer, and `setup` applied last.
fn tls_server(
    engine: EngineKind,
    kind: ProtocolKind,
    certs: &[&Cert],
    handshake_timeout: Duration,
    setup: impl FnOnce(&mut ringd::Config),
) -> ringd::ServerHandle {
    let pairs: Vec<CertPair> = certs.iter().map(|c| c.pair.clone()).collect();
    server_with(engine, kind, 1, |c| {
        let mut spec = ProtocolSpec::with_defaults(kind);
        let http = kind == ProtocolKind::Http;
        spec.tls = Some(ServerTls::load(&pairs, http, handshake_timeout).expect("TLS config"));
        c.service = Service::Protocol(spec);
        c.listen_options.send_buffer = Some(4096);
        setup(c);
    })
}

/// A client trusting `roots` only, offering `alpn`.
fn client_config(roots: &[&Cert], alpn: &[&[u8]]) -> Arc<ClientConfig> {
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
enum End {
    /// Its `close_notify`, then its FIN.
    Clean,
    /// Its FIN without a `close_notify` before it.
    Truncated,
}

/// A rustls client over a blocking-or-polled `TcpStream`.
struct Client {
    tls: ClientConnection,
    sock: TcpStream,
}

impl Client {
    /// Connects to `addr` asking for `name` and completes the handshake.
    fn connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> io::Result<Client> {
        let name = ServerName::try_from(name.to_string()).expect("name");
        let mut c = Client {
            tls: ClientConnection::new(config, name).expect("client"),
            sock: small_blocking_client(addr),
        };
        while c.tls.is_handshaking() {
            c.tls.complete_io(&mut c.sock)?;
        }
        Ok(c)
    }

    /// Sends `data` (then our `close_notify` if `close`) while reading, in small pieces
    /// with pauses if `slow`, until the server's FIN: what came, and how it ended. A reset
    /// or a bad record fails the test.
    fn exchange(&mut self, data: &[u8], close: bool, slow: bool) -> (Vec<u8>, End) {
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
    fn request(&mut self, request: &[u8], n: usize) -> Vec<u8> {
        self.tls.writer().write_all(request).unwrap();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.sock).unwrap();
        }
        let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
        while got.len() < n {
            let k = self.sock.read(&mut buf).unwrap();
            assert!(k > 0, "EOF after {} bytes", got.len());
            self.take(&buf[..k], &mut got);
        }
        got
    }

    /// Hands records to rustls and appends the plaintext; true once the server's
    /// `close_notify` came.
    fn take(&mut self, mut records: &[u8], got: &mut Vec<u8>) -> bool {
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

/// Waits (10 s at most) until `count` over the server's workers reaches `want`.
fn wait_count(server: &ringd::ServerHandle, count: impl Fn(&WorkerStats) -> u64, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: u64 = server.stats().iter().map(|s| count(s)).sum();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "counted {got}, not {want}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn handshakes(s: &WorkerStats, i: usize) -> u64 {
    s.tls_handshakes[i].load(Ordering::Relaxed)
}

/// Indexes of `WorkerStats::tls_handshakes`.
const HS_OK: usize = 0;
const HS_FAILED: usize = 1;
const HS_TIMEOUT: usize = 2;
const HANDSHAKE: Duration = Duration::from_secs(10);

every_engine! {
    #[test]
    fn echo_over_tls_closes_with_close_notify_then_fin_under_small_buffers() {
        let c = cert("echo.test");
        let server = tls_server(ENGINE, ProtocolKind::Echo, &[&c], HANDSHAKE, |_| {});
        let config = client_config(&[&c], &[]);
        for size in [1, 1000, 65_537, 1 << 20] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut client =
                Client::connect(server.local_addr(), config.clone(), "echo.test").unwrap();
            let (got, end) = client.exchange(&data, true, true);
            assert_eq!(got.len(), data.len(), "{size} bytes");
            assert!(got == data, "{size} bytes came back changed");
            assert_eq!(end, End::Clean, "{size} bytes");
        }
        wait_count(&server, |s| handshakes(s, HS_OK), 4);
        assert_eq!(server.stats()[0].tls_truncations.load(Ordering::Relaxed), 0);
        shutdown_clean(server);
    }

    #[test]
    fn hello_over_tls() {
        let c = cert("hello.test");
        let server = tls_server(ENGINE, ProtocolKind::Hello, &[&c], HANDSHAKE, |_| {});
        let config = client_config(&[&c], &[]);
        let mut client = Client::connect(server.local_addr(), config, "hello.test").unwrap();
        let (got, end) = client.exchange(b"hi", false, true);
        assert_eq!(got, b"Hello, world!");
        assert_eq!(end, End::Clean);
        shutdown_clean(server);
    }

    #[test]
    fn http_over_tls_keeps_alive_pipelines_and_says_http1_by_alpn() {
        let c = cert("www.test");
        let server = tls_server(ENGINE, ProtocolKind::Http, &[&c], HANDSHAKE, |_| {});
        let config = client_config(&[&c], &[b"h2", b"http/1.1"]);
        let mut client = Client::connect(server.local_addr(), config, "www.test").unwrap();
        assert_eq!(client.tls.alpn_protocol(), Some(&b"http/1.1"[..]));
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let first = client.request(get, common::OK.len());
        assert_eq!(undate(&first), common::OK, "keep-alive: the first answer alone");
        let mut burst = get.repeat(2);
        burst.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (got, end) = client.exchange(&burst, false, true);
        let text = String::from_utf8_lossy(&got);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
        assert_eq!(end, End::Clean);
        shutdown_clean(server);
    }

    #[test]
    fn sni_picks_the_certificate_and_the_first_is_the_default() {
        let (one, two) = (cert("one.test"), cert("two.test"));
        let server = tls_server(ENGINE, ProtocolKind::Echo, &[&one, &two], HANDSHAKE, |_| {});
        let addr = server.local_addr();
        // Each client trusts one certificate only: its handshake succeeds only if that one
        // was chosen.
        for (c, name) in [(&two, "two.test"), (&one, "one.test")] {
            let mut client = Client::connect(addr, client_config(&[c], &[]), name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let (got, _) = client.exchange(b"x", true, false);
            assert_eq!(got, b"x");
        }
        // Without SNI: the first certificate.
        let mut no_sni = (*client_config(&[&one], &[])).clone();
        no_sni.enable_sni = false;
        let mut client = Client::connect(addr, Arc::new(no_sni), "one.test").expect("no SNI");
        // Another name: the first certificate too, which the client refuses for that name.
        let other = Client::connect(addr, client_config(&[&one, &two], &[]), "other.test");
        let err = other.err().expect("no certificate is valid for other.test");
        let presented = match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { presented, .. },
            )) => presented.clone(),
            _ => panic!("{err}"),
        };
        assert_eq!(presented, ["DnsName(\"one.test\")"]);
        client.exchange(b"", true, false);
        shutdown_clean(server);
    }

    #[test]
    fn garbage_or_a_refused_hello_closes_that_connection_and_is_counted() {
        let c = cert("g.test");
        // No header timeout: only the failed handshake may close the connection.
        let server = tls_server(ENGINE, ProtocolKind::Http, &[&c], HANDSHAKE, |c| {
            c.header_timeout = Duration::ZERO
        });
        let addr = server.local_addr();
        let mut s = small_blocking_client(addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).expect("closed after the alert");
        assert!(
            !reply.starts_with(b"HTTP"),
            "plaintext HTTP was answered in plaintext"
        );
        wait_count(&server, |s| handshakes(s, HS_FAILED), 1);
        // A client that speaks only h2: no ALPN name in common.
        let refused = Client::connect(addr, client_config(&[&c], &[b"h2"]), "g.test");
        assert!(refused.is_err(), "a handshake without a shared ALPN name");
        wait_count(&server, |s| handshakes(s, HS_FAILED), 2);
        // The server is fine.
        let mut client = Client::connect(addr, client_config(&[&c], &[]), "g.test").unwrap();
        let (got, end) = client.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false, false);
        assert!(got.starts_with(b"HTTP/1.1 200 OK"));
        assert_eq!(end, End::Clean);
        wait_count(&server, |s| handshakes(s, HS_OK), 1);
        shutdown_clean(server);
    }

    #[test]
    fn a_stalled_handshake_is_closed_at_the_handshake_timeout() {
        let c = cert("slow.test");
        let server = tls_server(ENGINE, ProtocolKind::Echo, &[&c], Duration::from_millis(300), |_| {});
        let mut s = small_blocking_client(server.local_addr());
        // The first bytes of a ClientHello record, and nothing more.
        s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01]).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("closed, not left to the idle timeout");
        wait_count(&server, |s| handshakes(s, HS_TIMEOUT), 1);
        shutdown_clean(server);
    }

    #[test]
    fn a_peer_that_ends_without_close_notify_is_counted_as_a_truncation() {
        let c = cert("t.test");
        let server = tls_server(ENGINE, ProtocolKind::Echo, &[&c], HANDSHAKE, |_| {});
        let config = client_config(&[&c], &[]);
        let mut client = Client::connect(server.local_addr(), config.clone(), "t.test").unwrap();
        let got = client.request(b"abc", 3);
        assert_eq!(got, b"abc");
        client.sock.shutdown(std::net::Shutdown::Write).unwrap();
        client.exchange(b"", false, false);
        wait_count(&server, |s| s.tls_truncations.load(Ordering::Relaxed), 1);
        // A clean end is not one.
        let mut client = Client::connect(server.local_addr(), config, "t.test").unwrap();
        client.exchange(b"abc", true, false);
        wait_count(&server, |s| handshakes(s, HS_OK), 2);
        assert_eq!(server.stats()[0].tls_truncations.load(Ordering::Relaxed), 1);
        shutdown_clean(server);
    }

    #[test]
    fn openssl_s_client_gets_the_greeting() {
        if std::process::Command::new("openssl").arg("version").output().is_err() {
            println!("openssl is not installed: the s_client check is skipped");
            return;
        }
        let c = cert("ossl.test");
        let server = tls_server(ENGINE, ProtocolKind::Hello, &[&c], HANDSHAKE, |_| {});
        let out = openssl_hello(server.local_addr(), &c);
        assert!(out.contains("Hello, world!"), "{out}");
        shutdown_clean(server);
    }
    #[test]
    fn a_reload_serves_the_new_certificate_and_keeps_the_old_for_a_bad_one() {
        let (old, new) = (cert("reload.test"), cert("reload.test"));
        let dir = std::env::temp_dir().join(format!("ringd-tls-reload-{}-{}", std::process::id(), ENGINE.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pem, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let install = |c: &Cert| {
            std::fs::copy(&c.pair.cert, &pem).unwrap();
            std::fs::copy(&c.pair.key, &key).unwrap();
        };
        install(&old);
        let config = dir.join("ringd.toml");
        std::fs::write(
            &config,
            format!(
                "protocol = \"hello\"\nthreads = 1\nmetrics = \"127.0.0.1:0\"\ntls-cert = [{pem:?}]\ntls-key = [{key:?}]\n"
            ),
        )
        .unwrap();
        let ringd = RingdProcess::start(
            &["--engine", ENGINE.name(), "--config", config.to_str().unwrap()],
            None,
        );
        let hello_with = |c: &Cert| {
            Client::connect(ringd.addr, client_config(&[c], &[]), "reload.test")
                .map(|mut client| client.exchange(b"hi", true, false).0)
        };
        assert!(hello_with(&old).unwrap().starts_with(b"Hello"));
        assert!(hello_with(&new).is_err(), "the new certificate is not served yet");
        let reloads = |result: &str| {
            let text = http_get(ringd.metrics_addr(), "/metrics");
            let label = format!("result=\"{result}\"");
            ringd::metrics::sum_metric(&text, "ringd_config_reloads_total", &label)
        };
        install(&new);
        ringd.signal(libc::SIGHUP);
        wait_until(|| reloads("ok") == 1);
        assert!(hello_with(&new).unwrap().starts_with(b"Hello"), "the new certificate serves");
        std::fs::write(&pem, "not a certificate").unwrap();
        ringd.signal(libc::SIGHUP);
        wait_until(|| reloads("failed") == 1);
        assert!(
            hello_with(&new).unwrap().starts_with(b"Hello"),
            "a bad certificate is refused and the one in force goes on serving"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Waits (10 s at most) until `cond` holds.
fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The body of `GET path` from `addr`.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Runs `openssl s_client` against `addr`, verifying `cert`, sends a line and returns what
/// it printed.
fn openssl_hello(addr: SocketAddr, cert: &Cert) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("timeout")
        .args([
            "20",
            "openssl",
            "s_client",
            "-quiet",
            "-verify_return_error",
        ])
        .args(["-connect", &addr.to_string(), "-servername", "ossl.test"])
        .arg("-CAfile")
        .arg(&cert.pair.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().expect("openssl ends");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file removed when this is dropped.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the ringd binary with `args`, which it must refuse at start (within 10 s): its exit
/// code and stderr.
fn refused(args: &[&std::ffi::OsStr]) -> (i32, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringd"))
        .args(["--listen", "127.0.0.1:0", "--threads", "1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringd runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringd started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("ringd ends");
    let code = out.status.code().expect("an exit, not a signal");
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_tls_files_and_proxy_mode_are_refused_in_one_line() {
    let (a, b) = (cert("a.test"), cert("b.test"));
    let garbage = std::env::temp_dir().join(format!("ringd-tls-garbage-{}", std::process::id()));
    std::fs::write(&garbage, "not PEM\n").unwrap();
    let _remove = Removed(garbage.clone());
    let cases: [(&[&std::ffi::OsStr], &str); 4] = [
        (
            &[
                "--tls-cert".as_ref(),
                garbage.as_ref(),
                "--tls-key".as_ref(),
                a.pair.key.as_ref(),
            ],
            "no CERTIFICATE",
        ),
        (
            &[
                "--tls-cert".as_ref(),
                a.pair.cert.as_ref(),
                "--tls-key".as_ref(),
                garbage.as_ref(),
            ],
            "key",
        ),
        (
            &[
                "--tls-cert".as_ref(),
                a.pair.cert.as_ref(),
                "--tls-key".as_ref(),
                b.pair.key.as_ref(),
            ],
            "cannot serve",
        ),
        (
            &[
                "--protocol".as_ref(),
                "proxy".as_ref(),
                "--upstream".as_ref(),
                "127.0.0.1:9".as_ref(),
                "--tls-cert".as_ref(),
                a.pair.cert.as_ref(),
                "--tls-key".as_ref(),
                a.pair.key.as_ref(),
            ],
            "TLS termination in proxy mode is not supported yet",
        ),
    ];
    for (args, says) in cases {
        let (code, err) = refused(args);
        assert_ne!(code, 0, "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(says) && !err.contains("panicked"), "{err}");
    }
}
