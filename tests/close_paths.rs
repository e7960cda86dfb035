//! Everything that sends and then closes, on every engine, with the server's send buffer at
//! 4 KiB (`--send-buffer`) and a client with a 4 KiB receive buffer that reads slowly: the
//! conditions of a real network link, which loopback's megabyte buffers hide. Every byte of
//! the last response must arrive, then a clean EOF, never a reset. Also: a slow download
//! outlasting the idle timeout is not cut (bytes flow), and a header timeout that fires while
//! a response is blocked on a slow reader queues its `408` behind that response.

#[macro_use]
mod matrix;
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use ringd::protocol::ProtocolSpec;
use ringd::{EngineKind, ProtocolKind, Service};

/// Sizes of the last response: a byte, less than a segment, just over the send buffer's
/// worth several times, and a megabyte.
const SIZES: [usize; 4] = [1, 1000, 65_537, 1 << 20];

/// A server whose connections have a 4 KiB send buffer, speaking `protocol` with `greeting`
/// and `body`.
fn small_buffer_server(
    engine: EngineKind,
    protocol: ProtocolKind,
    payload: &[u8],
    setup: impl FnOnce(&mut ringd::Config),
) -> ringd::ServerHandle {
    server_with(engine, protocol, 1, |c| {
        c.service = Service::Protocol(ProtocolSpec::new(protocol, payload, payload));
        c.listen_options.send_buffer = Some(4096);
        c.max_pending_output = c.max_pending_output.max(c.buffer_size);
        setup(c);
    })
}

/// Sends `request` from another thread (then half-closes if asked) while reading slowly
/// (small reads, a pause now and then) until EOF. A reset fails the test.
fn slow_exchange(addr: SocketAddr, request: Vec<u8>, half_close: bool) -> Vec<u8> {
    let mut s = small_blocking_client(addr);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&request).unwrap();
        if half_close {
            w.shutdown(Shutdown::Write).unwrap();
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    let mut reads = 0u32;
    loop {
        reads += 1;
        if reads.is_multiple_of(16) {
            std::thread::sleep(Duration::from_millis(1));
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("after {} bytes: {e} (a reset cuts the response)", got.len()),
        }
    }
    writer.join().unwrap();
    got
}

fn ok_close(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nServer: ringd\r\n{DATE}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn ok_keep(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nServer: ringd\r\n{DATE}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A payload that shows where a byte went missing.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 23) as u8).collect()
}

/// `got` is `want`, the `Date` of each response aside (see [`undate`]).
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    let got = &undate(got)[..];
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {} (first difference at {at:?})",
            got.len(),
            want.len()
        );
    }
}

fn http_closes(engine: EngineKind) {
    for n in SIZES {
        let body = payload(n);
        let server = small_buffer_server(engine, ProtocolKind::Http, &body, |_| {});
        let addr = server.local_addr();
        let close = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec();
        assert_same(
            &slow_exchange(addr, close, false),
            &ok_close(&body),
            &format!("{n} B, Connection: close"),
        );
        let http10 = b"GET / HTTP/1.0\r\n\r\n".to_vec();
        assert_same(
            &slow_exchange(addr, http10, false),
            &ok_close(&body),
            &format!("{n} B, HTTP/1.0"),
        );
        let pipelined = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec();
        let want = [ok_keep(&body), ok_keep(&body), ok_close(&body)].concat();
        assert_same(
            &slow_exchange(addr, pipelined, false),
            &want,
            &format!("{n} B, pipelined"),
        );
        // The peer half-closes after a keep-alive request: answered, then EOF.
        let half = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_same(
            &slow_exchange(addr, half, true),
            &ok_keep(&body),
            &format!("{n} B, half-close"),
        );
        shutdown_clean(server);
    }
}

/// A client that pipelines requests and half-closes at once is owed every response, also
/// those the server holds back while its output is at `--max-pending-output`: a thousand
/// small ones (over the 64 KiB bound), and three of 70 KB.
fn http_half_close_after_pipelining(engine: EngineKind) {
    for (n, size) in [(1000, 13), (3, 70_000)] {
        let body = payload(size);
        let server = small_buffer_server(engine, ProtocolKind::Http, &body, |_| {});
        let addr = server.local_addr();
        let requests = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(n);
        for round in 0..5 {
            assert_same(
                &slow_exchange(addr, requests.clone(), true),
                &ok_keep(&body).repeat(n),
                &format!("{n} pipelined GETs of {size} B and a half-close, round {round}"),
            );
        }
        shutdown_clean(server);
    }
}

