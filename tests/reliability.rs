//! Reliability under abuse, for every engine: integrity of large random echo traffic, the
//! connection limit, descriptor exhaustion, slowloris, chaos, and drain under load. Real
//! ringd (in-process, or the binary where the process itself must be observed), real sockets.

#[macro_use]
mod matrix;
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ringd::{Config, EngineKind, ProtocolKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fast deterministic bytes (xorshift), so hundreds of MiB cost little to make.
fn fill_random(seed: u64, buf: &mut [u8]) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// 256 MiB of random data in random-size messages (1 B to 1 MiB) over 8 connections.
async fn integrity(engine: EngineKind) {
    const TOTAL: usize = 256 << 20;
    const CONNS: usize = 8;
    let server = server(engine, ProtocolKind::Echo, 2);
    let addr = server.local_addr();
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        tasks.push(tokio::spawn(async move {
            let mut s = connect(addr).await;
            let (mut r, mut w) = s.split();
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1);
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut sizes = Vec::new();
            let mut total = 0;
            while total < TOTAL / CONNS {
                // Log-spread from 1 B to 1 MiB, with a ragged tail.
                let size = ((1usize << (next() % 21)) + (next() % 977) as usize).min(1 << 20);
                sizes.push((next(), size));
                total += size;
            }
            let sizes2 = sizes.clone();
            let writer = async move {
                let mut buf = vec![0u8; 1 << 20];
                for (seed, size) in sizes {
                    fill_random(seed, &mut buf[..size]);
                    w.write_all(&buf[..size]).await.unwrap();
                }
            };
            let reader = async move {
                let mut want = vec![0u8; 1 << 20];
                let mut got = vec![0u8; 1 << 20];
                let mut mismatched = 0usize;
                for (seed, size) in sizes2 {
                    fill_random(seed, &mut want[..size]);
                    tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut got[..size]))
                        .await
                        .expect("echo stalled")
                        .unwrap();
                    if got[..size] != want[..size] {
                        mismatched += got[..size]
                            .iter()
                            .zip(&want[..size])
                            .filter(|(a, b)| a != b)
                            .count();
                    }
                }
                mismatched
            };
            let ((), mismatched) = tokio::join!(writer, reader);
            (total, mismatched)
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        let (n, mismatched) = t.await.unwrap();
        assert_eq!(mismatched, 0, "{engine}: echoed bytes differ");
        bytes += n;
    }
    assert!(bytes >= TOTAL);
    shutdown_clean(server);
}

/// `--max-connections 100`, 150 clients: exactly 50 turned away (with a 503), the 100 served.
async fn connection_limit(engine: EngineKind) {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), ProtocolKind::Http, engine);
    config.threads = 2;
    config.max_connections = 100;
    config.metrics = Some("127.0.0.1:0".parse().unwrap());
    let server = ringd::start(config).unwrap();
    let addr = server.local_addr();
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut admitted = Vec::new();
    for _ in 0..100 {
        let mut s = connect(addr).await;
        s.write_all(request).await.unwrap();
        let resp = undate(&read_n(&mut s, OK.len()).await);
        assert_eq!(resp, OK);
        admitted.push(s);
    }
    for _ in 0..50 {
        let mut s = connect(addr).await;
        let resp = read_to_eof(&mut s).await;
        assert!(
            resp.starts_with(b"HTTP/1.1 503 "),
            "{}",
            String::from_utf8_lossy(&resp)
        );
    }
    for s in admitted.iter_mut() {
        s.write_all(request).await.unwrap();
        assert_eq!(undate(&read_n(s, OK.len()).await), OK);
    }
    let rejected: u64 = server
        .stats()
        .iter()
        .map(|s| s.rejected.load(Ordering::Relaxed))
        .sum();
    assert_eq!(rejected, 50);
    let text = scrape(server.metrics_addr().unwrap()).await;
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_connections_rejected_total", ""),
        50
    );
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_connections_active", ""),
        100
    );
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_connections_accepted_total", ""),
        100
    );
    assert_eq!(
        ringd::metrics::sum_metric(&text, "ringd_requests_total", ""),
        200
    );
    drop(admitted);
    shutdown_clean(server);
}

