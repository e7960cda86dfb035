//! Small servers for loadgen's tests, on 127.0.0.1:0, plain std threads: an HTTP/1.x server
//! whose every answer (status, framing, keep-alive, closing, resetting, stalling) a test
//! decides, an echo server that stops answering after a number of requests, and helpers
//! to run loadgen in-process or as the binary.

#![allow(dead_code)]

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use loadgen::args::Args;
use loadgen::run::{run, RunOptions, RunResult};
use ringd::{EngineKind, ProtocolKind, ServerHandle};

thread_local! {
    /// The engine the test running on this thread asks loadgen for (`--engine`).
    static ENGINE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Runs `test` with every loadgen it starts on `engine`. A kernel that refuses io_uring
/// fails the uring runs (loadgen refuses `--engine uring` there); they are not skipped.
pub fn on_engine(engine: &'static str, test: fn()) {
    ENGINE.set(Some(engine));
    test();
}

/// `--engine` and the engine of the test on this thread, or nothing outside [`on_engine`].
pub fn engine_args() -> Vec<&'static str> {
    ENGINE.get().map_or(Vec::new(), |e| vec!["--engine", e])
}

/// Declares each named test function (no `#[test]` of its own) once per loadgen engine:
/// `uring::NAME` and `epoll::NAME`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test]
            fn $name() {
                $crate::common::on_engine("uring", super::$name)
            })*
        }
        mod epoll {
            $(#[test]
            fn $name() {
                $crate::common::on_engine("epoll", super::$name)
            })*
        }
    };
}

/// ringd in-process, epoll engine, one worker.
pub fn ringd(protocol: ProtocolKind) -> ServerHandle {
    let config = ringd::Config::new("127.0.0.1:0".parse().unwrap(), protocol, EngineKind::Epoll);
    ringd::start(config).unwrap()
}

/// Runs loadgen in-process against `target` (HOST:PORT or a URL) with `args`.
pub fn load(target: &str, args: &[&str]) -> RunResult {
    let argv = ["loadgen", target, "--quiet"]
        .into_iter()
        .chain(engine_args())
        .chain(args.iter().copied());
    let plan = Args::try_parse_from(argv).unwrap().into_plan().unwrap();
    run(plan, &RunOptions::default()).unwrap()
}

/// Runs the loadgen binary.
pub fn loadgen_bin(args: &[&str]) -> Output {
    let engine = match args.first() {
        Some(&"merge") => Vec::new(),
        _ => engine_args(),
    };
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(engine)
        .args(args)
        .output()
        .unwrap()
}

/// Every request sent ended exactly once.
pub fn assert_counts_add_up(r: &RunResult) {
    let c = &r.stats.counters;
    assert_eq!(
        c.sent,
        c.warmup_completed + c.completed + c.failed + c.unfinished,
        "{c:?}"
    );
}

/// One request as the test server saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    /// How many Host headers it had.
    pub hosts: usize,
    /// How many Content-Length headers it had.
    pub content_lengths: usize,
    pub body: Vec<u8>,
}

/// What the test server does with a request.
#[derive(Debug, Clone)]
pub enum Act {
    /// Send these bytes and keep the connection.
    Reply(Vec<u8>),
    /// Send these bytes, then close cleanly: shut the write side (a FIN), read and discard
    /// whatever still comes until the client closes, so no reset is ever sent.
    ReplyThenClose(Vec<u8>),
    /// Send these bytes and a FIN; when the next request arrives, reset the connection
    /// (a reset after a FIN, what a closed socket answers to late data).
    ReplyThenFinThenReset(Vec<u8>),
    /// Reset the connection without answering (a reset and no FIN).
    Reset,
}

/// A response: `version` "1.1" or "1.0", extra header lines, and a Content-Length body.
pub fn response(version: &str, status: u16, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/{version} {status} X\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The test server's decision for a request: the request, its number on its connection
/// (from 1) and in the server's life (from 1).
pub type Handler = dyn Fn(&Req, u64, u64) -> Act + Send + Sync;

/// An HTTP/1.x server driven by `handler`; requests with other than one Host header get a
/// 400, as nginx does.
pub fn http_server(handler: impl Fn(&Req, u64, u64) -> Act + Send + Sync + 'static) -> SocketAddr {
    let handler: Arc<Handler> = Arc::new(handler);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let total = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let (handler, total) = (handler.clone(), total.clone());
            std::thread::spawn(move || serve_http(s, &*handler, &total));
        }
    });
    addr
}

fn serve_http(mut s: TcpStream, handler: &Handler, total: &AtomicU64) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut on_conn = 0u64;
    loop {
        let Some((len, req)) = parse_request(&buf) else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        buf.drain(..len);
        on_conn += 1;
        let n = total.fetch_add(1, Ordering::SeqCst) + 1;
        let act = if req.hosts != 1 {
            Act::ReplyThenClose(response("1.1", 400, &["Connection: close"], b"bad host"))
        } else {
            handler(&req, on_conn, n)
        };
        match act {
            Act::Reply(bytes) => {
                if s.write_all(&bytes).is_err() {
                    return;
                }
            }
            Act::ReplyThenClose(bytes) => {
                let _ = s.write_all(&bytes);
                let _ = s.shutdown(Shutdown::Write);
                while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
                return;
            }
            Act::ReplyThenFinThenReset(bytes) => {
                let _ = s.write_all(&bytes);
                let _ = s.shutdown(Shutdown::Write);
                if matches!(s.read(&mut chunk), Ok(n) if n > 0) {
                    reset(s);
                }
                return;
            }
            Act::Reset => return reset(s),
        }
    }
}

/// Closes with SO_LINGER 0: a reset, no FIN.
pub fn reset(s: TcpStream) {
    let s = socket2::Socket::from(s);
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

fn parse_request(buf: &[u8]) -> Option<(usize, Req)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(e) => panic!("loadgen sent a malformed request: {e}"),
    };
    let mut body_len = 0;
    let mut hosts = 0;
    let mut content_lengths = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value).unwrap().parse().unwrap();
            content_lengths += 1;
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        }
    }
    if buf.len() < head + body_len {
        return None;
    }
    Some((
        head + body_len,
        Req {
            method: req.method.unwrap().to_string(),
            path: req.path.unwrap().to_string(),
            hosts,
            content_lengths,
            body: buf[head..head + body_len].to_vec(),
        },
    ))
}

/// An echo server that echoes `budget` requests of `size` bytes in all, then stops
/// answering (it keeps reading): a server that stalls for the rest of the run.
pub fn echo_server_answering(budget: u64, size: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let answered = answered.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                let mut stalled = false;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if stalled {
                        continue;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while pending.len() >= size {
                        if answered.fetch_add(1, Ordering::SeqCst) >= budget {
                            stalled = true;
                            break;
                        }
                        let req: Vec<u8> = pending.drain(..size).collect();
                        if s.write_all(&req).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The URL of a test server.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}
