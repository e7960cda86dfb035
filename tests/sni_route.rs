//! SNI routing in proxy mode on every engine (`--route-sni`): TLS clients reach the
//! upstream their ClientHello names, and every byte they send, the ClientHello first, gets
//! there as sent; a ClientHello that trickles in a byte at a time still routes; clients
//! without TLS or without a name follow the fallback; unknown names go to the default; a
//! client that stalls before its ClientHello is whole is closed at the header timeout; and
//! none of it harms the server. Backends are upstreams that write a tag byte then echo
//! (so the route and the bytes are both seen), and ringd itself terminating TLS.

#[macro_use]
mod matrix;
mod common;
mod support;
mod tls_client;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringd::connection::CloseReason;
use ringd::protocol::ProtocolSpec;
use ringd::proxy::sni::{Fallback, SniRoutes};
use ringd::proxy::{Balance, ProxyConfig, Upstreams};
use ringd::tls::ServerTls;
use ringd::{EngineKind, ProtocolKind, ServerHandle, Service};
use support::Tagged;
use tls_client::*;

/// A one-worker proxy on `engine` routing `routes` (`NAME=HOST:PORT` each), `default` the
/// upstreams of `--upstream`, a header timeout of `header`; also its upstreams (for the
/// SNI counters).
fn router(
    engine: EngineKind,
    routes: &[String],
    default: &[SocketAddr],
    fallback: Fallback,
    header: Duration,
) -> (ServerHandle, Arc<Upstreams>) {
    let mut proxy = ProxyConfig::new(
        default.to_vec(),
        Balance::RoundRobin,
        Duration::from_secs(2),
        Duration::from_secs(30),
        None,
    );
    let sni = SniRoutes::parse(
        routes,
        fallback,
        &proxy.upstreams,
        ringd::config::cli::resolve,
    )
    .expect("routes");
    proxy.sni = Some(Arc::new(sni));
    let ups = proxy.upstreams.clone();
    let server = server_with(engine, ProtocolKind::Echo, 1, |c| {
        c.header_timeout = header;
        c.service = Service::Proxy(proxy);
    });
    (server, ups)
}

/// The first bytes a rustls client sends for `name` (a host name, or an IP address, which
/// goes without SNI).
fn client_hello(name: &str) -> Vec<u8> {
    let config = client_config(&[], &[]);
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut c = rustls::ClientConnection::new(config, name).unwrap();
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).unwrap();
    }
    out
}

