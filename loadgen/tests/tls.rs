//! loadgen over TLS, on both engines, against ringd terminating TLS and against small rustls
//! (or not-TLS) servers that misbehave: https keep-alive and crr with --verify, echo and
//! hello with --tls, full handshakes per transaction, resumption, a certificate refused or
//! unchecked, garbage instead of a ServerHello, and how the close is judged (a reply cut
//! without `close_notify`, loadgen's own `close_notify`). Certificates are made by rcgen in
//! the test.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use loadgen::report::{Report, EXIT_FAILED};
use loadgen::run::RunResult;
use loadgen::stats::ErrorKind;
use ringd::protocol::ProtocolSpec;
use ringd::tls::{CertPair, ServerTls};
use ringd::{EngineKind, ProtocolKind, Service};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed certificate for `names`, its PEM files in a folder removed with it.
struct Cert {
    pair: CertPair,
    dir: PathBuf,
}

impl Cert {
    fn new(names: &[&str]) -> Cert {
        static N: AtomicUsize = AtomicUsize::new(0);
        let key = rcgen::KeyPair::generate().expect("key");
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let c = rcgen::CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let dir = std::env::temp_dir().join(format!(
            "loadgen-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        let pair = CertPair {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&pair.cert, c.pem()).expect("write certificate");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        Cert { pair, dir }
    }

    /// The certificate file, as `--cacert` takes it.
    fn path(&self) -> &str {
        self.pair.cert.to_str().expect("a UTF-8 temporary path")
    }

    /// A rustls server configuration serving this certificate.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_of(rustls::DEFAULT_VERSIONS)
    }

    /// The same, speaking `versions` only.
    fn server_config_of(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_file_iter(&self.pair.cert)
            .expect("certificate file")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate");
        let key = PrivateKeyDer::from_pem_file(&self.pair.key).expect("key");
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        Arc::new(config)
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ringd in-process, epoll engine, terminating TLS with `cert`.
fn ringd_tls(protocol: ProtocolKind, cert: &Cert) -> ringd::ServerHandle {
    let mut config =
        ringd::Config::new("127.0.0.1:0".parse().unwrap(), protocol, EngineKind::Epoll);
    let mut spec = ProtocolSpec::with_defaults(protocol);
    let http = protocol == ProtocolKind::Http;
    let tls = ServerTls::load(
        std::slice::from_ref(&cert.pair),
        http,
        Duration::from_secs(10),
    );
    spec.tls = Some(tls.expect("TLS config"));
    config.service = Service::Protocol(spec);
    ringd::start(config).expect("ringd starts")
}

fn https(addr: SocketAddr, path: &str) -> String {
    format!("https://{addr}{path}")
}

/// Runs loadgen in-process against `target` with `args`, split at spaces.
fn run(target: &str, args: &str) -> RunResult {
    load(target, &args.split_whitespace().collect::<Vec<_>>())
}

/// Every request ended once, no error of any kind, and every handshake counted.
fn assert_clean(r: &RunResult, completed: u64) {
    assert_counts_add_up(r);
    let c = &r.stats.counters;
    let outcome = (c.completed, c.failed, c.errors_total());
    assert_eq!(outcome, (completed, 0, 0), "{c:?}");
    assert_eq!(c.tls_handshakes, c.connects, "{c:?}");
}

/// No request completed, and every error was of `kind`.
fn assert_only_errors_of(r: &RunResult, kind: ErrorKind) {
    assert_counts_add_up(r);
    let c = &r.stats.counters;
    assert_eq!(c.completed, 0, "{c:?}");
    assert!(c.errors_of(kind) > 0, "{c:?}");
    assert_eq!(c.errors_total(), c.errors_of(kind), "{c:?}");
}

fn https_keep_alive_verifies_over_ringd() {
    let cert = Cert::new(&["127.0.0.1"]);
    let server = ringd_tls(ProtocolKind::Http, &cert);
    let target = https(server.local_addr(), "/");
    for pipeline in [1, 4] {
        let ca = cert.path();
        let args =
            format!("--cacert {ca} -c 2 -t 1 -n 300 --warmup 0s --verify --pipeline {pipeline}");
        let r = run(&target, &args);
        assert_clean(&r, 300);
        let c = &r.stats.counters;
        assert_eq!(
            (c.connects, c.tls_handshakes, c.status_classes[2]),
            (2, 2, 300)
        );
        assert_eq!(r.stats.handshake.len(), 2);
        let report = Report::new(&r);
        assert_eq!(report.exit_code, 0);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["tls"]["handshakes"], 2);
        assert_eq!(json["handshake_latency_ns"]["count"], 2);
        assert_eq!(json["errors"]["tls"], 0);
        let config = &json["config"]["tls"];
        assert_eq!(
            (&config["sni"][0], &config["alpn"][0]),
            (&"127.0.0.1".into(), &"http/1.1".into())
        );
        assert_eq!(
            (&config["resume"], &config["trust"]["cafile"]),
            (&false.into(), &ca.into())
        );
    }
}

fn echo_and_hello_verify_over_tls() {
    let cert = Cert::new(&["localhost"]);
    let echo = ringd_tls(ProtocolKind::Echo, &cert);
    let target = format!("localhost:{}", echo.local_addr().port());
    let tls = format!("--tls --cacert {} --warmup 0s --verify", cert.path());
    // Requests larger than a record, a stream of them, and one per connection.
    for (args, completed) in [
        ("--size 40000 -c 2 -n 200", 200),
        ("--mode stream --size 16KiB -c 1 -n 500", 500),
        ("--mode crr -c 2 -n 50", 50),
    ] {
        let r = run(&target, &format!("{tls} {args}"));
        assert_clean(&r, completed);
        assert_eq!(r.stats.counters.mismatched_bytes, 0);
    }
    let hello = ringd_tls(ProtocolKind::Hello, &cert);
    let target = format!("localhost:{}", hello.local_addr().port());
    let r = run(&target, &format!("{tls} --protocol hello -c 2 -n 50"));
    assert_clean(&r, 50);
    assert_eq!(r.stats.counters.tls_handshakes, 50);
}

fn crr_does_a_full_handshake_per_transaction() {
    let cert = Cert::new(&["127.0.0.1"]);
    let server = ringd_tls(ProtocolKind::Http, &cert);
    let args = format!(
        "--cacert {} --mode crr -c 2 -n 100 --warmup 0s --verify",
        cert.path()
    );
    let r = run(&https(server.local_addr(), "/"), &args);
    assert_clean(&r, 100);
    let c = &r.stats.counters;
    assert_eq!((c.connects, c.tls_handshakes, c.tls_resumed), (100, 100, 0));
    assert_eq!((r.stats.connect.len(), r.stats.handshake.len()), (100, 100));
    let report = Report::new(&r);
    assert_eq!(report.handshake_latency_ns.map(|l| l.count), Some(100));
    assert!(report.connect_latency_ns.is_some());
}

fn tls_resume_resumes_sessions() {
    let cert = Cert::new(&["127.0.0.1"]);
    let server = ringd_tls(ProtocolKind::Http, &cert);
    let ca = cert.path();
    let args = format!("--cacert {ca} --tls-resume --mode crr -c 1 -n 50 --warmup 0s --verify");
    let r = run(&https(server.local_addr(), "/"), &args);
    assert_clean(&r, 50);
    // The first handshake is full; each later one resumes with a ticket from before.
    let c = &r.stats.counters;
    assert_eq!((c.tls_handshakes, c.tls_resumed), (50, 49));
    let json = serde_json::to_value(Report::new(&r)).unwrap();
    assert_eq!(json["tls"]["resumed"], 49);
    assert_eq!(json["config"]["tls"]["resume"], true);
}

fn a_certificate_from_another_ca_is_a_tls_error_not_a_crash() {
    let cert = Cert::new(&["127.0.0.1"]);
    let other = Cert::new(&["127.0.0.1"]);
    let server = ringd_tls(ProtocolKind::Http, &cert);
    for mode in ["rr", "crr"] {
        let args = format!(
            "--cacert {} --mode {mode} -c 2 -d 500ms --warmup 0s --timeout 1s",
            other.path()
        );
        let r = run(&https(server.local_addr(), "/"), &args);
        assert_only_errors_of(&r, ErrorKind::Tls);
        assert_eq!(r.stats.counters.tls_handshakes, 0);
        assert_eq!(Report::new(&r).exit_code, EXIT_FAILED);
    }
}

fn insecure_takes_a_certificate_that_does_not_check() {
    // A certificate for another name: refused against it, taken with --insecure, and
    // checked when --tls-sni asks for the name it holds.
    let cert = Cert::new(&["elsewhere.example"]);
    let server = ringd_tls(ProtocolKind::Http, &cert);
    let target = https(server.local_addr(), "/");
    let ca = cert.path();
    let base = "-c 1 -n 20 --warmup 0s --verify --timeout 1s";
    assert_clean(&run(&target, &format!("{base} --insecure")), 20);
    let sni = format!("{base} --cacert {ca} --tls-sni elsewhere.example");
    assert_clean(&run(&target, &sni), 20);
    let r = run(
        &target,
        &format!("--cacert {ca} -c 1 -d 300ms --warmup 0s --timeout 1s"),
    );
    assert_only_errors_of(&r, ErrorKind::Tls);
}

/// A TCP server that answers whatever comes with `reply` and closes.
fn not_tls_server(reply: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
            let _ = s.shutdown(Shutdown::Write);
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    addr
}

fn garbage_instead_of_a_server_hello_is_a_tls_error() {
    let bad_request = &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..];
    // A close_notify alert where the ServerHello should be ends the handshake, too.
    let close_notify = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00][..];
    for reply in [bad_request, b"", &[0x16; 64], close_notify] {
        let addr = not_tls_server(reply);
        for mode in ["rr", "crr"] {
            let args = format!("--insecure --mode {mode} -c 2 -d 300ms --warmup 0s --timeout 1s");
            let r = run(&https(addr, "/"), &args);
            assert_only_errors_of(&r, ErrorKind::Tls);
        }
    }
}

