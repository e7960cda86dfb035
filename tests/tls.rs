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
mod tls_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringd::connection::WorkerStats;
use ringd::protocol::ProtocolSpec;
use ringd::tls::{CertPair, ServerTls};
use ringd::{EngineKind, ProtocolKind, Service};
use tls_client::*;

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
fn bad_tls_files_are_refused_in_one_line() {
    let (a, b) = (cert("a.test"), cert("b.test"));
    let garbage = std::env::temp_dir().join(format!("ringd-tls-garbage-{}", std::process::id()));
    std::fs::write(&garbage, "not PEM\n").unwrap();
    let _remove = Removed(garbage.clone());
    let cases: [(&[&std::ffi::OsStr], &str); 3] = [
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
    ];
    for (args, says) in cases {
        let (code, err) = refused(args);
        assert_ne!(code, 0, "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(says) && !err.contains("panicked"), "{err}");
    }
}
