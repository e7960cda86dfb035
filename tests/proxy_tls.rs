//! TLS terminated in proxy mode on every engine: a rustls client through the proxy to a
//! plain echo backend gets every byte back, 1 B to 1 MiB, through a 4 KiB server send
//! buffer and a client that reads slowly, then the proxy's `close_notify` and its FIN; a
//! PROXY v2 header says the client used TLS and its version (`PP2_TYPE_SSL`), read back by
//! the `ppp` parser at the backend; garbage instead of a ClientHello closes that connection
//! alone, before any upstream is connected, and so does a handshake that stalls; SNI
//! routes follow the name of the terminated handshake.

#[macro_use]
mod matrix;
mod common;
mod support;
mod tls_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ringd::connection::WorkerStats;
use ringd::proxy::sni::{Fallback, SniRoutes};
use ringd::proxy::{Balance, ProxyConfig, SendProxy};
use ringd::tls::ServerTls;
use ringd::{EngineKind, ProtocolKind, ServerHandle, Service};
use tls_client::*;

/// A one-worker proxy on `engine` to `upstream`, terminating TLS with `cert`, a 4 KiB
/// send buffer, `send_proxy` header if any.
fn tls_proxy(
    engine: EngineKind,
    upstream: SocketAddr,
    cert: &Cert,
    send_proxy: Option<SendProxy>,
) -> ServerHandle {
    tls_proxy_with(engine, &[upstream], &[cert], Duration::from_secs(10), |p| {
        p.send_proxy = send_proxy
    })
}

/// A one-worker proxy on `engine` to `upstreams`, terminating TLS with `certs` (the first
/// the default) and handshakes due within `handshake`, a 4 KiB send buffer, then `setup`.
fn tls_proxy_with(
    engine: EngineKind,
    upstreams: &[SocketAddr],
    certs: &[&Cert],
    handshake: Duration,
    setup: impl FnOnce(&mut ProxyConfig),
) -> ServerHandle {
    let mut proxy = ProxyConfig::new(
        upstreams.to_vec(),
        Balance::RoundRobin,
        Duration::from_secs(2),
        Duration::from_secs(30),
        None,
    );
    let pairs: Vec<_> = certs.iter().map(|c| c.pair.clone()).collect();
    proxy.tls = Some(ServerTls::load(&pairs, false, handshake).expect("TLS"));
    setup(&mut proxy);
    server_with(engine, ProtocolKind::Echo, 1, |c| {
        c.listen_options.send_buffer = Some(4096);
        c.service = Service::Proxy(proxy);
    })
}

fn accepted(server: &ServerHandle) -> u64 {
    server
        .stats()
        .iter()
        .map(|s: &std::sync::Arc<WorkerStats>| s.accepted.load(Ordering::Relaxed))
        .sum()
}

/// Waits until `proxy` counted `n` handshakes of outcome `result` (an index of
/// `ringd_tls_handshakes_total`: 0 ok, 1 failed, 2 timeout).
fn wait_handshakes(proxy: &ServerHandle, result: usize, n: u64) {
    support::wait_until(&format!("{n} handshakes of outcome {result}"), || {
        proxy.stats()[0].tls_handshakes[result].load(Ordering::Relaxed) == n
    });
}

/// A TLV of a PROXY v2 header: its kind and value.
type Tlv = (u8, Vec<u8>);

/// A backend that reads a PROXY v2 header, sends its TLVs (kind, value) on the channel,
/// then echoes until EOF; one connection.
fn v2_backend() -> (SocketAddr, mpsc::Receiver<Vec<Tlv>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).unwrap();
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        let mut rest = vec![0u8; len];
        s.read_exact(&mut rest).unwrap();
        let whole = [&head[..], &rest].concat();
        let header = ppp::v2::Header::try_from(&whole[..]).expect("a PROXY v2 header");
        let tlvs = header
            .tlvs()
            .map(|t| t.map(|t| (t.kind, t.value.to_vec())))
            .collect::<Result<Vec<_>, _>>()
            .expect("TLVs");
        tx.send(tlvs).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