fn hello_closes(engine: EngineKind) {
    for n in SIZES {
        let greeting = payload(n);
        let server = small_buffer_server(engine, ProtocolKind::Hello, &greeting, |_| {});
        let addr = server.local_addr();
        assert_same(
            &slow_exchange(addr, b"hi".to_vec(), false),
            &greeting,
            &format!("{n} B greeting"),
        );
        // More than the one message it reads: the rest is read and dropped, never a reset.
        assert_same(
            &slow_exchange(addr, payload(5000), false),
            &greeting,
            &format!("{n} B greeting, long message"),
        );
        shutdown_clean(server);
    }
}

/// Reads until EOF; a reset fails the test, saying how much of `expected` bytes came.
fn read_to_eof(s: &mut TcpStream, engine: EngineKind, expected: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{engine}: {e} after {} of {expected} bytes", got.len()),
        }
    }
}

/// Two pipelined requests, the second saying close, to a slow reader, with output bounded at
/// one 1 MiB response: reading pauses after the first, and the close decision is taken while
/// it is paused. One more byte arrives then: it must not turn the close into a reset that
/// cuts the second response.
fn http_late_byte_while_paused(engine: EngineKind) {
    let body = payload(1 << 20);
    let server = small_buffer_server(engine, ProtocolKind::Http, &body, |c| {
        c.max_pending_output = 1 << 20;
    });
    let mut s = small_blocking_client(server.local_addr());
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"X").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut want = ok_keep(&body);
    want.extend_from_slice(&ok_close(&body));
    let got = read_to_eof(&mut s, engine, want.len());
    assert_same(&got, &want, "two responses with a late byte");
    drop(s);
    shutdown_clean(server);
}

/// The client's message comes in two writes, the second while the greeting (1 MiB) is still
/// going out to a slow reader: however the engine closes, those late bytes must not turn the
/// close into a reset that cuts the greeting.
fn hello_late_input(engine: EngineKind) {
    let greeting = payload(1 << 20);
    let server = small_buffer_server(engine, ProtocolKind::Hello, &greeting, |_| {});
    let mut s = small_blocking_client(server.local_addr());
    s.write_all(b"hel").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"lo").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let got = read_to_eof(&mut s, engine, greeting.len());
    assert_same(&got, &greeting, "greeting with late input");
    drop(s);
    shutdown_clean(server);
}

fn echo_half_close(engine: EngineKind) {
    let server = small_buffer_server(engine, ProtocolKind::Echo, b"", |_| {});
    let addr = server.local_addr();
    for n in SIZES {
        let data = payload(n);
        assert_same(
            &slow_exchange(addr, data.clone(), true),
            &data,
            &format!("{n} B echo"),
        );
    }
    shutdown_clean(server);
}

/// A download that takes longer than the idle timeout is not idle: bytes flow. A connection
/// that sends nothing and gets nothing is cut after it.
fn slow_download_is_not_idle(engine: EngineKind) {
    let body = payload(96 * 1024);
    let server = small_buffer_server(engine, ProtocolKind::Http, &body, |c| {
        c.idle_timeout = Duration::from_millis(300);
    });
    let addr = server.local_addr();
    let mut s = small_blocking_client(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        std::thread::sleep(Duration::from_millis(5));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("after {} bytes: {e}", got.len()),
        }
    }
    assert_same(&got, &ok_close(&body), "slow download");
    assert!(
        start.elapsed() > Duration::from_millis(600),
        "the download was not slower than the idle timeout ({:?}): the test proves nothing",
        start.elapsed()
    );
    let mut idle = small_blocking_client(addr);
    let mut one = [0u8; 1];
    assert_eq!(
        idle.read(&mut one).unwrap(),
        0,
        "a truly idle connection is closed"
    );
    let stats = server.stats()[0].clone();
    shutdown_clean(server);
    assert_eq!(stats.closed_for(ringd::connection::CloseReason::Idle), 1);
}

