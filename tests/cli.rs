//! The `ringd` binary as a user runs it: help, bad input, port in use, signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ringd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringd"));
    c.env_remove("RUST_LOG");
    c
}

/// Starts ringd on 127.0.0.1:0 and reads the port it logs.
// Callers reap the child with `wait_exit`.
#[allow(clippy::zombie_processes)]
fn spawn(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = ringd()
        .args(["--listen", "127.0.0.1:0", "--no-pin"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "ringd did not log its address");
        let line = lines.next().expect("ringd exited early").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
            // Keep draining stderr so ringd never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, addr);
        }
    }
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0);
}

fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited by a signal");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringd did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_lists_every_option_with_defaults() {
    let out = ringd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--listen",
        "--protocol",
        "--engine",
        "--threads",
        "--pin",
        "--no-pin",
        "--backlog",
        "--buffer-size",
        "--greeting",
        "--http-body",
        "--shutdown-timeout",
        "--log-level",
        "127.0.0.1:8080",
        "Examples:",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn bad_arguments_fail_without_panic() {
    for args in [
        &["--listen", "not-an-address"][..],
        &["--buffer-size", "lots"],
        &["--engine", "kqueue"],
        &["--threads", "0"],
        &["--shutdown-timeout", "soon"],
    ] {
        let out = ringd().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

#[test]
fn port_in_use_is_one_clear_line() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = ringd().args(["--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.contains("already in use") && last.contains("--listen"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn hello_from_the_binary() {
    let (mut child, addr) = spawn(&["--protocol", "hello", "--threads", "2"]);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"hello?").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "Hello, world!");
    signal(&child, libc::SIGINT);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), 0);
}

#[test]
fn sigterm_under_load_exits_zero() {
    let (mut child, addr) = spawn(&["--protocol", "echo", "--threads", "2"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut done = 0;
                let mut buf = [0u8; 512];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(&[1u8; 512]).is_err() {
                        break;
                    }
                    // An echo is either whole or the connection ended between requests.
                    match s.read_exact(&mut buf) {
                        Ok(()) => {
                            assert_eq!(buf, [1u8; 512]);
                            done += 1;
                        }
                        Err(_) => break,
                    }
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), 0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(total > 0);
}

#[test]
fn every_engine_listens_once_per_worker() {
    for engine in ["uring", "tokio-uring", "epoll"] {
        let (mut child, addr) = spawn(&["--engine", engine, "--threads", "2"]);
        // Each worker's socket is its own listener on the same port (SO_REUSEPORT).
        let listeners = std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[3] == "0A" && f[1].ends_with(&format!(":{:04X}", addr.port()))
            })
            .count();
        assert_eq!(listeners, 2, "{engine}");
        signal(&child, libc::SIGTERM);
        assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), 0);
    }
}
