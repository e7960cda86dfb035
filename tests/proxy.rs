//! Proxy mode on every engine, on real sockets: bytes verified both ways, half-closes passed
//! on in both directions, upstreams that refuse, do not answer or reset, clients that reset,
//! failover, PROXY headers read back by a parser written here (independent of the one that
//! wrote them), per-upstream metrics, and thousands of concurrent pairs whose descriptors
//! all come back.

#[macro_use]
mod matrix;
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use ringd::proxy::{Balance, ProxyConfig, SendProxy};
use ringd::{Config, EngineKind, ProtocolKind, ServerHandle, Service};

/// A proxy to `upstreams` (one worker), configured further by `setup`.
fn proxy(
    engine: EngineKind,
    upstreams: &[SocketAddr],
    setup: impl FnOnce(&mut Config, &mut ProxyOptions),
) -> ServerHandle {
    let mut opts = ProxyOptions::default();
    server_with(engine, ProtocolKind::Echo, 1, |c| {
        setup(c, &mut opts);
        c.service = Service::Proxy(ProxyConfig::new(
            upstreams.to_vec(),
            opts.balance,
            opts.connect_timeout,
            Duration::from_secs(30),
            opts.send_proxy,
        ));
    })
}

/// Proxy options a test may change.
struct ProxyOptions {
    balance: Balance,
    connect_timeout: Duration,
    send_proxy: Option<SendProxy>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            send_proxy: None,
        }
    }
}

fn blocking_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// An address where nothing listens.
fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Random bytes both ways, 256 MiB in all over 8 connections, compared byte for byte.
async fn integrity(engine: EngineKind) {
    let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
    let server = proxy(engine, &[backend.local_addr()], |_, _| {});
    let addr = server.local_addr();
    let mut tasks = Vec::new();
    for seed in 0..8u64 {
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut s = connect(addr).await;
            let mut left = 32usize << 20;
            while left > 0 {
                let n = rng.gen_range(1..=(1 << 20)).min(left);
                let mut payload = vec![0u8; n];
                rng.fill(&mut payload[..]);
                let back = echo_round_trip(&mut s, &payload).await;
                assert!(
                    back == payload,
                    "seed {seed}: bytes changed through the proxy"
                );
                left -= n;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    shutdown_clean(server);
    shutdown_clean(backend);
}

/// The client's FIN reaches the upstream while the upstream's reply still reaches the
/// client; and the other way round.
fn half_close_both_ways(engine: EngineKind) {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = proxy(engine, &[up.local_addr().unwrap()], |_, _| {});
    // Client first: sends, half-closes, then reads the reply the upstream sends after it
    // saw the client's EOF.
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(b"reply after your FIN").unwrap();
        drop(s);
        // Upstream first: sends, half-closes, then reads what the client still sends.
        let (mut s, _) = up.accept().unwrap();
        s.write_all(b"early").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut late = Vec::new();
        s.read_to_end(&mut late).unwrap();
        (got, late)
    });
    let mut c = blocking_connect(server.local_addr());
    c.write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"reply after your FIN");
    let mut c = blocking_connect(server.local_addr());
    let mut early = Vec::new();
    c.read_to_end(&mut early).unwrap();
    assert_eq!(early, b"early", "the upstream's FIN follows its bytes");
    c.write_all(b"late data").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let (got, late) = upstream.join().unwrap();
    assert_eq!(got, b"request");
    assert_eq!(
        late, b"late data",
        "the client still sends after the upstream's FIN"
    );
    shutdown_clean(server);
}