every_engine! {
    #[test]
    fn every_byte_through_then_close_notify_then_fin_under_small_buffers() {
        let c = cert("proxy.test");
        let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
        let proxy = tls_proxy(ENGINE, backend.local_addr(), &c, None);
        let config = client_config(&[&c], &[]);
        for size in [1, 1000, 65_537, 1 << 20] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut client = Client::connect(proxy.local_addr(), config.clone(), "proxy.test")
                .unwrap_or_else(|e| panic!("{size} bytes: {e}"));
            let (got, end) = client.exchange(&data, true, true);
            assert_eq!(got.len(), data.len(), "{size} bytes");
            assert!(got == data, "{size} bytes came back changed");
            assert_eq!(end, End::Clean, "{size} bytes: close_notify, then the FIN");
        }
        wait_handshakes(&proxy, 0, 4);
        shutdown_clean(proxy);
        shutdown_clean(backend);
    }

    #[test]
    fn proxy_v2_says_the_client_used_tls_and_its_version() {
        let c = cert("proxy.test");
        let (backend, tlvs) = v2_backend();
        let proxy = tls_proxy(ENGINE, backend, &c, Some(SendProxy::V2));
        let config = client_config(&[&c], &[]);
        let mut client =
            Client::connect(proxy.local_addr(), config, "proxy.test").expect("handshake");
        let (got, end) = client.exchange(b"hello", true, false);
        assert_eq!((got.as_slice(), end), (&b"hello"[..], End::Clean));
        let tlvs = tlvs.recv_timeout(Duration::from_secs(10)).expect("the header");
        let ssl = tlvs.iter().find(|(k, _)| *k == 0x20).expect("PP2_TYPE_SSL");
        assert_eq!(ssl.1[0] & 0x01, 0x01, "PP2_CLIENT_SSL");
        assert_eq!(&ssl.1[5..], b"\x21\x00\x07TLSv1.3", "PP2_SUBTYPE_SSL_VERSION");
        shutdown_clean(proxy);
    }

    #[test]
    fn garbage_instead_of_a_client_hello_closes_that_connection_only() {
        let c = cert("proxy.test");
        let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
        let proxy = tls_proxy(ENGINE, backend.local_addr(), &c, None);
        let mut s = TcpStream::connect(proxy.local_addr()).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n").unwrap();
        let got = read_until_closed(&mut s);
        assert!(!got.starts_with(b"GET"), "nothing is echoed: {got:?}");
        assert_eq!(accepted(&backend), 0, "no upstream was connected");
        let config = client_config(&[&c], &[]);
        let mut client = Client::connect(proxy.local_addr(), config, "proxy.test")
            .expect("the next client is served");
        let (got, _) = client.exchange(b"x", true, false);
        assert_eq!(got, b"x");
        wait_handshakes(&proxy, 1, 1);
        shutdown_clean(proxy);
        shutdown_clean(backend);
    }
    #[test]
    fn a_close_notify_read_with_the_handshakes_end_ends_the_upstream_too() {
        let c = cert("proxy.test");
        let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
        let proxy = tls_proxy(ENGINE, backend.local_addr(), &c, None);
        let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
        let tls = rustls::ClientConnection::new(client_config(&[&c], &[]), name).unwrap();
        let mut client = Client { tls, sock: small_blocking_client(proxy.local_addr()) };
        client.tls.write_tls(&mut client.sock).unwrap();
        while client.tls.is_handshaking() {
            match client.tls.read_tls(&mut client.sock) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => assert!(read.unwrap() > 0, "EOF in the handshake"),
            }
            client.tls.process_new_packets().unwrap();
        }
        // The client's Finished, its data and its close_notify, in one write.
        client.tls.writer().write_all(b"REQUEST").unwrap();
        client.tls.send_close_notify();
        let mut flight = Vec::new();
        while client.tls.wants_write() {
            client.tls.write_tls(&mut flight).unwrap();
        }
        client.sock.write_all(&flight).unwrap();
        // The upstream gets the FIN and ends; the client gets the echo, then its end
        // (the read times out, failing the test, if the FIN never reaches the upstream).
        client.sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut got, mut notified, mut buf) = (Vec::new(), false, [0u8; 4096]);
        loop {
            match client.sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => notified |= client.take(&buf[..n], &mut got),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("no end after {got:?}: {e}"),
            }
        }
        assert_eq!((got.as_slice(), notified), (&b"REQUEST"[..], true));
        shutdown_clean(proxy);
        shutdown_clean(backend);
    }

    #[test]
    fn a_client_that_never_reads_the_handshake_is_closed_at_its_timeout() {
        // A server flight far larger than the socket buffers: its write stalls.
        let names = (0..400).map(|i| format!("n{i}.a-long-label-for-a-large-certificate.proxy.test"));
        let c = cert_for(std::iter::once("proxy.test".to_string()).chain(names).collect());
        let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
        let addr = backend.local_addr();
        let proxy = tls_proxy_with(ENGINE, &[addr], &[&c], Duration::from_millis(300), |_| {});
        let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
        let mut tls = rustls::ClientConnection::new(client_config(&[&c], &[]), name).unwrap();
        let mut s = small_blocking_client(proxy.local_addr());
        tls.write_tls(&mut s).unwrap();
        wait_handshakes(&proxy, 2, 1);
        assert_eq!(accepted(&backend), 0, "no upstream was connected");
        drop(s);
        shutdown_clean(proxy);
        shutdown_clean(backend);
    }

    #[test]
    fn a_handshake_that_stalls_is_closed_at_its_timeout() {
        let c = cert("proxy.test");
        let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
        let addr = backend.local_addr();
        let proxy = tls_proxy_with(ENGINE, &[addr], &[&c], Duration::from_millis(300), |_| {});
        let mut s = TcpStream::connect(proxy.local_addr()).unwrap();
        s.write_all(&[0x16, 3, 1]).unwrap();
        read_until_closed(&mut s);
        wait_handshakes(&proxy, 2, 1);
        assert_eq!(accepted(&backend), 0, "no upstream was connected");
        shutdown_clean(proxy);
        shutdown_clean(backend);
    }

    #[test]
    fn sni_routes_follow_the_terminated_name() {
        let (one, two) = (cert("one.test"), cert("two.test"));
        let (a, b) = (support::Tagged::start(b'A'), support::Tagged::start(b'B'));
        let proxy = tls_proxy_with(ENGINE, &[a.addr], &[&one, &two], Duration::from_secs(10), |p| {
            let routes = [format!("two.test={}", b.addr)];
            let sni = SniRoutes::parse(&routes, Fallback::Default, &p.upstreams, |s| {
                s.parse().map_err(|e: std::net::AddrParseError| e.to_string())
            });
            p.sni = Some(std::sync::Arc::new(sni.expect("routes")));
        });
        for (c, name, tag) in [(&two, "two.test", b'B'), (&one, "one.test", b'A')] {
            let config = client_config(&[c], &[]);
            let mut client = Client::connect(proxy.local_addr(), config, name).expect(name);
            let (got, _) = client.exchange(b"x", true, false);
            assert_eq!(got, [tag, b'x'], "{name}");
        }
        shutdown_clean(proxy);
    }
}