async fn scrape(addr: SocketAddr) -> String {
    let out = request_to_eof(addr, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").await;
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    text.split("\r\n\r\n").nth(1).unwrap().to_string()
}

/// Slowloris: slow clients trickle header bytes while normal clients keep being served; the
/// slow ones get a 408 once the header timeout passes.
async fn slowloris(engine: EngineKind) {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), ProtocolKind::Http, engine);
    config.header_timeout = Duration::from_millis(1500);
    let server = ringd::start(config).unwrap();
    let addr = server.local_addr();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        slow.push(tokio::spawn(async move {
            let mut s = connect(addr).await;
            let header =
                b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            let (mut r, mut w) = s.split();
            let trickle = async {
                for b in header {
                    if w.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            };
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut got));
            tokio::select! {
                _ = trickle => panic!("the slow header completed without a 408"),
                r = read => { let _ = r.expect("no 408 within 10 s"); }
            }
            got
        }));
    }
    // Normal clients keep working meanwhile.
    let mut normal = connect(addr).await;
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        normal
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(undate(&read_n(&mut normal, OK.len()).await), OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(served > 50, "normal client starved: {served}");
    for t in slow {
        let got = t.await.unwrap();
        assert!(
            got.starts_with(b"HTTP/1.1 408 "),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "408 before the timeout: {elapsed:?}"
    );
    let timed_out: u64 = server
        .stats()
        .iter()
        .map(|s| s.closed_for(ringd::connection::CloseReason::HeaderTimeout))
        .sum();
    assert_eq!(timed_out, 200);
    drop(normal);
    shutdown_clean(server);
}

/// Idle connections are closed after `--idle-timeout`; active ones are not.
async fn idle_timeout(engine: EngineKind) {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), ProtocolKind::Echo, engine);
    config.idle_timeout = Duration::from_millis(600);
    let server = ringd::start(config).unwrap();
    let addr = server.local_addr();
    let mut idle = connect(addr).await;
    let mut busy = connect(addr).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(echo_round_trip(&mut busy, b"ping").await, b"ping");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(read_to_eof(&mut idle).await.is_empty());
    assert_eq!(echo_round_trip(&mut busy, b"still").await, b"still");
    let idled: u64 = server
        .stats()
        .iter()
        .map(|s| s.closed_for(ringd::connection::CloseReason::Idle))
        .sum();
    assert_eq!(idled, 1);
    drop(busy);
    shutdown_clean(server);
}

/// An HTTP connection that never sends a byte is closed after the header timeout, not the
/// idle one, and without a `408` (it asked nothing); one that began a request gets its 408.
async fn silent_http_connection_closes_at_the_header_timeout(engine: EngineKind) {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), ProtocolKind::Http, engine);
    config.header_timeout = Duration::from_millis(500);
    config.idle_timeout = Duration::from_secs(60);
    let server = ringd::start(config).unwrap();
    let addr = server.local_addr();
    let started = Instant::now();
    let mut silent = connect(addr).await;
    let mut partial = connect(addr).await;
    partial.write_all(b"GET / HT").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), read_to_eof(&mut silent))
        .await
        .expect("a silent connection is closed long before the idle timeout");
    assert!(
        got.is_empty(),
        "{engine}: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    let got = tokio::time::timeout(Duration::from_secs(20), read_to_eof(&mut partial))
        .await
        .expect("a partial request times out");
    assert!(got.starts_with(b"HTTP/1.1 408 "), "{engine}: {got:?}");
    // Connections that arrive while the worker's clock is up to a tick old (it idles between
    // them): none is closed before its full header timeout.
    let late: Vec<_> = (0..8u64)
        .map(|i| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150 + 37 * i)).await;
                let began = Instant::now();
                let mut s = connect(addr).await;
                let got = read_to_eof(&mut s).await;
                (began.elapsed(), got.is_empty())
            })
        })
        .collect();
    for (i, t) in late.into_iter().enumerate() {
        let (took, silent) = t.await.unwrap();
        assert!(silent, "{engine}: connection {i} got bytes");
        // The workers' clock counts whole milliseconds: a millisecond's leeway, no more.
        assert!(
            took >= Duration::from_millis(498),
            "{engine}: connection {i} closed after {took:?}, before its header timeout"
        );
    }
    // Our EOFs end the server's lingering closes; then both are counted.
    drop((silent, partial));
    let counted = || -> u64 {
        server
            .stats()
            .iter()
            .map(|s| s.closed_for(ringd::connection::CloseReason::HeaderTimeout))
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted(), 10, "{engine}: closes counted as header timeouts");
    shutdown_clean(server);
}