/// Two upstreams, the first refusing: every connection is served (by the second), the first
/// is marked down once and counted.
fn failover(engine: EngineKind) {
    let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
    let refused = refused_addr();
    let server = proxy(engine, &[refused, backend.local_addr()], |c, _| {
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    });
    for i in 0..20u8 {
        let mut c = blocking_connect(server.local_addr());
        c.write_all(&[i; 100]).unwrap();
        let mut back = [0u8; 100];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, [i; 100], "connection {i}");
    }
    let text = scrape(server.metrics_addr().unwrap());
    let label = format!("upstream=\"{refused}\"");
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_upstream_marked_down_total", &label),
        1
    );
    assert!(
        ringd::metrics::sum_metric(&text, "ringd_upstream_connect_failures_total", &label) >= 1
    );
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_upstream_up", &label),
        0
    );
    let good = format!("upstream=\"{}\"", backend.local_addr());
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_upstream_connections_total", &good),
        20
    );
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_upstream_sent_bytes_total", &good),
        2000
    );
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_upstream_received_bytes_total", &good),
        2000
    );
    shutdown_clean(server);
    shutdown_clean(backend);
}

/// A listener that never answers a handshake: backlog 0 holds one connection, two fill it,
/// and further SYNs are dropped. Keep all three alive while it is in use.
fn silent_upstream() -> (socket2::Socket, SocketAddr, Vec<TcpStream>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let hole: SocketAddr = sock.local_addr().unwrap().as_socket().unwrap();
    let fill: Vec<_> = (0..2)
        .filter_map(|_| TcpStream::connect_timeout(&hole, Duration::from_millis(300)).ok())
        .collect();
    (sock, hole, fill)
}

/// An upstream that never answers the handshake (its accept queue is full): after
/// `--connect-timeout` the next one is tried and the client is served.
fn connect_timeout(engine: EngineKind) {
    let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
    let (sock, hole, _fill) = silent_upstream();
    let server = proxy(engine, &[hole, backend.local_addr()], |_, o| {
        o.connect_timeout = Duration::from_millis(200);
    });
    let mut c = blocking_connect(server.local_addr());
    c.write_all(b"after a timeout").unwrap();
    let mut back = [0u8; 15];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"after a timeout");
    drop(c);
    shutdown_clean(server);
    shutdown_clean(backend);
    drop(sock);
}

/// A client that half-closes at once, sending nothing, while its upstream is still being
/// connected (the first upstream times out): the FIN is passed on once connected, and the
/// upstream, which speaks first, is heard.
fn half_close_while_connecting(engine: EngineKind) {
    let (sock, hole, _fill) = silent_upstream();
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        s.write_all(b"banner").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).map(|_| rest)
    });
    let server = proxy(engine, &[hole, up_addr], |_, o| {
        o.connect_timeout = Duration::from_millis(200);
    });
    let mut c = blocking_connect(server.local_addr());
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"banner");
    let heard = upstream.join().unwrap();
    assert_eq!(heard.unwrap(), b"", "the upstream got the client's FIN");
    drop(c);
    shutdown_clean(server);
    drop(sock);
}