/// How the rustls test server ends each response.
#[derive(Debug, Clone, Copy)]
enum End {
    /// A body delimited by the close: its `close_notify`, then a FIN.
    CloseNotify,
    /// A body delimited by the close: a FIN alone (a truncation, as an attacker makes one).
    FinOnly,
    /// Content-Length bodies on a kept-alive connection, until the client goes.
    KeepAlive,
}

/// A rustls HTTP server ending its responses as `end` says; counts the clients that
/// ended with a `close_notify`.
fn rustls_server(cert: &Cert, end: End) -> (SocketAddr, Arc<AtomicU64>) {
    let config = cert.server_config();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let notified = Arc::new(AtomicU64::new(0));
    let count = notified.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let count = count.clone();
            std::thread::spawn(move || serve_tls(rustls::StreamOwned::new(conn, s), end, &count));
        }
    });
    (addr, notified)
}

fn serve_tls(
    mut s: rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
    end: End,
    notified: &AtomicU64,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) => {
                // rustls reads 0 only after the peer's close_notify.
                notified.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(n) => n,
            Err(_) => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..at + 4);
            match end {
                End::KeepAlive => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
                End::CloseNotify | End::FinOnly => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the close");
                    if matches!(end, End::CloseNotify) {
                        s.conn.send_close_notify();
                    }
                    let _ = s.flush();
                    let _ = s.sock.shutdown(Shutdown::Write);
                    while matches!(s.sock.read(&mut chunk), Ok(n) if n > 0) {}
                    return;
                }
            }
        }
    }
}