fn open(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `first` to the proxy at `addr` in pieces of `piece` bytes, then `more`, then a
/// FIN; the tag of the upstream reached and every byte that came back, or `None` if the
/// proxy closed the connection without an upstream.
fn through(addr: SocketAddr, first: &[u8], piece: usize, more: &[u8]) -> Option<(u8, Vec<u8>)> {
    let mut s = open(addr);
    for chunk in first.chunks(piece) {
        if s.write_all(chunk).is_err() {
            break;
        }
        if piece < first.len() {
            // Each piece in a segment of its own, so that the proxy reads them apart.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let _ = s.write_all(more);
    let _ = s.shutdown(Shutdown::Write);
    let got = read_until_closed(&mut s);
    let (&tag, back) = got.split_first()?;
    Some((tag, back.to_vec()))
}

/// Sends `first` then `more` through the proxy and checks that it reached the upstream
/// tagged `tag` and that every byte came back as sent.
fn routes_to(addr: SocketAddr, first: &[u8], piece: usize, tag: u8) {
    let more = b"and what follows the hello";
    let (got, back) = through(addr, first, piece, more).expect("an upstream");
    assert_eq!(got as char, tag as char, "the upstream reached");
    let sent = [first, more].concat();
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "the bytes came back changed");
}

fn route(name: &str, to: &Tagged) -> String {
    format!("{name}={}", to.addr)
}

/// Upstreams `A` (the route of `a.test`) and `D` (the default), and a proxy to them.
struct AOrDefault {
    a: Tagged,
    d: Tagged,
    server: ServerHandle,
    ups: Arc<Upstreams>,
}

impl AOrDefault {
    fn start(engine: EngineKind, fallback: Fallback, header: Duration) -> AOrDefault {
        let (a, d) = (Tagged::start(b'A'), Tagged::start(b'D'));
        let (server, ups) = router(engine, &[route("a.test", &a)], &[d.addr], fallback, header);
        AOrDefault { a, d, server, ups }
    }
}

every_engine! {
    #[test]
    fn names_reach_their_upstreams_byte_for_byte() {
        let (a, b, d) = (Tagged::start(b'A'), Tagged::start(b'B'), Tagged::start(b'D'));
        let routes = [route("a.test", &a), route("b.test", &b), route("*.w.test", &b)];
        let (server, ups) =
            router(ENGINE, &routes, &[d.addr], Fallback::Default, Duration::from_secs(10));
        let addr = server.local_addr();
        routes_to(addr, &client_hello("a.test"), usize::MAX, b'A');
        routes_to(addr, &client_hello("B.Test"), usize::MAX, b'B');
        routes_to(addr, &client_hello("x.y.w.test"), usize::MAX, b'B');
        routes_to(addr, &client_hello("c.test"), usize::MAX, b'D');
        routes_to(addr, &client_hello("127.0.0.1"), usize::MAX, b'D');
        assert_eq!(ups.sni_counts().get(), [3, 1, 1, 0], "routed, unmatched, no SNI");
        shutdown_clean(server);
    }

    #[test]
    fn a_hello_a_byte_at_a_time_still_routes() {
        let p = AOrDefault::start(ENGINE, Fallback::Default, Duration::from_secs(10));
        routes_to(p.server.local_addr(), &client_hello("a.test"), 1, b'A');
        shutdown_clean(p.server);
    }

    #[test]
    fn tls_goes_through_to_the_named_backend_untouched() {
        let (one, two) = (cert("one.test"), cert("two.test"));
        let backend = |c: &Cert| {
            server_with(EngineKind::Epoll, ProtocolKind::Echo, 1, |conf| {
                let mut spec = ProtocolSpec::with_defaults(ProtocolKind::Echo);
                let pair = std::slice::from_ref(&c.pair);
                let tls = ServerTls::load(pair, false, Duration::from_secs(10));
                spec.tls = Some(tls.expect("TLS config"));
                conf.service = Service::Protocol(spec);
            })
        };
        let (b1, b2) = (backend(&one), backend(&two));
        let routes = [
            format!("one.test={}", b1.local_addr()),
            format!("two.test={}", b2.local_addr()),
        ];
        let (server, _) = router(ENGINE, &routes, &[], Fallback::Close, Duration::from_secs(10));
        // Each client trusts its own name's certificate only: its handshake completes only
        // with the backend that holds it, over bytes the proxy did not change.
        for (c, name) in [(&two, "two.test"), (&one, "one.test")] {
            let mut client = Client::connect(server.local_addr(), client_config(&[c], &[]), name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let data: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
            let (got, end) = client.exchange(&data, true, true);
            assert!(got == data, "{name}: the echo came back changed");
            assert_eq!(end, End::Clean, "{name}");
        }
        shutdown_clean(server);
        shutdown_clean(b1);
        shutdown_clean(b2);
    }

    #[test]
    fn garbage_and_nameless_hellos_follow_the_fallback() {
        let garbage = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec();
        let p = AOrDefault::start(ENGINE, Fallback::Default, Duration::from_secs(10));
        routes_to(p.server.local_addr(), &garbage, usize::MAX, b'D');
        routes_to(p.server.local_addr(), &[0x16], usize::MAX, b'D');
        assert_eq!(p.ups.sni_counts().get(), [0, 0, 0, 2], "not TLS");
        shutdown_clean(p.server);

        let AOrDefault { a: _a, d, server, ups } =
            AOrDefault::start(ENGINE, Fallback::Close, Duration::from_secs(10));
        let addr = server.local_addr();
        assert_eq!(through(addr, &garbage, usize::MAX, b""), None, "garbage: closed");
        let nameless = client_hello("127.0.0.1");
        assert_eq!(through(addr, &nameless, usize::MAX, b""), None, "no SNI: closed");
        routes_to(addr, &client_hello("z.test"), usize::MAX, b'D');
        routes_to(addr, &client_hello("a.test"), usize::MAX, b'A');
        assert_eq!(ups.sni_counts().get(), [1, 1, 1, 1]);
        assert_eq!(d.accepted(), 1, "what was closed never reached an upstream");
        shutdown_clean(server);
    }

    #[test]
    fn a_client_that_stalls_is_closed_at_the_header_timeout() {
        let AOrDefault { a, d, server, .. } =
            AOrDefault::start(ENGINE, Fallback::Default, Duration::from_millis(300));
        let addr = server.local_addr();
        let hello = client_hello("a.test");
        for sent in [&hello[..0], &hello[..1], &hello[..hello.len() - 1]] {
            let mut s = open(addr);
            s.write_all(sent).unwrap();
            assert_eq!(read_until_closed(&mut s), b"", "after {} bytes", sent.len());
        }
        assert_eq!((a.accepted(), d.accepted()), (0, 0));
        support::wait_until("3 closes at the header timeout", || {
            server.stats()[0].closed_for(CloseReason::HeaderTimeout) == 3
        });
        // The server is still there for the next client.
        routes_to(addr, &hello, usize::MAX, b'A');
        shutdown_clean(server);
    }
}

/// The routes of a `--config` file change on SIGHUP for new clients, and the counts of
/// `ringd_sni_routes_total` go on through the reload.
#[test]
fn a_reload_changes_the_routes_for_new_clients() {
    let (a, b, d) = (
        Tagged::start(b'A'),
        Tagged::start(b'B'),
        Tagged::start(b'D'),
    );
    let dir = support::Dir::new("sni-reload");
    let file_with = |to: &Tagged| {
        let extra = format!("route-sni = [\"a.test={}\"]", to.addr);
        support::proxy_config("uring", &extra, &[d.addr.to_string()])
    };
    let file = dir.write("ringd.toml", &file_with(&a));
    let ringd = support::Ringd::start(&["--config", &file]);
    let hello = client_hello("a.test");
    routes_to(ringd.addr, &hello, usize::MAX, b'A');
    routes_to(ringd.addr, b"not TLS", usize::MAX, b'D');
    dir.write("ringd.toml", &file_with(&b));
    let line = ringd.reload();
    assert!(line.contains("reloaded"), "{line}");
    routes_to(ringd.addr, &hello, usize::MAX, b'B');
    let series = |result: &str| {
        let s = format!("ringd_sni_routes_total{{result=\"{result}\"}}");
        ringd.metric(&s)
    };
    assert_eq!(series("routed"), Some(2.0));
    assert_eq!(series("not_tls"), Some(1.0));
    assert_eq!(ringd.stop(), 0);
}