/// Peers that send but never read hold what they sent in the server; with a small buffer pool
/// (`--buffers 16`, 4 KiB each), 40 of them each pushing 128 KiB must not starve a normal
/// client of receive buffers: its echoes keep coming.
async fn readers_that_never_read_cannot_starve_others(engine: EngineKind) {
    let server = server_with(engine, ProtocolKind::Echo, 1, |c| {
        c.buffers = 16;
        c.listen_options.send_buffer = Some(4096);
    });
    let addr = server.local_addr();
    let mut hogs = Vec::new();
    for _ in 0..40 {
        // A small receive buffer: the echo backs up in the server at once.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(addr).await.unwrap();
        hogs.push(tokio::spawn(async move {
            // Writes until the window closes; never reads. Times out, then holds on.
            let chunk = vec![1u8; 128 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(500), s.write_all(&chunk)).await;
            s
        }));
    }
    let mut held = Vec::new();
    for h in hogs {
        held.push(h.await.unwrap());
    }
    let mut normal = connect(addr).await;
    for i in 0..50u32 {
        let payload = i.to_le_bytes().repeat(100);
        let back = tokio::time::timeout(
            Duration::from_secs(5),
            echo_round_trip(&mut normal, &payload),
        )
        .await
        .expect("a normal client is starved by peers that never read");
        assert_eq!(back, payload);
    }
    drop(held);
    drop(normal);
    shutdown_clean(server);
}

/// `--max-connections 2`, both places held, then 200 clients turned away that reset at once:
/// nobody is admitted over the limit meanwhile, and once everyone left, new clients are
/// served (a rejected connection never gives back a place it did not hold).
fn limit_survives_rejected_resets(engine: EngineKind) {
    let p = ringd_proc(engine, "http", None, &["--max-connections", "2"]);
    let get = |s: &mut TcpStream| -> Vec<u8> {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 12];
        match s.read_exact(&mut buf) {
            Ok(()) => buf.to_vec(),
            Err(_) => Vec::new(),
        }
    };
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(p.addr).unwrap())
        .collect();
    for s in &mut held {
        assert_eq!(get(s), b"HTTP/1.1 200");
    }
    for _ in 0..200 {
        let s = TcpStream::connect(p.addr).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let mut s = TcpStream::connect(p.addr).unwrap();
        assert_ne!(get(&mut s), b"HTTP/1.1 200", "admitted over the limit");
    }
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..5 {
        let mut s = TcpStream::connect(p.addr).unwrap();
        assert_eq!(
            get(&mut s),
            b"HTTP/1.1 200",
            "client {i} after everyone left"
        );
    }
    assert_eq!(p.stop(), 0);
}

/// Clients that pipeline 36 KB of GETs for a 100 KB body each and never read: the output
/// the server holds stays bounded by --max-pending-output per connection (one read of small
/// requests could otherwise queue hundreds of responses).
fn pipelined_output_is_bounded(engine: EngineKind) {
    let body = "x".repeat(100_000);
    let p = ringd_proc(engine, "http", None, &["--http-body", &body]);
    let warm = TcpStream::connect(p.addr).unwrap();
    drop(warm);
    std::thread::sleep(Duration::from_millis(100));
    let before = p.rss_kib();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&p.addr.into()).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.send(&req);
        clients.push(s);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let grew = p.rss_kib().saturating_sub(before);
    assert!(
        grew < 32 * 1024,
        "{grew} KiB held for 20 clients that do not read"
    );
    drop(clients);
    assert_eq!(p.stop(), 0);
}

