//! The workers' lifecycle as a whole, every engine: a worker that panics makes the server
//! drain the others and exit non-zero with one line naming the worker and the cause; a start
//! that fails halfway drains and joins the workers that did start, so none keeps the port; a
//! drain (SIGTERM, or a handover on SIGUSR2) closes idle keep-alive connections after its
//! grace, not at the shutdown timeout.
//! Faults are injected with `RINGD_TEST_FAULT` (the binary) or `Config::test_fault`.

#[macro_use]
mod matrix;
mod lineage;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lineage::{temp_dir, Lineage, Start};
use ringd::config::TestFault;
use ringd::{Config, EngineKind, ProtocolKind};

/// A keep-alive connection that got a response (from a worker that serves).
fn served_connection(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    buf[..n].starts_with(b"HTTP/1.1 200").then_some(s)
}

fn a_panicking_worker(engine: &str) {
    let dir = temp_dir("lifecycle-panic");
    let mut start = Start::new(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--engine",
            engine,
            "--protocol",
            "http",
            "--threads",
            "2",
        ],
    );
    start
        .env
        .push((TestFault::VAR, "panic-worker=1@4000ms".to_string()));
    let mut l = Lineage::start(start);
    // Worker 1 never accepts: keep trying until worker 0 answers.
    let mut held = (0..50)
        .find_map(|_| served_connection(l.addr))
        .expect("worker 0 serves");
    let code = l.exit_code(l.current(), Duration::from_secs(30));
    assert_eq!(code, 1, "a worker panic is a failure");
    // The other worker drained: the idle connection was closed, not abandoned.
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    assert!(
        held.read_to_end(&mut rest).is_ok(),
        "EOF on the held connection"
    );
    std::thread::sleep(Duration::from_millis(100));
    let lines = l.log.lines();
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("ringd: error: worker 1 panicked at src/process/worker.rs:")
            && last.ends_with(": injected by RINGD_TEST_FAULT"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("stopped accepted=")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("RUST_BACKTRACE")),
        "{lines:#?}"
    );
    assert!(!l.pid_file.exists(), "the pid file is removed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two idle keep-alive connections (one `GET` each) when the drain begins, by SIGTERM or by a
/// handover (SIGUSR2): both see EOF once the drain's grace (1 s) has passed, far below the
/// 20 s shutdown timeout, and the process exits 0 with nothing cut.
fn idle_keep_alive_closes_after_the_grace(engine: &str, sig: i32) {
    let dir = temp_dir("lifecycle-idle-drain");
    let mut l = Lineage::start(Start::new(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--engine",
            engine,
            "--protocol",
            "http",
            "--threads",
            "1",
            "--shutdown-timeout",
            "20s",
        ],
    ));
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| served_connection(l.addr).expect("a response on a keep-alive connection"))
        .collect();
    let old = l.current();
    let from = l.log.len();
    if sig == libc::SIGUSR2 {
        l.upgrade();
    } else {
        l.signal(old, sig);
    }
    // The drain began (at the latest) now; the grace is 1 s, the rest is margin.
    let deadline = Instant::now() + Duration::from_secs(4);
    for (i, s) in held.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut rest = Vec::new();
        let read = s.read_to_end(&mut rest);
        assert!(
            read.is_ok(),
            "{engine}: idle connection {i} not closed within 4 s of the drain: {read:?}"
        );
    }
    assert_eq!(l.exit_code(old, Duration::from_secs(10)), 0, "{engine}");
    let stopped = l
        .log
        .wait_for("stopped accepted=", from, Duration::from_secs(5));
    assert!(stopped.contains(" cut=0"), "{engine}: {stopped}");
    if sig == libc::SIGUSR2 {
        assert_eq!(l.stop(), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A port nobody holds now.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn a_start_that_fails_halfway(engine: EngineKind) {
    let addr = free_port();
    let mut config = Config::new(addr, ProtocolKind::Echo, engine);
    config.threads = 3;
    config.test_fault = Some(TestFault::FailStart { worker: 2 });
    let err = ringd::start(config).unwrap_err().to_string();
    assert!(
        err.contains("worker 2") && err.contains("injected by RINGD_TEST_FAULT"),
        "{err}"
    );
    // Workers 0 and 1 had started: they were drained and joined, and released the port.
    let again = ringd::process::listener::bind_workers(addr, 1, &Default::default());
    assert!(again.is_ok(), "{engine}: the port is still held: {again:?}");
}

#[test]
fn a_start_that_fails_halfway_is_one_line_from_the_binary() {
    let out = Command::new(lineage::ringd_bin())
        .args(["--listen", "127.0.0.1:0", "--no-pin", "--threads", "2"])
        .env(TestFault::VAR, "fail-worker=1")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("ringd: error: worker 1 could not start its"),
        "{err}"
    );
    let bad = Command::new(lineage::ringd_bin())
        .env(TestFault::VAR, "explode")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a bad value, like a bad argument"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RINGD_TEST_FAULT=explode"));
}

every_engine! {
    #[test]
    fn a_panicking_worker_drains_the_others_and_exits_non_zero() {
        a_panicking_worker(ENGINE.name());
    }
    #[test]
    fn sigterm_closes_idle_keep_alive_after_the_grace() {
        idle_keep_alive_closes_after_the_grace(ENGINE.name(), libc::SIGTERM);
    }
    #[test]
    fn sigusr2_closes_idle_keep_alive_after_the_grace() {
        idle_keep_alive_closes_after_the_grace(ENGINE.name(), libc::SIGUSR2);
    }
    #[test]
    fn a_start_that_fails_halfway_releases_the_port() {
        a_start_that_fails_halfway(ENGINE);
    }
}