fn a_reply_delimited_by_the_close_needs_close_notify() {
    let cert = Cert::new(&["127.0.0.1"]);
    let ca = format!("--cacert {} --warmup 0s --timeout 1s -c 1", cert.path());
    let (addr, _) = rustls_server(&cert, End::CloseNotify);
    let r = run(&https(addr, "/"), &format!("{ca} -n 20"));
    assert_clean(&r, 20);
    assert_eq!(r.stats.counters.reconnects, 19);

    let (addr, _) = rustls_server(&cert, End::FinOnly);
    let r = run(&https(addr, "/"), &format!("{ca} -d 300ms"));
    assert_only_errors_of(&r, ErrorKind::ShortResponse);
}

fn loadgen_ends_its_connections_with_close_notify() {
    let cert = Cert::new(&["127.0.0.1"]);
    let (addr, notified) = rustls_server(&cert, End::KeepAlive);
    let ca = format!("--cacert {} --warmup 0s -n 30", cert.path());
    // crr: every transaction closes cleanly.
    let r = run(&https(addr, "/"), &format!("{ca} --mode crr -c 1"));
    assert_clean(&r, 30);
    wait_for(|| notified.load(Ordering::SeqCst) >= 30);
    // rr: the end of the run closes every connection cleanly.
    notified.store(0, Ordering::SeqCst);
    let r = run(&https(addr, "/"), &format!("{ca} -c 3"));
    assert_clean(&r, 30);
    wait_for(|| notified.load(Ordering::SeqCst) >= 3);
    assert_eq!(notified.load(Ordering::SeqCst), 3);
}