/// Two hundred peers that send and never read: a connection holds no more than
/// `--max-pending-output` (64 KiB) and one 4 KiB receive buffer, with room for the
/// allocator's share; the worker's buffer pool is warmed first (a fixed cost, not a
/// connection's).
fn never_reading_peers_stay_within_the_bound(engine: EngineKind) {
    const PEERS: u64 = 200;
    let p = ringd_proc(engine, "echo", None, &[]);
    warm_through(p.addr, 8 << 20);
    std::thread::sleep(Duration::from_millis(100));
    let before = p.rss_kib();
    let peers = flood_without_reading(p.addr, PEERS as usize, 2.0);
    std::thread::sleep(Duration::from_millis(300));
    let per_peer = p.rss_kib().saturating_sub(before) / PEERS;
    assert!(
        per_peer <= 64 + 4 + 28,
        "{engine}: {per_peer} KiB held per peer that does not read"
    );
    drop(peers);
    assert_eq!(p.stop(), 0);
}

every_engine! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn integrity_256_mib_random_echo() {
        integrity(ENGINE).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_connections_rejects_exactly_the_excess() {
        connection_limit(ENGINE).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slowloris_gets_408_and_normal_clients_are_served() {
        slowloris(ENGINE).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_http_connection_closes_at_the_header_timeout() {
        silent_http_connection_closes_at_the_header_timeout(ENGINE).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_time_out() {
        idle_timeout(ENGINE).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_that_never_read_cannot_starve_others() {
        readers_that_never_read_cannot_starve_others(ENGINE).await;
    }

    #[test]
    fn fd_exhaustion_backs_off_and_recovers() {
        emfile(ENGINE);
    }

    #[test]
    fn chaos_leaves_no_descriptor_behind() {
        chaos(ENGINE);
    }

    #[test]
    fn rejected_clients_that_reset_do_not_break_the_limit() {
        limit_survives_rejected_resets(ENGINE);
    }

    #[test]
    fn never_reading_peers_stay_within_the_output_bound() {
        never_reading_peers_stay_within_the_bound(ENGINE);
    }

    #[test]
    fn pipelined_output_stays_bounded() {
        pipelined_output_is_bounded(ENGINE);
    }

    #[test]
    fn sigterm_under_http_load_completes_every_response() {
        drain_under_load(ENGINE);
    }
}

// ---- tests on the binary, where the process itself is observed ----

/// ringd with one worker of `engine` speaking `protocol`.
fn ringd_proc(
    engine: EngineKind,
    protocol: &str,
    nofile: Option<u32>,
    extra: &[&str],
) -> RingdProcess {
    let mut args = vec![
        "--threads",
        "1",
        "--engine",
        engine.name(),
        "--protocol",
        protocol,
    ];
    args.extend_from_slice(extra);
    RingdProcess::start(&args, nofile)
}

fn echo_once(addr: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)?;
    assert_eq!(&buf, b"ping");
    Ok(())
}

/// 300 clients against a ringd allowed 64 descriptors: it stays up, does not spin while
/// saturated, and serves a new client within a second once the others leave.
fn emfile(engine: EngineKind) {
    let mut p = ringd_proc(engine, "echo", Some(64), &[]);
    let mut clients = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect_timeout(&p.addr, Duration::from_secs(2)) {
            clients.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = p.cpu_secs();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = p.cpu_secs() - cpu0;
    eprintln!("{engine}: {cpu:.3} s of CPU in 1 s while out of descriptors");
    assert!(
        cpu < 0.3,
        "{engine}: {cpu:.2} s of CPU in 1 s while out of descriptors (spinning?)"
    );
    assert!(p.alive(), "{engine}: ringd died when out of descriptors");
    drop(clients);
    let gone = Instant::now();
    loop {
        match echo_once(p.addr, Duration::from_millis(500)) {
            Ok(()) => break,
            Err(e) => assert!(
                gone.elapsed() < Duration::from_secs(1),
                "{engine}: not serving 1 s after the clients left: {e}"
            ),
        }
    }
    assert_eq!(p.stop(), 0);
}

/// Thousands of connections misbehaving in every way; afterwards ringd is up and holds no
/// more descriptors than before (the very same set).
fn chaos(engine: EngineKind) {
    for protocol in ["echo", "http"] {
        let mut p = ringd_proc(
            engine,
            protocol,
            None,
            &["--idle-timeout", "3s", "--header-timeout", "2s"],
        );
        let baseline = p.fds();
        let addr = p.addr;
        let workers: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..500u32 {
                        let Ok(s) = TcpStream::connect(addr) else {
                            continue;
                        };
                        match (i + t) % 6 {
                            // RST in the middle of a request.
                            0 => {
                                let _ = (&s).write_all(b"GET / HTTP/1.1\r\nHost: x");
                                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                            }
                            // Half-close after a request.
                            1 => {
                                let _ = (&s).write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                                let _ = s.shutdown(std::net::Shutdown::Write);
                                held.push(s);
                            }
                            // Connect and idle.
                            2 => held.push(s),
                            // A partial request, then nothing.
                            3 => {
                                let _ = (&s).write_all(b"GET /partial HTTP/1.1\r\nX: ");
                                held.push(s);
                            }
                            // Send a lot, never read.
                            4 => {
                                let _ = s.set_nonblocking(true);
                                let junk = vec![b'G'; 256 * 1024];
                                let _ = (&s).write(&junk);
                                held.push(s);
                            }
                            // Garbage.
                            _ => {
                                let _ = (&s).write_all(&[
                                    0xff, 0x00, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n',
                                ]);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    drop(held);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert!(p.alive(), "{engine}/{protocol}: ringd died");
        echo_or_get(addr, protocol);
        let deadline = Instant::now() + Duration::from_secs(8);
        while p.fds().len() > baseline.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let after = p.fds();
        assert_eq!(
            after, baseline,
            "{engine}/{protocol}: descriptors left behind (or lost)"
        );
        assert_eq!(p.stop(), 0);
    }
}

fn echo_or_get(addr: SocketAddr, protocol: &str) {
    if protocol == "echo" {
        echo_once(addr, Duration::from_secs(2)).unwrap();
    } else {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }
}

/// The length and status of the whole HTTP response (head and Content-Length body) at the
/// start of `buf`; `Ok(None)` until all of it is there.
fn parse_response(buf: &[u8]) -> Result<Option<(usize, u16)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let body: usize = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .ok_or("no valid Content-Length")?;
    let status = resp.code.ok_or("no status")?;
    Ok((buf.len() >= head + body).then_some((head + body, status)))
}

/// SIGTERM while clients pipeline HTTP requests: every response a client received is whole,
/// and ringd exits 0.
fn drain_under_load(engine: EngineKind) {
    let p = ringd_proc(engine, "http", None, &[]);
    let addr = p.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let batch = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
                let mut complete = 0u32;
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(&batch).is_err() {
                        break;
                    }
                    // Read until three whole responses, or the server ends the connection.
                    let mut got = 0;
                    let mut chunk = [0u8; 4096];
                    while got < 3 {
                        match parse_response(&buf) {
                            Ok(Some((len, status))) => {
                                assert_eq!(status, 200);
                                buf.drain(..len);
                                got += 1;
                                complete += 1;
                                continue;
                            }
                            Ok(None) => {}
                            Err(e) => panic!("malformed response: {e}"),
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => {
                                // Ended between responses, never inside one.
                                assert!(
                                    buf.is_empty(),
                                    "a response was cut: {:?}",
                                    String::from_utf8_lossy(&buf)
                                );
                                return complete;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                }
                complete
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(p.stop(), 0);
    stop.store(true, Ordering::Relaxed);
    let total: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(total > 0);
}
