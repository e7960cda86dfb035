//! The access log on every engine, on real sockets: exactly one line per connection, whose
//! byte counts are what the client sent and received (and, proxied, what went to and came
//! from the upstream, the PROXY header included); a writer that cannot write (a pipe no one
//! reads) costs lines, counted, and never a connection.

#[macro_use]
mod matrix;
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use ringd::access_log::{AccessLogSpec, Format, Target};
use ringd::proxy::{Balance, ProxyConfig, SendProxy};
use ringd::{EngineKind, ProtocolKind, Service};

/// A file path of this test's own.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringd-test-{}-{name}", std::process::id()))
}

fn spec(target: Target, queue: usize) -> AccessLogSpec {
    AccessLogSpec {
        target,
        format: Format::Json,
        queue,
    }
}

/// The log's lines, each parsed, by client address.
fn lines_by_client(path: &PathBuf) -> HashMap<SocketAddr, serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("the access log");
    let mut by_client = HashMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let client = v["client"].as_str().unwrap().parse().unwrap();
        assert!(
            by_client.insert(client, v).is_none(),
            "two lines for {client}"
        );
    }
    by_client
}

/// Sends `n` random bytes, half-closes, reads to EOF; returns the client's address, what it
/// sent and what came back.
fn exchange(addr: SocketAddr, n: usize, seed: u64) -> (SocketAddr, Vec<u8>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let me = s.local_addr().unwrap();
    let mut payload = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut payload[..]);
    let mut reader = s.try_clone().unwrap();
    let read = std::thread::spawn(move || {
        let mut back = Vec::new();
        reader.read_to_end(&mut back).unwrap();
        back
    });
    s.write_all(&payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let back = read.join().unwrap();
    (me, payload, back)
}

/// [`exchange`] with an echo server: returns the client's address and the bytes each way.
fn echo_exchange(addr: SocketAddr, n: usize, seed: u64) -> (SocketAddr, usize) {
    let (me, sent, back) = exchange(addr, n, seed);
    assert!(back == sent, "the echo differs");
    (me, n)
}

every_engine! {
    #[test]
    fn one_line_per_connection_with_the_bytes_each_way() {
        let path = temp_path(&format!("{}-echo.log", ENGINE.name()));
        let _ = std::fs::remove_file(&path);
        let server = server_with(ENGINE, ProtocolKind::Echo, 2, |c| {
            c.access_log = Some(spec(Target::File(path.clone()), 1024));
        });
        let addr = server.local_addr();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sizes: Vec<usize> = (0..40).map(|_| rng.gen_range(0..200_000)).collect();
        let clients: Vec<(SocketAddr, usize)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| echo_exchange(addr, n, i as u64))
            .collect();
        shutdown_clean(server);
        let lines = lines_by_client(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(lines.len(), clients.len(), "one line per connection");
        for (client, n) in clients {
            let l = &lines[&client];
            assert_eq!(l["bytes_in"], n as u64, "{client}: bytes in");
            assert_eq!(l["bytes_out"], n as u64, "{client}: bytes out");
            assert_eq!(l["reason"], "peer");
            assert_eq!(l["listener"], addr.to_string());
            assert!(l.get("upstream").is_none());
        }
    }

    #[test]
    fn proxied_lines_count_both_sides() {
        let path = temp_path(&format!("{}-proxy.log", ENGINE.name()));
        let _ = std::fs::remove_file(&path);
        let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
        let up = backend.local_addr();
        let server = server_with(ENGINE, ProtocolKind::Echo, 1, |c| {
            c.access_log = Some(spec(Target::File(path.clone()), 1024));
            c.service = Service::Proxy(ProxyConfig::new(
                vec![up],
                Balance::RoundRobin,
                Duration::from_secs(2),
                Duration::from_secs(30),
                Some(SendProxy::V1),
            ));
        });
        let addr = server.local_addr();
        let clients: Vec<_> = (0..20)
            .map(|i| exchange(addr, 1000 + i * 5000, i as u64))
            .collect();
        shutdown_clean(server);
        shutdown_clean(backend);
        let lines = lines_by_client(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(lines.len(), clients.len(), "one line per connection");
        for (client, sent, back) in clients {
            let l = &lines[&client];
            let header = format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                client.ip(),
                addr.ip(),
                client.port(),
                addr.port()
            );
            // The echo backend sends back the header it was given, then the bytes.
            assert!(back.starts_with(header.as_bytes()) && back[header.len()..] == sent[..]);
            let n = sent.len();
            assert_eq!(l["bytes_in"], n as u64, "{client}: bytes from the client");
            assert_eq!(
                l["bytes_out"],
                (n + header.len()) as u64,
                "{client}: bytes to the client"
            );
            assert_eq!(l["upstream"], up.to_string());
            assert_eq!(
                l["upstream_bytes_sent"],
                (n + header.len()) as u64,
                "{client}: the upstream got the PROXY header and the client's bytes"
            );
            assert_eq!(
                l["upstream_bytes_received"],
                (n + header.len()) as u64,
                "{client}: the echo backend sent back all it got"
            );
        }
    }

    #[test]
    fn a_writer_that_cannot_write_drops_lines_never_connections() {
        let fifo = temp_path(&format!("{}-stalled.fifo", ENGINE.name()));
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // Held open for reading (so the server's open does not wait) and never read: the
        // writer blocks once the pipe is full.
        let hold = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let server = server_with(ENGINE, ProtocolKind::Hello, 1, |c| {
            c.access_log = Some(spec(Target::File(fifo.clone()), 8));
        });
        // The server holds the writing end: a reader of our own, which reads nothing until
        // every connection is served.
        let mut reader = std::fs::File::open(&fifo).unwrap();
        drop(hold);
        let addr = server.local_addr();
        let served = 1500;
        for _ in 0..served {
            let got = request_blocking(addr, b"hi");
            assert!(got.starts_with(b"Hello"), "every connection is served");
        }
        let log = server.access_log().unwrap().clone();
        let read = std::thread::spawn(move || {
            let mut text = Vec::new();
            reader.read_to_end(&mut text).unwrap();
            text
        });
        shutdown_clean(server);
        let dropped = log.counters().dropped.load(Ordering::Relaxed);
        // The last holder: the writer writes what is queued and closes the pipe.
        drop(log);
        let text = read.join().unwrap();
        std::fs::remove_file(&fifo).unwrap();
        let written = text.iter().filter(|&&b| b == b'\n').count() as u64;
        assert!(dropped > 0, "a writer that cannot write drops lines");
        assert_eq!(
            written + dropped,
            served as u64,
            "every connection is either written or counted as dropped"
        );
    }
}

/// Connects, sends `request`, reads to EOF.
fn request_blocking(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}