/// `--tls-version` offers that version alone: a server of the other one refuses it.
fn tls_version_offers_one_version_alone() {
    let cert = Cert::new(&["127.0.0.1"]);
    let tls12 = cert.server_config_of(&[&rustls::version::TLS12]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let conn = rustls::ServerConnection::new(tls12.clone()).unwrap();
            std::thread::spawn(move || {
                let notified = AtomicU64::new(0);
                serve_tls(rustls::StreamOwned::new(conn, s), End::KeepAlive, &notified)
            });
        }
    });
    let ca = format!("--cacert {} --warmup 0s -c 1", cert.path());
    let r = run(&https(addr, "/"), &format!("{ca} -n 10 --tls-version 1.2"));
    assert_clean(&r, 10);
    let version = r.plan.tls.as_ref().and_then(|t| t.version);
    assert_eq!(version, Some(loadgen::client::tls::TlsVersion::V1_2));
    let r = run(
        &https(addr, "/"),
        &format!("{ca} -d 300ms --tls-version 1.3"),
    );
    assert_only_errors_of(&r, ErrorKind::Tls);
}

/// A server that starts each handshake `delay` after the connect: request latency starts
/// once the handshake is done, and only the handshake's own figure carries the delay.
fn a_slow_handshake_stays_out_of_request_latency() {
    let cert = Cert::new(&["127.0.0.1"]);
    let config = cert.server_config();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let delay = Duration::from_millis(600);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let notified = AtomicU64::new(0);
                serve_tls(rustls::StreamOwned::new(conn, s), End::KeepAlive, &notified)
            });
        }
    });
    let ca = format!("--cacert {} --warmup 0s -c 2 -n 40", cert.path());
    let r = run(&https(addr, "/"), &ca);
    assert_clean(&r, 40);
    let s = &r.stats;
    // 90%: the histogram keeps two or three significant digits.
    let bound = delay.as_nanos() as u64 * 9 / 10;
    assert!(s.handshake.min() >= bound, "{}", s.handshake.min());
    // Each request is timed from when it could be sent: far below the handshake's delay
    // (the machine may be slow, but not 540 ms per request on loopback).
    assert!(s.latency.max() < bound, "{}", s.latency.max());
}

/// Waits (up to 10 s) for `done`.
fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("not within 10 s");
}

fn tls_options_are_checked_in_one_line_and_exit_2() {
    let cert = Cert::new(&["127.0.0.1"]);
    let not_pem = cert.dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    for (args, needle) in [
        (&["https://127.0.0.1:9/"][..], "--cacert FILE"),
        (&["127.0.0.1:9", "--tls-resume"], "TLS only"),
        (&["127.0.0.1:9", "--insecure"], "TLS only"),
        (&["http://127.0.0.1:9/", "--tls", "--insecure"], "https://"),
        (
            &["https://127.0.0.1:9/", "http://127.0.0.1:9/", "--insecure"],
            "mixed",
        ),
        (
            &["https://127.0.0.1:9/", "--cacert", "/nonexistent/ca.pem"],
            "--cacert",
        ),
        (
            &["https://127.0.0.1:9/", "--cacert", not_pem],
            "no certificate",
        ),
        (
            &[
                "https://127.0.0.1:9/",
                "--insecure",
                "--cacert",
                cert.path(),
            ],
            "--cacert",
        ),
    ] {
        let out = loadgen_bin(&[args, &["-n", "1"]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

on_both_engines!(
    https_keep_alive_verifies_over_ringd,
    echo_and_hello_verify_over_tls,
    crr_does_a_full_handshake_per_transaction,
    tls_resume_resumes_sessions,
    a_certificate_from_another_ca_is_a_tls_error_not_a_crash,
    insecure_takes_a_certificate_that_does_not_check,
    garbage_instead_of_a_server_hello_is_a_tls_error,
    a_reply_delimited_by_the_close_needs_close_notify,
    loadgen_ends_its_connections_with_close_notify,
    a_slow_handshake_stays_out_of_request_latency,
    tls_version_offers_one_version_alone,
    tls_options_are_checked_in_one_line_and_exit_2,
);