/// The header deadline of a second, incomplete request passes while the first response is
/// stuck behind a reader that does not read: the `408` follows that response, whole.
fn header_timeout_behind_a_blocked_response(engine: EngineKind) {
    let body = payload(256 * 1024);
    let server = small_buffer_server(engine, ProtocolKind::Http, &body, |c| {
        c.header_timeout = Duration::from_millis(200);
    });
    let addr = server.local_addr();
    let mut s = small_blocking_client(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /never-fin")
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("read to EOF without a reset");
    let timeout = format!("HTTP/1.1 408 Request Timeout\r\nServer: ringd\r\n{DATE}Content-Length: 0\r\nConnection: close\r\n\r\n");
    let want = [ok_keep(&body), timeout.into_bytes()].concat();
    assert_same(&got, &want, "200 then 408");
    shutdown_clean(server);
}

/// The rest of a second request arrives while the first response waits on a slow reader:
/// the server is not reading then, so its header clock does not run, and both requests are
/// answered (no 408).
fn no_header_timeout_while_not_reading(engine: EngineKind) {
    let body = payload(120_000);
    let server = small_buffer_server(engine, ProtocolKind::Http, &body, |c| {
        c.header_timeout = Duration::from_millis(300);
    });
    let mut s = small_blocking_client(server.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HT")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Read slowly: the first response takes longer than the header timeout.
    std::thread::sleep(Duration::from_millis(600));
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("read to EOF without a reset");
    let want = [ok_keep(&body), ok_close(&body)].concat();
    assert_same(&got, &want, "two responses, no 408");
    shutdown_clean(server);
}

/// A reply cut by the idle timeout (the peer stopped reading) ends in a reset, so that the
/// peer cannot take the part it got for the whole reply.
fn cut_reply_resets(engine: EngineKind) {
    cut_reply_resets_with(engine, |_| {});
}

/// The same with `uring` on ordinary descriptors (reset by setsockopt(2), not by the ring).
#[test]
fn uring_ordinary_descriptors_cut_reply_ends_in_a_reset() {
    cut_reply_resets_with(EngineKind::Uring, |c| c.direct_descriptors = false);
}

fn cut_reply_resets_with(engine: EngineKind, setup: impl FnOnce(&mut ringd::Config)) {
    let greeting = payload(100_000);
    let server = small_buffer_server(engine, ProtocolKind::Hello, &greeting, |c| {
        c.idle_timeout = Duration::from_millis(400);
        setup(c);
    });
    let mut s = small_blocking_client(server.local_addr());
    s.write_all(b"hi").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got);
    assert!(
        got.len() < greeting.len(),
        "the whole greeting fit in the buffers"
    );
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "a cut reply after {} bytes must end in a reset",
        got.len()
    );
    shutdown_clean(server);
}

/// A `400` whose FIN is linked behind its send, queued after a 100 kB response to a slow
/// reader, with SQPOLL (whose thread may take a half-published link): the send and its FIN
/// reach the kernel together, so the `400` is never cut.
#[test]
fn uring_linked_fin_under_sqpoll_follows_the_last_byte() {
    let body = payload(100_000);
    let server = small_buffer_server(EngineKind::Uring, ProtocolKind::Http, &body, |c| {
        c.uring.sqpoll = true;
    });
    let mut want = ok_keep(&body);
    want.extend_from_slice(&undate(&ringd::protocol::error_response(
        ringd::protocol::ErrorStatus::BadRequest,
    )));
    for round in 0..300 {
        let mut s = small_blocking_client(server.local_addr());
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00garbage\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        assert!(r.is_ok(), "round {round}: {r:?} after {} bytes", got.len());
        assert_same(&got, &want, &format!("round {round}"));
    }
    shutdown_clean(server);
}

every_engine! {
    #[test]
    fn http_responses_arrive_whole_before_eof() {
        http_closes(ENGINE);
    }

    #[test]
    fn http_half_close_gets_every_pipelined_response() {
        http_half_close_after_pipelining(ENGINE);
    }

    #[test]
    fn hello_greeting_arrives_whole_before_eof() {
        hello_closes(ENGINE);
    }

    #[test]
    fn http_late_byte_while_reading_is_paused() {
        http_late_byte_while_paused(ENGINE);
    }

    #[test]
    fn hello_late_input_does_not_cut_the_greeting() {
        hello_late_input(ENGINE);
    }

    #[test]
    fn echo_arrives_whole_after_half_close() {
        echo_half_close(ENGINE);
    }

    #[test]
    fn slow_download_outlasts_the_idle_timeout() {
        slow_download_is_not_idle(ENGINE);
    }

    #[test]
    fn no_header_timeout_while_the_server_is_not_reading() {
        no_header_timeout_while_not_reading(ENGINE);
    }

    #[test]
    fn a_cut_reply_ends_in_a_reset() {
        cut_reply_resets(ENGINE);
    }

    #[test]
    fn header_timeout_never_interleaves() {
        header_timeout_behind_a_blocked_response(ENGINE);
    }
}