/// No upstream reachable: the client is closed at once (not left hanging), counted.
fn no_upstream(engine: EngineKind) {
    let server = proxy(engine, &[refused_addr()], |_, _| {});
    let mut c = blocking_connect(server.local_addr());
    let _ = c.write_all(b"anyone?");
    match read_to_end_or_reset(&mut c) {
        Ok(got) => assert!(got.is_empty(), "got {got:?} from nowhere"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    let stats = server.stats()[0].clone();
    shutdown_clean(server);
    assert_eq!(
        stats.closed_for(ringd::connection::CloseReason::NoUpstream),
        1
    );
}

/// The only upstream refuses, is marked down for `--upstream-down-for` (30 s here), then comes
/// back on the same port: the next client is served at once, not refused for 30 s.
fn upstream_back_after_marked_down(engine: EngineKind) {
    let addr = refused_addr();
    let server = proxy(engine, &[addr], |_, _| {});
    let mut c = blocking_connect(server.local_addr());
    let _ = c.write_all(b"anyone?");
    match read_to_end_or_reset(&mut c) {
        Ok(got) => assert!(got.is_empty(), "got {got:?} from nowhere"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    let backend = server_with(EngineKind::Epoll, ProtocolKind::Echo, 1, |c| {
        c.listen = addr
    });
    let mut c = blocking_connect(server.local_addr());
    c.write_all(b"back").unwrap();
    let mut back = [0u8; 4];
    let got = c.read_exact(&mut back);
    assert!(
        got.is_ok(),
        "a client after the upstream came back was not served: {got:?}"
    );
    assert_eq!(&back, b"back");
    drop(c);
    shutdown_clean(server);
    shutdown_clean(backend);
}

/// A reset on either side ends the pair; nothing is left open.
fn resets(engine: EngineKind) {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = proxy(engine, &[up.local_addr().unwrap()], |_, _| {});
    let upstream = std::thread::spawn(move || {
        // The upstream resets after the first bytes.
        let (mut s, _) = up.accept().unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        // The client resets: the upstream sees its connection end.
        let (mut s, _) = up.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut all = Vec::new();
        let ended = s.read_to_end(&mut all);
        assert!(
            ended.is_ok() || ended.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset,
            "the upstream connection did not end"
        );
    });
    let mut c = blocking_connect(server.local_addr());
    c.write_all(b"12345").unwrap();
    match read_to_end_or_reset(&mut c) {
        Ok(got) => assert!(got.is_empty(), "got {got:?} after the upstream's reset"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    let c = blocking_connect(server.local_addr());
    (&c).write_all(b"abc").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    upstream.join().unwrap();
    shutdown_clean(server);
}

/// The PROXY header, v1 and v2, parsed here: the client's address and the proxy's.
fn proxy_headers(engine: EngineKind) {
    for version in [SendProxy::V1, SendProxy::V2] {
        let up = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = proxy(engine, &[up.local_addr().unwrap()], |_, o| {
            o.send_proxy = Some(version);
        });
        let listen = server.local_addr();
        let upstream = std::thread::spawn(move || {
            let (mut s, _) = up.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all
        });
        let mut c = blocking_connect(listen);
        let client = c.local_addr().unwrap();
        c.write_all(b"payload").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        let got = upstream.join().unwrap();
        let (src, dst, body) = parse_proxy_header(&got).expect("a valid PROXY header");
        assert_eq!((src, dst), (client, listen), "{version:?}");
        assert_eq!(body, b"payload");
        shutdown_clean(server);
    }
}

/// A PROXY protocol parser (HAProxy's proxy-protocol.txt), independent of the writer:
/// returns source, destination and what follows the header.
fn parse_proxy_header(b: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    if let Some(rest) = b.strip_prefix(b"PROXY ") {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[..end]).ok()?;
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 5 || f[0] != "TCP4" {
            return None;
        }
        let src = SocketAddr::new(f[1].parse().ok()?, f[3].parse().ok()?);
        let dst = SocketAddr::new(f[2].parse().ok()?, f[4].parse().ok()?);
        return Some((src, dst, &rest[end + 2..]));
    }
    let rest = b.strip_prefix(SIG)?;
    let (ver_cmd, fam) = (rest[0], rest[1]);
    if ver_cmd != 0x21 || fam != 0x11 {
        return None;
    }
    let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
    let a = &rest[4..4 + len];
    let ip = |x: &[u8]| std::net::Ipv4Addr::new(x[0], x[1], x[2], x[3]);
    let port = |x: &[u8]| u16::from_be_bytes([x[0], x[1]]);
    let src = SocketAddr::new(ip(&a[0..4]).into(), port(&a[8..10]));
    let dst = SocketAddr::new(ip(&a[4..8]).into(), port(&a[10..12]));
    Some((src, dst, &rest[4 + len..]))
}

/// A `ringd --protocol proxy` process on `engine` (one worker, under `nofile` if given) in
/// front of an in-process echo backend.
fn proxy_process(
    engine: &str,
    extra: &[&str],
    nofile: Option<u32>,
) -> (ServerHandle, RingdProcess) {
    let backend = server(EngineKind::Epoll, ProtocolKind::Echo, 1);
    let up = backend.local_addr().to_string();
    let mut args = vec![
        "--protocol",
        "proxy",
        "--upstream",
        &up,
        "--engine",
        engine,
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    let p = RingdProcess::start(&args, nofile);
    (backend, p)
}

/// Many concurrent pairs (two descriptors each in the proxy), all open at once, then closed:
/// the proxy process's descriptors are exactly what they were before.
fn many_pairs(engine: &str) {
    let (backend, p) = proxy_process(engine, &[], None);
    let before = p.fds();
    let mut clients = Vec::new();
    for i in 0..3000u32 {
        let mut c = blocking_connect(p.addr);
        c.write_all(&i.to_le_bytes()).unwrap();
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut back = [0u8; 4];
        c.read_exact(&mut back).unwrap();
        assert_eq!(u32::from_le_bytes(back), i as u32);
    }
    let during = p.fds().len();
    assert!(
        during >= before.len() + 6000,
        "{during} descriptors with 3000 pairs open"
    );
    drop(clients);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.fds() != before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(p.fds(), before, "descriptors left behind");
    assert_eq!(p.stop(), 0);
    shutdown_clean(backend);
}

/// Descriptors run out during a burst of clients (the proxy runs with `nofile` 40): those
/// clients fail, but a local shortage is no sign of a sick upstream, so it is not marked
/// down and the first client after the burst is served.
fn descriptor_shortage_spares_the_upstream(engine: &str) {
    let (backend, p) = proxy_process(engine, &[], Some(40));
    let burst: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect_timeout(&p.addr, Duration::from_secs(2)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(burst);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = blocking_connect(p.addr);
    c.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    c.read_exact(&mut back)
        .expect("served right after the burst (upstream not marked down)");
    assert_eq!(&back, b"ping");
    drop(c);
    assert_eq!(p.stop(), 0);
    shutdown_clean(backend);
}

/// A client that sends 64 MiB and reads nothing until it is done: the proxy stops reading
/// where the bytes cannot go on (its memory stays flat), and once the client reads, every
/// byte comes back in order. Then a pair with no bytes either way is closed after the idle
/// timeout.
fn backpressure_and_idle(engine: &str) {
    let (backend, p) = proxy_process(engine, &["--idle-timeout", "1s"], None);
    // Warm the proxy before the baseline: the allocator, and every buffer of the pool (the
    // ring hands them out in turn, so twice the pool's bytes through it touch them all; the
    // pool is a fixed cost of the worker, not of a connection).
    let mut warm = blocking_connect(p.addr);
    let mut w = warm.try_clone().unwrap();
    let warm_bytes = 2 * 1024 * 16 * 1024;
    let writer = std::thread::spawn(move || w.write_all(&vec![1; warm_bytes]).unwrap());
    let mut back = vec![0u8; warm_bytes];
    warm.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    drop(warm);
    let before = p.rss_kib();
    let c = blocking_connect(p.addr);
    let total = 64usize << 20;
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for _ in 0..total >> 20 {
            w.write_all(&chunk).unwrap();
        }
    });
    // The writer fills every buffer on the way and blocks.
    std::thread::sleep(Duration::from_millis(500));
    let during = p.rss_kib();
    assert!(
        during < before + 8 * 1024,
        "the proxy held {} KiB more while its client did not read",
        during - before
    );
    let mut r = c;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while got < total {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {got} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, ((got + k) % (1 << 20) % 251) as u8, "byte {}", got + k);
        }
        got += n;
    }
    writer.join().unwrap();
    // No bytes either way on either side: closed after the idle timeout.
    let mut one = [0u8; 1];
    assert_eq!(r.read(&mut one).unwrap(), 0, "an idle pair is closed");
    assert_eq!(p.stop(), 0);
    shutdown_clean(backend);
}

/// Two hundred clients that send and never read, each pair paused both ways in the end: a
/// pair holds no more than `--max-pending-output` (64 KiB) and one 16 KiB receive buffer per
/// direction, with room for the allocator's share; the pool is warmed first.
fn never_reading_clients_stay_within_the_bound(engine: &str) {
    const CLIENTS: u64 = 200;
    let small = ["--send-buffer", "16KiB", "--recv-buffer", "16KiB"];
    let (backend, p) = proxy_process(engine, &small, None);
    warm_through(p.addr, 2 * 1024 * 16 * 1024);
    std::thread::sleep(Duration::from_millis(100));
    let before = p.rss_kib();
    let clients = flood_without_reading(p.addr, CLIENTS as usize, 2.0);
    std::thread::sleep(Duration::from_millis(300));
    let per_pair = p.rss_kib().saturating_sub(before) / CLIENTS;
    assert!(
        per_pair <= 2 * (64 + 16) + 32,
        "{engine}: {per_pair} KiB held per pair whose client does not read"
    );
    drop(clients);
    assert_eq!(p.stop(), 0);
    shutdown_clean(backend);
}

/// A thousand pipelined requests and a half-close, through the proxy to an HTTP server on the
/// same engine: every response comes back before the EOF.
fn pipelined_half_close_through(engine: EngineKind) {
    let backend = server(engine, ProtocolKind::Http, 1);
    let server = proxy(engine, &[backend.local_addr()], |_, _| {});
    for round in 0..3 {
        let mut c = blocking_connect(server.local_addr());
        let mut w = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(1000))
                .unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let got = read_to_end_or_reset(&mut c).expect("EOF, not a reset");
        writer.join().unwrap();
        let oks = got.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
        assert_eq!(
            oks, 1000,
            "{engine}, round {round}: responses before the EOF"
        );
    }
    shutdown_clean(server);
    shutdown_clean(backend);
}

/// Reads until EOF (retrying interrupted reads); a reset is returned as the error.
fn read_to_end_or_reset(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    c.read_to_end(&mut got).map(|_| got)
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = blocking_connect(addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

every_engine! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn integrity_256_mib_both_ways() {
        integrity(ENGINE).await;
    }

    #[test]
    fn half_close_passes_both_ways() {
        half_close_both_ways(ENGINE);
    }

    #[test]
    fn refused_upstream_fails_over() {
        failover(ENGINE);
    }

    #[test]
    fn silent_upstream_times_out_and_fails_over() {
        connect_timeout(ENGINE);
    }

    #[test]
    fn no_upstream_closes_the_client_at_once() {
        no_upstream(ENGINE);
    }

    #[test]
    fn an_upstream_back_is_tried_although_marked_down() {
        upstream_back_after_marked_down(ENGINE);
    }

    #[test]
    fn resets_end_both_sides() {
        resets(ENGINE);
    }

    #[test]
    fn proxy_protocol_headers_v1_v2() {
        proxy_headers(ENGINE);
    }

    #[test]
    fn backpressure_bounds_memory_then_idle_pairs_close() {
        backpressure_and_idle(ENGINE.name());
    }

    #[test]
    fn a_descriptor_shortage_does_not_mark_the_upstream_down() {
        descriptor_shortage_spares_the_upstream(ENGINE.name());
    }

    #[test]
    fn a_half_close_while_connecting_is_passed_on() {
        half_close_while_connecting(ENGINE);
    }

    #[test]
    fn never_reading_clients_stay_within_the_output_bound() {
        never_reading_clients_stay_within_the_bound(ENGINE.name());
    }

    #[test]
    fn pipelined_requests_and_a_half_close_all_answered() {
        pipelined_half_close_through(ENGINE);
    }

    #[test]
    fn three_thousand_pairs_then_every_descriptor_back() {
        many_pairs(ENGINE.name());
    }
}
